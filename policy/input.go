package policy

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"time"
)

// ErrInvalidInput is returned by [Engine.Decide] when the input is malformed
// (unknown action or role, a time that is not RFC 3339, a bad country code).
// It means a bug in the caller, never a deny.
var ErrInvalidInput = errors.New("policy: invalid input")

// Action is what a request wants to do. The set is closed: [Engine.Decide]
// refuses any other value with [ErrInvalidInput].
type Action string

// Actions of the gateway. The route that performs each is given for the
// gateway's wiring.
const (
	// ActionWhoAmI: GET /whoami, the caller's own identity.
	ActionWhoAmI Action = "whoami"
	// ActionMetricsRead: GET /metrics.
	ActionMetricsRead Action = "metrics.read"

	// ActionFHIRRead: GET /fhir/{type}/{id}, /fhir/Patient/{id}/$everything.
	ActionFHIRRead Action = "fhir.read"
	// ActionFHIRSearch: GET /fhir/{type}?…; Resource.Org is the org the
	// search is confined to.
	ActionFHIRSearch Action = "fhir.search"
	// ActionFHIRWrite: PUT /fhir/{type}/{id}, POST /fhir (one decision per
	// entry).
	ActionFHIRWrite Action = "fhir.write"
	// ActionDICOMRead: WADO-RS and QIDO-RS.
	ActionDICOMRead Action = "dicom.read"
	// ActionDICOMWrite: STOW-RS.
	ActionDICOMWrite Action = "dicom.write"

	// ActionCaseCreate: POST /cases.
	ActionCaseCreate Action = "case.create"
	// ActionCaseRead: GET /cases/{id}.
	ActionCaseRead Action = "case.read"
	// ActionCaseList: GET /cases. The decision says whether the principal
	// may list at all; the gateway then shows only the cases a case.read
	// decision allows (hospitals: own organisation; specialists: assigned).
	ActionCaseList Action = "case.list"
	// ActionCaseAssign: POST /cases/{id}/assign.
	ActionCaseAssign Action = "case.assign"
	// ActionCaseRelease: POST /cases/{id}/release. The gateway asks once
	// per assigned specialist, naming it in [Input.Recipient]; the decision
	// carries the obligations for that recipient's packet.
	ActionCaseRelease Action = "case.release"
	// ActionCaseCancel: cancelling a case.
	ActionCaseCancel Action = "case.cancel"
	// ActionCaseClose: closing a case after its opinions.
	ActionCaseClose Action = "case.close"
	// ActionPacketRead: GET /cases/{id}/packet.
	ActionPacketRead Action = "packet.read"
	// ActionOpinionCreate: POST /cases/{id}/opinions.
	ActionOpinionCreate Action = "opinion.create"
	// ActionOpinionRead: GET /cases/{id}/opinions.
	ActionOpinionRead Action = "opinion.read"

	// ActionSpecialistList: GET /specialists.
	ActionSpecialistList Action = "specialist.list"
	// ActionPrincipalRecipientWrite: PUT /principals/{id}/recipient;
	// Resource.ID is the principal id in the path.
	ActionPrincipalRecipientWrite Action = "principal.recipient.write"

	// ActionPolicyRead: GET /policies.
	ActionPolicyRead Action = "policy.read"
	// ActionPolicyWrite: PUT /policies/{version}.
	ActionPolicyWrite Action = "policy.write"
	// ActionPolicyActivate: POST /policies/{version}/activate.
	ActionPolicyActivate Action = "policy.activate"
	// ActionPolicyDryRun: POST /policies/{version}/dry-run.
	ActionPolicyDryRun Action = "policy.dry-run"

	// ActionConsentRead: reading consents outside the FHIR API.
	ActionConsentRead Action = "consent.read"
	// ActionAuditRead: GET /audit.
	ActionAuditRead Action = "audit.read"
	// ActionAuditVerify: GET /audit/verify.
	ActionAuditVerify Action = "audit.verify"
	// ActionAuditExport: GET /audit/export.
	ActionAuditExport Action = "audit.export"
)

// Valid reports whether a is one of the actions above.
func (a Action) Valid() bool {
	switch a {
	case ActionWhoAmI, ActionMetricsRead,
		ActionFHIRRead, ActionFHIRSearch, ActionFHIRWrite, ActionDICOMRead, ActionDICOMWrite,
		ActionCaseCreate, ActionCaseRead, ActionCaseList, ActionCaseAssign, ActionCaseRelease,
		ActionCaseCancel, ActionCaseClose, ActionPacketRead, ActionOpinionCreate, ActionOpinionRead,
		ActionSpecialistList, ActionPrincipalRecipientWrite,
		ActionPolicyRead, ActionPolicyWrite, ActionPolicyActivate, ActionPolicyDryRun,
		ActionConsentRead, ActionAuditRead, ActionAuditVerify, ActionAuditExport:
		return true
	}
	return false
}

