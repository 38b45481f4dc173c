# Sharing a patient's data with a specialist: consent, cross-border transfer
# and the obligations (de-identification, exclusions, expiry) that go with an
# allow. See README.md next to this file for the conventions and the legal
# basis of every entry of the cross-border table in consilium/data.json.
package consilium.authz

# shares_with_specialist marks the decisions that disclose patient data to a
# specialist: the release of a packet to one recipient, the pull of the
# packet, and the specialist's view of the case itself.
shares_with_specialist if input.action in {"packet.read", "case.release"}

shares_with_specialist if {
	input.principal.role == "specialist"
	input.action == "case.read"
}

# A share is allowed only when nothing in sharing_denials fires, and its
# allow is explained by sharing_notes. The first condition of these two
# rules lets OPA's rule index skip all of them for every other action.
denials contains msg if {
	input.action in {"packet.read", "case.release", "case.read"}
	shares_with_specialist
	some msg in sharing_denials
}

notes contains msg if {
	input.action in {"packet.read", "case.release", "case.read"}
	shares_with_specialist
	some msg in sharing_notes
}

# recipient_*: the specialist the data goes to. On release the gateway asks
# once per assigned specialist and names it in input.recipient; otherwise it
# is the requesting principal.
default recipient_id := ""

recipient_id := input.recipient.id if input.action == "case.release"

default recipient_country := ""

recipient_country := input.recipient.country if input.action == "case.release"

recipient_country := input.principal.country if not input.action == "case.release"

default recipient_org := ""

recipient_org := input.recipient.org if input.action == "case.release"

recipient_org := principal_org if not input.action == "case.release"

default case_purpose := ""

case_purpose := input.case.purpose

default source_country := ""

source_country := input.case.source_country

default consents := []

consents := input.consents

denials contains sprintf("recipient %q is not assigned to this case", [recipient_id]) if {
	input.action == "case.release"
	not assigned(recipient_id)
}

# --- Consent ------------------------------------------------------------------

# purpose_codes: the consent purposes ("system|code") that cover the case's
# purpose, from data.consilium.purposes.
purpose_codes := data.consilium.purposes[case_purpose]

# in_force: start <= now < end, where an empty or missing start or end does
# not limit. The four combinations are spelled out so that the usual one, a
# period with both ends, is decided by the first body.
in_force(c) if {
	time.parse_rfc3339_ns(c.start) <= now_ns
	now_ns < time.parse_rfc3339_ns(c.end)
}

in_force(c) if {
	object.get(c, "start", "") == ""
	now_ns < time.parse_rfc3339_ns(c.end)
}

in_force(c) if {
	time.parse_rfc3339_ns(c.start) <= now_ns
	object.get(c, "end", "") == ""
}

in_force(c) if {
	object.get(c, "start", "") == ""
	object.get(c, "end", "") == ""
}

covers_purpose(c) if {
	some p in object.get(c, "purposes", [])
	p in purpose_codes
}

# country_matches: the consent names no recipient countries, or names the
# recipient's.
country_matches(c) if count(object.get(c, "recipient_countries", [])) == 0

country_matches(c) if recipient_country in c.recipient_countries

interpretable(c) if count(object.get(c, "uninterpreted", [])) == 0

# usable: a consent that is active and in force now, for this purpose, and
# whose every provision Consilium understands. Each rule below makes one
# pass over the consents, the cheap conditions first.
usable(c) if {
	c.status == "active"
	interpretable(c)
	covers_purpose(c)
	in_force(c)
}

permitting contains c if {
	some c in input.consents
	c.decision == "permit"
	usable(c)
	country_matches(c)
}

opt_outs contains c if {
	some c in input.consents
	c.decision == "deny"
	usable(c)
	country_matches(c)
}

# blocking: a live consent that Consilium cannot fully interpret may restrict
# sharing in a way the policy cannot see, so it blocks.
blocking contains c if {
	some c in input.consents
	c.status == "active"
	not interpretable(c)
	in_force(c)
}

consent_granted if {
	permitting != set()
	opt_outs == set()
	blocking == set()
}

sharing_denials contains sprintf("no active consent of the patient permits sharing for %q with a recipient in %q", [case_purpose, recipient_country]) if {
	not consent_granted
}

sharing_denials contains msg if {
	not consent_granted
	some msg in consent_problems
}

