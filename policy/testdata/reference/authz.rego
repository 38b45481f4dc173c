# Package consilium.authz decides every request to the Consilium gateway.
#
# The gateway evaluates data.consilium.authz.decision with one input (see
# policy.Input in Go) and expects {"allow", "reasons", "obligations"}.
# Access is denied by default: a request is allowed only when at least one
# grant rule matches the role and action and no denial rule fires. Every
# grant and denial carries a human-readable reason, so the caller sees why.
#
# Denials are written as "not <requirement>" so that a missing or malformed
# input field denies instead of silently skipping the check.
package consilium.authz

# --- The entrypoint ---------------------------------------------------------

# decision is the document the gateway reads.
decision := {
	"allow": allow,
	"reasons": reasons,
	"obligations": obligations,
}

default allow := false

# allow: some grant matches and nothing denies (deny overrides).
allow if {
	count(grants) > 0
	count(denials) == 0
}

# reasons explain an allow by its grants and notes, a deny by its denials.
reasons := sort(grants | notes) if allow

reasons := sort(denials | no_grant) if not allow

# no_grant explains a deny that no grant rule matched at all.
no_grant contains msg if {
	count(grants) == 0
	resource_type == ""
	msg := sprintf("no rule allows role %q to perform %q", [role, action])
}

no_grant contains msg if {
	count(grants) == 0
	resource_type != ""
	msg := sprintf("no rule allows role %q to perform %q on %s resources", [role, action, resource_type])
}

# --- Input accessors -----------------------------------------------------------
# Defaults keep messages defined on sparse input. Fields are read by
# reference: passing the whole input to a function would copy it on every
# decision.

default role := ""

role := input.principal.role

default principal_id := ""

principal_id := input.principal.id

default principal_org := ""

principal_org := input.principal.org

default action := ""

action := input.action

default resource_org := ""

resource_org := input.resource.org

default resource_type := ""

resource_type := input.resource.type

default resource_id := ""

resource_id := input.resource.id

default case_org := ""

case_org := input.case.org

default case_status := ""

case_status := input.case.status

default case_assigned := []

case_assigned := input.case.assigned

default case_deadline := ""

case_deadline := input.case.deadline

now_ns := time.parse_rfc3339_ns(input.time)

roles := {"hospital", "case-manager", "specialist", "compliance"}

# --- Who is asking ----------------------------------------------------------

denials contains "the request has no authenticated principal" if principal_id == ""

denials contains sprintf("unknown role %q", [role]) if not role in roles

grants contains "every authenticated principal may ask who it is" if input.action == "whoami"

# same_org holds for a non-empty organisation equal to the principal's.
same_org(org) if {
	org != ""
	org == principal_org
}

# --- Hospitals: their own organisation's data and cases only ----------------


grants contains "hospitals may read and write their own organisation's FHIR and DICOM data" if {
	input.principal.role == "hospital"
	input.action in {"fhir.read", "fhir.search", "fhir.write", "dicom.read", "dicom.write"}
}

grants contains "hospitals may read the consents of their own organisation's patients" if {
	input.principal.role == "hospital"
	input.action == "consent.read"
}

denials contains sprintf("organisation %q may not access data owned by organisation %q", [principal_org, resource_org]) if {
	input.principal.role == "hospital"
	input.action in {"fhir.read", "fhir.search", "fhir.write", "dicom.read", "dicom.write", "consent.read"}
	not same_org(resource_org)
}


grants contains "hospitals may open second-opinion cases for their own patients" if {
	input.principal.role == "hospital"
	input.action == "case.create"
}

grants contains "hospitals may follow their own organisation's cases" if {
	input.principal.role == "hospital"
	input.action in {"case.read", "case.list"}
}

grants contains "hospitals may withdraw their own organisation's cases" if {
	input.principal.role == "hospital"
	input.action == "case.cancel"
}

grants contains "hospitals receive the opinions on their own organisation's cases" if {
	input.principal.role == "hospital"
	input.action == "opinion.read"
}

denials contains sprintf("organisation %q may not act on a case of organisation %q", [principal_org, case_org]) if {
	input.principal.role == "hospital"
	input.action in {"case.create", "case.read", "case.cancel", "opinion.read"}
	not same_org(case_org)
}

# --- Case managers: the exchange's doctors run the case workflow -----------

grants contains "case managers may list and read cases" if {
	input.principal.role == "case-manager"
	input.action in {"case.list", "case.read"}
}

