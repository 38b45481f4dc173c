# Tests of the role rules in authz.rego: allow and deny for every role.
package consilium.authz_test

# --- everyone -----------------------------------------------------------------

test_whoami_for_every_role if {
	every p in [hospital, manager, specialist_us, compliance] {
		allows_with(req(p, "whoami", {}), "every authenticated principal may ask who it is")
	}
}

test_no_principal_denied if {
	denies_with(req({"role": "hospital"}, "whoami", {}), "the request has no authenticated principal")
}

test_unknown_role_denied if {
	denies_with(req(object.union(hospital, {"role": "admin"}), "whoami", {}), `unknown role "admin"`)
}

test_empty_input_denied if {
	d := data.consilium.authz.decision with input as {}
	not d.allow
	`no rule allows role "" to perform ""` in d.reasons
	d.obligations == {}
}

test_unknown_action_denied if {
	denies_with(req(hospital, "root.shell", {}), `no rule allows role "hospital" to perform "root.shell"`)
}

# --- hospitals ----------------------------------------------------------------

own_observation := {"resource": {"kind": "fhir", "org": "st-mary", "type": "Observation", "id": "o1", "labels": [], "patient": "p1"}}

other_observation := {"resource": {"kind": "fhir", "org": "north-general", "type": "Observation", "id": "o2", "labels": [], "patient": "p2"}}

test_hospital_own_data_allowed if {
	every a in ["fhir.read", "fhir.search", "fhir.write", "dicom.read", "dicom.write"] {
		allows_with(req(hospital, a, own_observation), "hospitals may read and write their own organisation's FHIR and DICOM data")
	}
}

test_hospital_other_org_data_denied if {
	every a in ["fhir.read", "fhir.search", "fhir.write", "dicom.read", "dicom.write"] {
		denies_with(req(hospital, a, other_observation), `organisation "st-mary" may not access data owned by organisation "north-general"`)
	}
}

test_hospital_data_without_owner_denied if {
	denies_with(req(hospital, "fhir.read", {}), `organisation "st-mary" may not access data owned by organisation ""`)
}

test_hospital_consents_own_org_only if {
	allows_with(req(hospital, "consent.read", own_observation), "hospitals may read the consents of their own organisation's patients")
	denies(req(hospital, "consent.read", other_observation))
}

test_hospital_case_lifecycle_own_org if {
	allows_with(req(hospital, "case.create", {"case": case_for("draft")}), "hospitals may open second-opinion cases for their own patients")
	allows_with(req(hospital, "case.read", {"case": released}), "hospitals may follow their own organisation's cases")
	allows(req(hospital, "case.list", {}))
	allows_with(req(hospital, "case.cancel", {"case": case_for("assigned")}), "hospitals may withdraw their own organisation's cases")
	allows_with(req(hospital, "opinion.read", {"case": case_for("opinion-received")}), "hospitals receive the opinions on their own organisation's cases")
}

test_hospital_other_org_case_denied if {
	every a in ["case.create", "case.read", "case.cancel", "opinion.read"] {
		denies_with(req(other_hospital, a, {"case": released}), `organisation "north-general" may not act on a case of organisation "st-mary"`)
	}
}

test_hospital_cannot_run_the_exchange if {
	every a in ["case.assign", "case.release", "case.close", "packet.read", "specialist.list", "policy.write", "audit.read", "metrics.read"] {
		denies(req(hospital, a, {"case": released}))
	}
}

# --- case managers --------------------------------------------------------------

test_manager_workflow_allowed if {
	allows_with(req(manager, "case.list", {}), "case managers may list and read cases")
	allows_with(req(manager, "case.read", {"case": released}), "case managers may list and read cases")
	allows_with(req(manager, "case.assign", {"case": case_for("draft")}), "case managers may assign specialists")
	allows(req(manager, "case.assign", {"case": case_for("assigned")}))
	allows_with(req(manager, "case.cancel", {"case": case_for("draft")}), "case managers may cancel and close cases")
	allows_with(req(manager, "case.close", {"case": case_for("opinion-received")}), "case managers may cancel and close cases")
	allows(req(manager, "case.close", {"case": released}))
	allows_with(req(manager, "opinion.read", {"case": case_for("opinion-received")}), "case managers may read opinions")
	allows_with(req(manager, "specialist.list", {}), "case managers may search the specialist directory")
	allows_with(req(manager, "metrics.read", {}), "compliance officers and case managers may read the gateway's metrics")
}