// Actions returns every action, in a stable order.
func Actions() []Action {
	return []Action{
		ActionWhoAmI, ActionMetricsRead,
		ActionFHIRRead, ActionFHIRSearch, ActionFHIRWrite, ActionDICOMRead, ActionDICOMWrite,
		ActionCaseCreate, ActionCaseRead, ActionCaseList, ActionCaseAssign, ActionCaseRelease,
		ActionCaseCancel, ActionCaseClose, ActionPacketRead, ActionOpinionCreate, ActionOpinionRead,
		ActionSpecialistList, ActionPrincipalRecipientWrite,
		ActionPolicyRead, ActionPolicyWrite, ActionPolicyActivate, ActionPolicyDryRun,
		ActionConsentRead, ActionAuditRead, ActionAuditVerify, ActionAuditExport,
	}
}

// Roles a principal can have (the OU of its client certificate).
const (
	RoleHospital    = "hospital"
	RoleCaseManager = "case-manager"
	RoleSpecialist  = "specialist"
	RoleCompliance  = "compliance"
)

// Case statuses, as the case workflow records them.
const (
	CaseDraft           = "draft"
	CaseAssigned        = "assigned"
	CaseReleased        = "released"
	CaseOpinionReceived = "opinion-received"
	CaseClosed          = "closed"
	CaseCancelled       = "cancelled"
)

// PurposeSecondOpinion is the purpose of a second-opinion case
// ([Case.Purpose]). The default bundle accepts consents whose purposes
// include v3-ActReason TREAT or [PurposeCodeSystem] second-opinion for it.
const PurposeSecondOpinion = "second-opinion"

// Input is everything a decision may depend on. The gateway fills one per
// request from the verified client certificate, the route and the stored
// records; the policy sees it as `input`. Every field is always present in
// the JSON (empty when it does not apply), so that a rule never skips a check
// because a field is missing.
type Input struct {
	// Time is when the request happens; the engine's clock when zero.
	// Encoded in UTC as RFC 3339 with nanoseconds.
	Time time.Time `json:"time"`
	// Principal is the caller, from its client certificate.
	Principal Principal `json:"principal"`
	// Action is what the caller wants to do.
	Action Action `json:"action"`
	// Resource is the data the action touches, if any.
	Resource Resource `json:"resource"`
	// Case is the case the action concerns, if any (zero otherwise).
	Case Case `json:"case"`
	// Recipient is the specialist that data goes to on case.release (one
	// decision per recipient). The policy takes the principal itself as
	// recipient for the specialist's own actions.
	Recipient Recipient `json:"recipient"`
	// Consents are the Consent resources of the patient concerned, as
	// [ConsentFromFHIR] normalises them; needed for every action that
	// shares data with a specialist (case.release, packet.read, a
	// specialist's case.read). The gateway must pass only the consents of
	// that patient, including inactive ones (they explain a deny).
	Consents []Consent `json:"consents"`
}

// Principal is the authenticated caller.
type Principal struct {
	// ID is the principal id (certificate CN).
	ID string `json:"id"`
	// Org is the principal's organisation (certificate O).
	Org string `json:"org"`
	// Role is one of hospital, case-manager, specialist, compliance
	// (certificate OU).
	Role string `json:"role"`
	// Country is the ISO 3166-1 alpha-2 code where the principal is
	// (certificate C), upper case.
	Country string `json:"country"`
	// Specialty is a specialist's specialty code (SAN
	// urn:consilium:specialty:<code>), empty otherwise.
	Specialty string `json:"specialty"`
	// Languages are the principal's languages (BCP 47), from the directory.
	Languages []string `json:"languages"`
}

// Resource is the data an action touches.
type Resource struct {
	// Kind is what sort of thing it is: "fhir", "dicom", "case", "packet",
	// "opinion", "principal", "policy", "audit".
	Kind string `json:"kind"`
	// Org is the organisation that owns the data: for an existing record
	// its owner, for a new one the writer's organisation, for a search the
	// organisation it is confined to.
	Org string `json:"org"`
	// Type is the FHIR resource type when Kind is "fhir".
	Type string `json:"type"`
	// ID is the resource id (FHIR id, study UID, case id, principal id,
	// policy version).
	ID string `json:"id"`
	// Labels are the codes of the resource's meta.security labels (PSY,
	// HIV, ETH, SEX, R, …).
	Labels []string `json:"labels"`
	// Patient is the pseudonymous key of the patient the data is about;
	// never a real identifier.
	Patient string `json:"patient"`
}