grants contains "case managers may assign specialists" if {
	input.principal.role == "case-manager"
	input.action == "case.assign"
}

grants contains "case managers may release packets to assigned specialists" if {
	input.principal.role == "case-manager"
	input.action == "case.release"
}

grants contains "case managers may cancel and close cases" if {
	input.principal.role == "case-manager"
	input.action in {"case.cancel", "case.close"}
}

grants contains "case managers may read opinions" if {
	input.principal.role == "case-manager"
	input.action == "opinion.read"
}

grants contains "case managers may search the specialist directory" if {
	input.principal.role == "case-manager"
	input.action == "specialist.list"
}

assignable_statuses := {"draft", "assigned", "released", "opinion-received"}

open_statuses := {"draft", "assigned", "released", "opinion-received"}

closable_statuses := {"released", "opinion-received"}

denials contains sprintf("specialists can be assigned only to open cases; this case is %q", [case_status]) if {
	input.action == "case.assign"
	not case_status in assignable_statuses
}

denials contains sprintf("only a case with assigned specialists can be released; this case is %q", [case_status]) if {
	input.action == "case.release"
	not case_status in {"assigned", "released", "opinion-received"}
}

denials contains sprintf("the case is %q and can no longer be cancelled", [case_status]) if {
	input.action == "case.cancel"
	not case_status in open_statuses
}

denials contains sprintf("only a released case or one with an opinion can be closed; this case is %q", [case_status]) if {
	input.action == "case.close"
	not case_status in closable_statuses
}

denials contains sprintf("the case deadline %s has passed", [case_deadline]) if {
	input.action == "case.release"
	not deadline_ok
}

# --- Specialists: assigned cases only, after release, until the deadline --


released_statuses := {"released", "opinion-received"}

grants contains "specialists may list the cases assigned to them" if {
	input.principal.role == "specialist"
	input.action == "case.list"
}

grants contains "specialists may read the cases assigned to them" if {
	input.principal.role == "specialist"
	input.action == "case.read"
}

grants contains "specialists may pull the packets of the cases assigned to them" if {
	input.principal.role == "specialist"
	input.action == "packet.read"
}

grants contains "specialists may submit opinions on the cases assigned to them" if {
	input.principal.role == "specialist"
	input.action == "opinion.create"
}

grants contains "specialists may register their own packet recipient" if {
	input.principal.role == "specialist"
	input.action == "principal.recipient.write"
}

denials contains "specialists may register only their own packet recipient" if {
	input.principal.role == "specialist"
	input.action == "principal.recipient.write"
	not own_resource
}

own_resource if {
	principal_id != ""
	resource_id == principal_id
}

denials contains sprintf("specialist %q is not assigned to this case", [principal_id]) if {
	input.principal.role == "specialist"
	input.action in {"case.read", "packet.read", "opinion.create"}
	not assigned(principal_id)
}

denials contains sprintf("the case has not been released to specialists (status %q)", [case_status]) if {
	input.principal.role == "specialist"
	input.action in {"case.read", "packet.read", "opinion.create"}
	not case_status in released_statuses
}

denials contains sprintf("the case deadline %s has passed", [case_deadline]) if {
	input.principal.role == "specialist"
	input.action in {"case.read", "packet.read", "opinion.create"}
	not deadline_ok
}

# assigned holds when id is one of the case's assigned specialists.
assigned(id) if {
	id != ""
	id in case_assigned
}

# deadline_ok: no deadline, or the request comes before it.
deadline_ok if case_deadline == ""

deadline_ok if now_ns < time.parse_rfc3339_ns(case_deadline)

# --- Compliance officers: policies, consents, audit; no clinical content --


grants contains "compliance officers manage policies and read consents and the audit trail" if {
	input.principal.role == "compliance"
	input.action in {
		"policy.read", "policy.write", "policy.activate", "policy.dry-run",
		"consent.read", "audit.read", "audit.verify", "audit.export",
	}
}

grants contains "compliance officers may read Consent resources, and no other FHIR resources" if {
	input.principal.role == "compliance"
	input.action in {"fhir.read", "fhir.search"}
	resource_type == "Consent"
}

# --- Operations -------------------------------------------------------------

grants contains "compliance officers and case managers may read the gateway's metrics" if {
	input.principal.role in {"compliance", "case-manager"}
	input.action == "metrics.read"
}
