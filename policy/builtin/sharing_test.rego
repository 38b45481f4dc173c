# Tests of sharing.rego: every consent condition, the cross-border table and
# the obligations of an allowed share.
package consilium.authz_test

# --- the demo journey: a GB hospital's case goes to the US and to Spain ------

test_demo_journey_gb_to_us_and_es if {
	us := decide(share(specialist_us, [consent]))
	us.allow
	`consent "consent-1" permits sharing for "second-opinion"` in us.reasons
	some r in us.reasons
	startswith(r, `transfer from "GB" to "US": UK GDPR Art. 45 and DPA 2018 s.17A: The Data Protection (Adequacy) (United States of America) Regulations 2023`)
	some c in us.reasons
	startswith(c, "transfer condition: covers only recipient organisations certified under the EU-US Data Privacy Framework")

	es := decide(share(specialist_es, [consent]))
	es.allow
	some e in es.reasons
	startswith(e, `transfer from "GB" to "ES": UK GDPR Art. 45 and DPA 2018 s.17A: adequacy regulations of DPA 2018 Sch. 21 para. 4`)
}

test_share_obligations if {
	d := decide(share(specialist_us, [consent]))
	d.obligations == {
		"deid_profile": "shifted",
		"deid_options": ["retain-long-modified-dates", "clean-descriptors", "clean-graphics", "clean-structured-content"],
		"exclude_labels": [],
		"withhold_burned_in": true,
		"expires": "2025-07-01T00:00:00Z",
	}
}

test_us_source_uses_safe_harbor if {
	us_case := object.union(released, {"source_country": "US"})
	d := decide(req(specialist_us, "packet.read", {"case": us_case, "consents": [consent]}))
	d.allow
	`domestic disclosure within "US"` in d.reasons
	d.obligations.deid_profile == "safe-harbor"
	d.obligations.deid_options == ["clean-descriptors", "clean-graphics", "clean-structured-content"]
}

# --- consent conditions ---------------------------------------------------------

test_no_consent_denied if {
	denies_with(share(specialist_us, []), "no consent is on record for the patient")
	denies_with(share(specialist_us, []), `no active consent of the patient permits sharing for "second-opinion" with a recipient in "US"`)
}

test_expired_consent_denied if {
	expired := object.union(consent, {"end": "2025-05-01T00:00:00Z"})
	denies_with(share(specialist_us, [expired]), `consent "consent-1" is not in force at 2025-06-01T12:00:00Z (period "2025-01-01T00:00:00Z" to "2025-05-01T00:00:00Z")`)
}

test_future_consent_denied if {
	future := object.union(consent, {"start": "2025-09-01T00:00:00Z"})
	denies(share(specialist_us, [future]))
}

test_open_ended_consent_allowed if {
	open := object.union(consent, {"start": "", "end": ""})
	d := decide(share(specialist_us, [open]))
	d.allow
	d.obligations.expires == "2025-07-01T00:00:00Z"
}

test_consent_open_at_one_end if {
	no_start := object.union(consent, {"start": ""})
	allows(share(specialist_us, [no_start]))
	allows(share(specialist_us, [json.remove(consent, ["start"])]))
	denies(share(specialist_us, [object.union(no_start, {"end": "2025-05-01T00:00:00Z"})]))
	no_end := object.union(consent, {"end": ""})
	allows(share(specialist_us, [no_end]))
	allows(share(specialist_us, [json.remove(consent, ["end"])]))
	denies(share(specialist_us, [object.union(no_end, {"start": "2025-09-01T00:00:00Z"})]))
}

test_consent_end_before_deadline_sets_expiry if {
	short := object.union(consent, {"end": "2025-06-15T00:00:00Z"})
	d := decide(share(specialist_us, [short]))
	d.allow
	d.obligations.expires == "2025-06-15T00:00:00Z"
}

test_latest_consent_end_counts if {
	short := object.union(consent, {"id": "consent-short", "end": "2025-06-10T00:00:00Z"})
	longer := object.union(consent, {"id": "consent-longer", "end": "2025-06-20T00:00:00Z"})
	decide(share(specialist_us, [short, longer])).obligations.expires == "2025-06-20T00:00:00Z"
}

test_wrong_purpose_denied if {
	research := object.union(consent, {"purposes": ["http://terminology.hl7.org/CodeSystem/v3-ActReason|HRESCH"]})
	denies_with(share(specialist_us, [research]), `consent "consent-1" does not cover the purpose "second-opinion"`)
}

test_consilium_purpose_code_allowed if {
	allows(share(specialist_us, [object.union(consent, {"purposes": [second_opinion]})]))
}

test_purpose_code_needs_its_system if {
	denies(share(specialist_us, [object.union(consent, {"purposes": ["|TREAT"]})]))
}

test_unknown_case_purpose_denied if {
	research_case := object.union(released, {"purpose": "research"})
	denies_with(req(specialist_us, "packet.read", {"case": research_case, "consents": [consent]}), `the case purpose "research" is not one the policy knows`)
}

test_revoked_consent_denied if {
	every status in ["inactive", "rejected", "entered-in-error", "draft", "proposed"] {
		denies_with(share(specialist_us, [object.union(consent, {"status": status})]), sprintf("consent %q is %q, not active", ["consent-1", status]))
	}
}

test_revocation_beats_older_permit if {
	revoked := object.union(consent, {"id": "consent-2", "status": "inactive"})
	allows(share(specialist_us, [consent, revoked]))
	opt_out := object.union(consent, {"id": "consent-3", "decision": "deny"})
	denies_with(share(specialist_us, [consent, opt_out]), `consent "consent-3" records the patient's refusal`)
}

