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

in_force(c) if {
	starts_ok(c)
	ends_ok(c)
}

starts_ok(c) if object.get(c, "start", "") == ""

starts_ok(c) if time.parse_rfc3339_ns(c.start) <= now_ns

ends_ok(c) if object.get(c, "end", "") == ""

ends_ok(c) if now_ns < time.parse_rfc3339_ns(c.end)

covers_purpose(c) if {
	some p in object.get(c, "purposes", [])
	p in purpose_codes
}

# country_matches: the consent names no recipient countries, or names the
# recipient's.
country_matches(c) if count(object.get(c, "recipient_countries", [])) == 0

country_matches(c) if recipient_country in c.recipient_countries

interpretable(c) if count(object.get(c, "uninterpreted", [])) == 0

# live: the indexes of the consents that are active and in force now.
live contains i if {
	some i, c in consents
	c.status == "active"
	in_force(c)
}

# usable: live consents for this purpose whose every provision Consilium
# understands. Sets of indexes are computed once per decision; the rules
# below reuse them.
usable contains i if {
	some i in live
	covers_purpose(consents[i])
	interpretable(consents[i])
}

permitting contains c if {
	some i in usable
	c := consents[i]
	c.decision == "permit"
	country_matches(c)
}

opt_outs contains c if {
	some i in usable
	c := consents[i]
	c.decision == "deny"
	country_matches(c)
}

# blocking: a live consent that Consilium cannot fully interpret may restrict
# sharing in a way the policy cannot see, so it blocks.
blocking contains c if {
	some i in live
	c := consents[i]
	not interpretable(c)
}

consent_granted if {
	count(permitting) > 0
	count(opt_outs) == 0
	count(blocking) == 0
}

denials contains sprintf("no active consent of the patient permits sharing for %q with a recipient in %q", [case_purpose, recipient_country]) if {
	input.action in {"packet.read", "case.release", "case.read"}
	shares_with_specialist
	not consent_granted
}

denials contains msg if {
	input.action in {"packet.read", "case.release", "case.read"}
	shares_with_specialist
	not consent_granted
	some msg in consent_problems
}

denials contains sprintf("the case purpose %q is not one the policy knows", [case_purpose]) if {
	input.action in {"packet.read", "case.release", "case.read"}
	shares_with_specialist
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

notes contains sprintf("consent %q permits sharing for %q", [c.id, case_purpose]) if {
	input.action in {"packet.read", "case.release", "case.read"}
	shares_with_specialist
	some c in permitting
}

# --- Cross-border transfer ----------------------------------------------------

# transfer_key: the name of the legal basis for sending data from the case's
# source country to the recipient's country, if the table has one.
transfer_key := data.consilium.transfers.regimes[data.consilium.transfers.source_regimes[source_country]].destinations[recipient_country]

transfer_basis := data.consilium.transfers.bases[transfer_key]

domestic if {
	source_country != ""
	source_country == recipient_country
}

# organisation_ok: a basis may name the only recipient organisations it
# covers (for example those known to be certified under a framework).
organisation_ok(basis) if not basis.organisations

organisation_ok(basis) if recipient_org in basis.organisations

denials contains sprintf("no transfer basis from %q to %q in the cross-border table", [source_country, recipient_country]) if {
	input.action in {"packet.read", "case.release", "case.read"}
	shares_with_specialist
	not domestic
	not transfer_basis
}

denials contains sprintf("the transfer basis from %q to %q does not cover organisation %q", [source_country, recipient_country, recipient_org]) if {
	input.action in {"packet.read", "case.release", "case.read"}
	shares_with_specialist
	not domestic
	basis := transfer_basis
	not organisation_ok(basis)
}

notes contains sprintf("domestic disclosure within %q", [source_country]) if {
	input.action in {"packet.read", "case.release", "case.read"}
	shares_with_specialist
	domestic
}

notes contains sprintf("transfer from %q to %q: %s", [source_country, recipient_country, transfer_basis.basis]) if {
	input.action in {"packet.read", "case.release", "case.read"}
	shares_with_specialist
	not domestic
}

notes contains sprintf("transfer condition: %s", [cond]) if {
	input.action in {"packet.read", "case.release", "case.read"}
	shares_with_specialist
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

notes contains sprintf("the patient's consent excludes data labelled %s", [label]) if {
	input.action in {"packet.read", "case.release", "case.read"}
	shares_with_specialist
	some label in excluded_labels
}

# expiry_candidates: [ns, RFC 3339] pairs; the grant expires at the earliest.
expiry_candidates contains [time.parse_rfc3339_ns(case_deadline), case_deadline] if case_deadline != ""

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