sharing_denials contains sprintf("the case purpose %q is not one the policy knows", [case_purpose]) if {
	not data.consilium.purposes[case_purpose]
}

consent_problems contains "no consent is on record for the patient" if count(consents) == 0

consent_problems contains sprintf("consent %q is %q, not active", [c.id, c.status]) if {
	some c in consents
	c.status != "active"
}

consent_problems contains sprintf("consent %q is not in force at %s (period %q to %q)", [c.id, input.time, object.get(c, "start", ""), object.get(c, "end", "")]) if {
	some c in consents
	not in_force(c)
}

consent_problems contains sprintf("consent %q does not cover the purpose %q", [c.id, case_purpose]) if {
	some c in consents
	not covers_purpose(c)
}

consent_problems contains sprintf("consent %q limits recipients to %v, not %q", [c.id, c.recipient_countries, recipient_country]) if {
	some c in consents
	c.decision == "permit"
	not country_matches(c)
}

consent_problems contains sprintf("consent %q has parts that Consilium cannot interpret (%s)", [c.id, concat(", ", c.uninterpreted)]) if {
	some c in consents
	not interpretable(c)
}

consent_problems contains sprintf("consent %q records the patient's refusal", [c.id]) if {
	some c in opt_outs
}

consent_problems contains sprintf("consent %q neither permits nor denies", [c.id]) if {
	some c in consents
	not c.decision in {"permit", "deny"}
}

sharing_notes contains sprintf("consent %q permits sharing for %q", [c.id, case_purpose]) if {
	some c in permitting
}

# --- Cross-border transfer ----------------------------------------------------

# transfer_basis: the legal basis for sending data from the case's source
# country to the recipient's country, if the table has one.
transfer_basis := data.consilium.transfers.bases[data.consilium.transfers.regimes[data.consilium.transfers.source_regimes[source_country]].destinations[recipient_country]]

domestic if {
	source_country != ""
	source_country == recipient_country
}

sharing_denials contains sprintf("no transfer basis from %q to %q in the cross-border table", [source_country, recipient_country]) if {
	not domestic
	not transfer_basis
}

# A basis may name the only recipient organisations it covers (for example
# those known to be certified under a framework).
sharing_denials contains sprintf("the transfer basis from %q to %q does not cover organisation %q", [source_country, recipient_country, recipient_org]) if {
	not domestic
	transfer_basis.organisations
	not recipient_org in transfer_basis.organisations
}

sharing_notes contains sprintf("domestic disclosure within %q", [source_country]) if domestic

sharing_notes contains sprintf("transfer from %q to %q: %s", [source_country, recipient_country, transfer_basis.basis]) if {
	not domestic
}

sharing_notes contains sprintf("transfer condition: %s", [cond]) if {
	not domestic
	some cond in transfer_basis.conditions
}

# --- Obligations --------------------------------------------------------------

# The data is read key by key: taking a whole subtree of data as a value
# would convert it on every decision.
deid_profile := p if {
	p := data.consilium.deid.profile_by_source_country[source_country]
} else := data.consilium.deid.default_profile

deid_options := o if {
	o := data.consilium.deid.options[deid_profile]
} else := []

excluded_labels contains label if {
	some c in permitting
	some label in object.get(c, "exclude_labels", [])
}

sharing_notes contains sprintf("the patient's consent excludes data labelled %s", [label]) if {
	some label in excluded_labels
}

# expiry_candidates: [ns, RFC 3339] pairs; the grant expires at the earliest.
expiry_candidates contains [deadline_ns, case_deadline] if case_deadline != ""

# A permitting consent with no end never expires the grant; otherwise the
# grant lasts until the latest end among the permitting consents.
expiry_candidates contains max(ends) if {
	input.action in {"packet.read", "case.release", "case.read"}
	shares_with_specialist
	ends := [[time.parse_rfc3339_ns(c.end), c.end] | some c in permitting]
	count(ends) == count(permitting)
	count(ends) > 0
}

expires := min(expiry_candidates)[1] if count(expiry_candidates) > 0

else := ""

obligations := {
	"deid_profile": deid_profile,
	"deid_options": deid_options,
	"exclude_labels": sort(excluded_labels),
	"withhold_burned_in": data.consilium.deid.withhold_burned_in,
	"expires": expires,
} if {
	allow
	input.action in {"packet.read", "case.release", "case.read"}
	shares_with_specialist
}

else := {"expires": expires} if allow

else := {}