test_opt_out_limited_to_other_countries_does_not_apply if {
	opt_out_cn := object.union(consent, {"id": "consent-3", "decision": "deny", "recipient_countries": ["CN"]})
	allows(share(specialist_us, [consent, opt_out_cn]))
}

test_consent_without_decision_denied if {
	denies_with(share(specialist_us, [object.union(consent, {"decision": ""})]), `consent "consent-1" neither permits nor denies`)
}

test_uninterpretable_consent_denied if {
	odd := object.union(consent, {"uninterpreted": ["provision.actor"]})
	denies_with(share(specialist_us, [odd]), `consent "consent-1" has parts that Consilium cannot interpret (provision.actor)`)
}

test_uninterpretable_consent_blocks_others if {
	odd := object.union(consent, {"id": "consent-new", "uninterpreted": ["provision.provision[0]: deny without securityLabel"]})
	denies(share(specialist_us, [consent, odd]))
	expired_odd := object.union(odd, {"end": "2025-02-01T00:00:00Z"})
	allows(share(specialist_us, [consent, expired_odd]))
}

test_consent_country_not_allowed if {
	eu_only := object.union(consent, {"recipient_countries": ["ES", "FR"]})
	denies_with(share(specialist_us, [eu_only]), `consent "consent-1" limits recipients to ["ES", "FR"], not "US"`)
	allows(share(specialist_es, [eu_only]))
}

test_consent_problems_only_when_denied if {
	research := object.union(consent, {"id": "consent-old", "purposes": []})
	d := decide(share(specialist_us, [consent, research]))
	d.allow
	not `consent "consent-old" does not cover the purpose "second-opinion"` in d.reasons
}

test_sensitive_labels_become_obligations if {
	restricted := object.union(consent, {"exclude_labels": ["PSY", "HIV"]})
	d := decide(share(specialist_us, [restricted]))
	d.allow
	d.obligations.exclude_labels == ["HIV", "PSY"]
	"the patient's consent excludes data labelled PSY" in d.reasons
}

test_specialist_case_read_needs_consent if {
	denies_with(req(specialist_us, "case.read", {"case": released, "consents": []}), "no consent is on record for the patient")
}

# --- the cross-border table -------------------------------------------------------

test_country_not_in_table_denied if {
	denies_with(share(specialist_cn, [consent]), `no transfer basis from "GB" to "CN" in the cross-border table`)
}

test_unknown_source_country_denied if {
	jp_case := object.union(released, {"source_country": "JP"})
	denies_with(req(specialist_us, "packet.read", {"case": jp_case, "consents": [consent]}), `no transfer basis from "JP" to "US" in the cross-border table`)
}

test_missing_source_country_denied if {
	no_source := json.remove(released, ["source_country"])
	denies_with(req(specialist_us, "packet.read", {"case": no_source, "consents": [consent]}), `no transfer basis from "" to "US" in the cross-border table`)
}

test_eu_source_rules if {
	fr_case := object.union(released, {"source_country": "FR"})
	allows(req(specialist_es, "packet.read", {"case": fr_case, "consents": [consent]}))
	allows(req(specialist_us, "packet.read", {"case": fr_case, "consents": [consent]}))
	denies(req(specialist_cn, "packet.read", {"case": fr_case, "consents": [consent]}))
}

test_organisation_list_enforced if {
	only_certified := ["certified-org"]
	denies_with(share(specialist_us, [consent]), `the transfer basis from "GB" to "US" does not cover organisation "boston-onc"`) with data.consilium.transfers.bases["uk-us-data-bridge"].organisations as only_certified
	allows(share(object.union(specialist_us, {"org": "certified-org"}), [consent])) with data.consilium.transfers.bases["uk-us-data-bridge"].organisations as only_certified
}

test_table_is_consistent if {
	t := data.consilium.transfers
	every _, regime in t.source_regimes {
		t.regimes[regime]
	}
	every _, r in t.regimes {
		every _, key in r.destinations {
			t.bases[key].basis != ""
		}
	}
}

test_uk_table_covers_its_adequacy_list if {
	uk := data.consilium.transfers.regimes["uk-gdpr"].destinations
	every c in ["AD", "AR", "CA", "FO", "GG", "IL", "IM", "JP", "JE", "NZ", "CH", "UY", "KR", "US", "GI", "ES", "IE", "NO", "IS", "LI"] {
		uk[c]
	}
	not uk.CN
	not uk.IN
}

test_eu_table_covers_its_adequacy_list if {
	eu := data.consilium.transfers.regimes["eu-gdpr"].destinations
	every c in ["AD", "AR", "CA", "FO", "GG", "IL", "IM", "JP", "JE", "NZ", "KR", "CH", "GB", "UY", "US", "NO", "IS", "LI", "DE"] {
		eu[c]
	}
	not eu.GI
	not eu.CN
	count({c | data.consilium.transfers.source_regimes[c] == "eu-gdpr"}) == 30
}

test_profile_without_options if {
	d := decide(share(specialist_us, [consent])) with data.consilium.deid.options as {}
	d.allow
	d.obligations.deid_options == []
}

test_missing_consents_field_denied if {
	denies_with(json.remove(share(specialist_us, []), ["consents"]), "no consent is on record for the patient")
}

test_release_organisation_list_enforced if {
	only_certified := ["certified-org"]
	denies_with(release_to(specialist_us, [consent]), `the transfer basis from "GB" to "US" does not cover organisation "boston-onc"`) with data.consilium.transfers.bases["uk-us-data-bridge"].organisations as only_certified
	orgless := json.remove(release_to(specialist_us, [consent]), ["recipient/org"])
	denies_with(orgless, `the transfer basis from "GB" to "US" does not cover organisation ""`) with data.consilium.transfers.bases["uk-us-data-bridge"].organisations as only_certified
}