// Case is the case an action concerns.
type Case struct {
	// ID is the case id.
	ID string `json:"id"`
	// Org is the organisation (hospital) that opened the case.
	Org string `json:"org"`
	// Status is draft, assigned, released, opinion-received, closed or
	// cancelled.
	Status string `json:"status"`
	// Specialty is the specialty asked for.
	Specialty string `json:"specialty"`
	// Assigned are the ids of the specialists assigned to the case.
	Assigned []string `json:"assigned"`
	// Deadline is when specialists' access ends (RFC 3339); empty for none.
	Deadline string `json:"deadline"`
	// Purpose is why the data is shared; "second-opinion" for cases.
	Purpose string `json:"purpose"`
	// SourceCountry is the ISO 3166-1 alpha-2 code of the opening
	// hospital's country: the origin of any transfer.
	SourceCountry string `json:"source_country"`
}

// Recipient is the specialist that a release sends a packet to.
type Recipient struct {
	// ID is the specialist's principal id.
	ID string `json:"id"`
	// Org is the specialist's organisation.
	Org string `json:"org"`
	// Country is the ISO 3166-1 alpha-2 code of the specialist's country.
	Country string `json:"country"`
}

// countryCode matches an ISO 3166-1 alpha-2 code (read-only).
var countryCode = regexp.MustCompile(`^[A-Z]{2}$`)

func knownRole(r string) bool {
	switch r {
	case RoleHospital, RoleCaseManager, RoleSpecialist, RoleCompliance:
		return true
	}
	return false
}

// normalize returns a copy of in that is ready to encode: time set and in
// UTC, nil slices empty, set-like lists sorted (so equal inputs have equal
// digests), and checks the fields whose format the policy relies on.
func (in Input) normalize(now func() time.Time) (Input, error) {
	out := in
	if out.Time.IsZero() {
		out.Time = now()
	}
	out.Time = out.Time.UTC()
	if !out.Action.Valid() {
		return out, fmt.Errorf("%w: unknown action %q", ErrInvalidInput, out.Action)
	}
	if out.Principal.Role != "" && !knownRole(out.Principal.Role) {
		return out, fmt.Errorf("%w: unknown role %q", ErrInvalidInput, out.Principal.Role)
	}
	for _, c := range [...]struct{ name, code string }{
		{"principal.country", out.Principal.Country},
		{"recipient.country", out.Recipient.Country},
		{"case.source_country", out.Case.SourceCountry},
	} {
		if c.code != "" && !countryCode.MatchString(c.code) {
			return out, fmt.Errorf("%w: %s %q is not an upper-case ISO 3166-1 alpha-2 code", ErrInvalidInput, c.name, c.code)
		}
	}
	if out.Case.Deadline != "" {
		if _, err := time.Parse(time.RFC3339Nano, out.Case.Deadline); err != nil {
			return out, fmt.Errorf("%w: case.deadline is not RFC 3339", ErrInvalidInput)
		}
	}
	out.Principal.Languages = sortedCopy(out.Principal.Languages)
	out.Resource.Labels = sortedCopy(out.Resource.Labels)
	out.Case.Assigned = sortedCopy(out.Case.Assigned)
	cs := make([]Consent, len(out.Consents))
	for i, c := range out.Consents {
		n, err := c.normalize()
		if err != nil {
			return out, fmt.Errorf("%w: consent %d: %v", ErrInvalidInput, i, err)
		}
		cs[i] = n
	}
	slices.SortStableFunc(cs, func(a, b Consent) int {
		if a.ID < b.ID {
			return -1
		}
		if a.ID > b.ID {
			return 1
		}
		return 0
	})
	out.Consents = cs
	return out, nil
}

// canonicalJSON encodes a normalised input: encoding/json with the fields in
// declaration order, no whitespace, no HTML escaping. The input digest of a
// [Decision] is the SHA-256 of these bytes.
func (in Input) canonicalJSON() ([]byte, error) {
	b, err := marshalNoEscape(in)
	if err != nil {
		return nil, fmt.Errorf("encode policy input: %w", err)
	}
	return b, nil
}

func sortedCopy(s []string) []string {
	out := make([]string, len(s))
	copy(out, s)
	slices.Sort(out)
	return out
}

// marshalNoEscape is json.Marshal without HTML escaping and without the
// trailing newline an Encoder adds.
func marshalNoEscape(v any) ([]byte, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	return bytes.TrimSuffix(buf.Bytes(), []byte("\n")), nil
}