test_manager_assign_open_cases_only if {
	# (Re)assigning after a release: removed specialists lose access at
	# once, added ones wait for the next release.
	allows(req(manager, "case.assign", {"case": released}))
	allows(req(manager, "case.assign", {"case": case_for("opinion-received")}))
	denies_with(req(manager, "case.assign", {"case": case_for("closed")}), `specialists can be assigned only to open cases; this case is "closed"`)
}

test_manager_cancel_only_open_cases if {
	denies_with(req(manager, "case.cancel", {"case": case_for("closed")}), `the case is "closed" and can no longer be cancelled`)
	denies(req(hospital, "case.cancel", {"case": case_for("cancelled")}))
}

test_manager_close_only_after_release if {
	denies_with(req(manager, "case.close", {"case": case_for("assigned")}), `only a released case or one with an opinion can be closed; this case is "assigned"`)
}

test_manager_no_clinical_reads if {
	every a in ["fhir.read", "dicom.read", "packet.read", "policy.write", "audit.read"] {
		denies(req(manager, a, own_observation))
	}
}

release_to(who, cs) := req(manager, "case.release", {
	"case": case_for("assigned"),
	"recipient": {"id": who.id, "org": who.org, "country": who.country},
	"consents": cs,
})

test_manager_release_to_assigned_specialist if {
	d := decide(release_to(specialist_us, [consent]))
	d.allow
	"case managers may release packets to assigned specialists" in d.reasons
	d.obligations.deid_profile == "shifted"
}

test_manager_release_only_assigned_cases if {
	# Releasing again reaches specialists assigned after the first release.
	allows(object.union(release_to(specialist_us, [consent]), {"case": released}))
	inp := object.union(release_to(specialist_us, [consent]), {"case": case_for("draft")})
	denies_with(inp, `only a case with assigned specialists can be released; this case is "draft"`)
}

test_manager_release_only_to_assigned_recipient if {
	stranger := object.union(specialist_us, {"id": "dr-stranger"})
	denies_with(release_to(stranger, [consent]), `recipient "dr-stranger" is not assigned to this case`)
}

test_manager_release_needs_consent if {
	denies_with(release_to(specialist_es, []), "no consent is on record for the patient")
}

test_manager_release_after_deadline_denied if {
	inp := object.union(release_to(specialist_us, [consent]), {"time": "2025-07-01T00:00:00Z"})
	denies_with(inp, "the case deadline 2025-07-01T00:00:00Z has passed")
}

# --- specialists ----------------------------------------------------------------

test_specialist_assigned_released_allowed if {
	allows_with(req(specialist_us, "case.list", {}), "specialists may list the cases assigned to them")
	allows_with(req(specialist_us, "case.read", {"case": released, "consents": [consent]}), "specialists may read the cases assigned to them")
	allows_with(share(specialist_us, [consent]), "specialists may pull the packets of the cases assigned to them")
	allows_with(req(specialist_es, "opinion.create", {"case": released}), "specialists may submit opinions on the cases assigned to them")
	allows(req(specialist_es, "opinion.create", {"case": case_for("opinion-received")}))
}

test_specialist_opinion_expires_at_deadline if {
	d := decide(req(specialist_es, "opinion.create", {"case": released}))
	d.obligations == {"expires": "2025-07-01T00:00:00Z"}
}

test_specialist_not_assigned_denied if {
	other := object.union(specialist_us, {"id": "dr-other"})
	every a in ["case.read", "packet.read", "opinion.create"] {
		denies_with(req(other, a, {"case": released, "consents": [consent]}), `specialist "dr-other" is not assigned to this case`)
	}
}

test_specialist_before_release_denied if {
	every s in ["draft", "assigned", "closed", "cancelled"] {
		denies_with(req(specialist_us, "packet.read", {"case": case_for(s), "consents": [consent]}), sprintf("the case has not been released to specialists (status %q)", [s]))
	}
}

test_specialist_after_deadline_denied if {
	every a in ["case.read", "packet.read", "opinion.create"] {
		late := req(specialist_us, a, {"case": released, "consents": [consent], "time": "2025-07-02T00:00:00Z"})
		denies_with(late, "the case deadline 2025-07-01T00:00:00Z has passed")
	}
}

test_specialist_bad_deadline_fails_closed if {
	garbled := object.union(released, {"deadline": "next tuesday"})
	denies_with(req(specialist_us, "packet.read", {"case": garbled, "consents": [consent]}), "the case deadline next tuesday has passed")
}

test_specialist_missing_time_fails_closed if {
	inp := json.remove(share(specialist_us, [consent]), ["time"])
	denies(inp)
}

test_specialist_no_deadline_allowed if {
	open := json.remove(released, ["deadline"])
	d := decide(req(specialist_us, "packet.read", {"case": open, "consents": [consent]}))
	d.allow
	d.obligations.expires == "2026-01-01T00:00:00Z"
}

test_specialist_recipient_registration_own_only if {
	allows_with(req(specialist_us, "principal.recipient.write", {"resource": {"kind": "principal", "id": "dr-us"}}), "specialists may register their own packet recipient")
	denies_with(req(specialist_us, "principal.recipient.write", {"resource": {"kind": "principal", "id": "dr-es"}}), "specialists may register only their own packet recipient")
}

test_specialist_no_other_access if {
	every a in ["fhir.read", "dicom.read", "case.assign", "case.release", "opinion.read", "specialist.list", "policy.read", "audit.read", "consent.read"] {
		denies(req(specialist_us, a, {"case": released, "consents": [consent]}))
	}
}

# --- compliance -----------------------------------------------------------------

test_compliance_allowed if {
	every a in ["policy.read", "policy.write", "policy.activate", "policy.dry-run", "consent.read", "audit.read", "audit.verify", "audit.export"] {
		allows_with(req(compliance, a, {}), "compliance officers manage policies and read consents and the audit trail")
	}
	allows_with(req(compliance, "metrics.read", {}), "compliance officers and case managers may read the gateway's metrics")
}

test_compliance_reads_consent_resources if {
	consent_resource := {"resource": {"kind": "fhir", "org": "north-general", "type": "Consent", "id": "c1", "labels": [], "patient": "p9"}}
	every a in ["fhir.read", "fhir.search"] {
		allows_with(req(compliance, a, consent_resource), "compliance officers may read Consent resources, and no other FHIR resources")
	}
}

test_compliance_no_clinical_content if {
	denies_with(req(compliance, "fhir.read", own_observation), `no rule allows role "compliance" to perform "fhir.read" on Observation resources`)
	every a in ["dicom.read", "case.read", "packet.read", "opinion.read", "fhir.write"] {
		denies(req(compliance, a, {"case": released}))
	}
}

# Sparse inputs (fields missing, not just empty) still deny, with reasons.
test_sparse_inputs_deny_with_reasons if {
	orgless := {"id": "ehr-x", "role": "hospital"}
	no_resource := json.remove(req(orgless, "fhir.read", {}), ["resource"])
	denies_with(no_resource, `organisation "" may not access data owned by organisation ""`)
	no_case := json.remove(req(hospital, "case.read", {}), ["case"])
	denies_with(no_case, `organisation "st-mary" may not act on a case of organisation ""`)
	no_target := json.remove(req(specialist_us, "principal.recipient.write", {}), ["resource"])
	denies_with(no_target, "specialists may register only their own packet recipient")
}

test_specialist_without_case_denied if {
	no_case := json.remove(req(specialist_us, "packet.read", {"consents": [consent]}), ["case"])
	denies_with(no_case, `the case has not been released to specialists (status "")`)
	denies_with(no_case, `specialist "dr-us" is not assigned to this case`)
}

test_release_without_recipient_denied if {
	no_recipient := json.remove(release_to(specialist_us, [consent]), ["recipient"])
	denies_with(no_recipient, `recipient "" is not assigned to this case`)
	denies_with(no_recipient, `no transfer basis from "GB" to "" in the cross-border table`)
}
