package audit

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"iter"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// Code systems used by the FHIR export. The Consilium ones are URNs,
// since they name things only this gateway issues.
const (
	systemAuditEventType  = "http://terminology.hl7.org/CodeSystem/audit-event-type"
	systemRestful         = "http://hl7.org/fhir/restful-interaction"
	systemParticipation   = "http://terminology.hl7.org/CodeSystem/v3-ParticipationType"
	systemDCM             = "http://dicom.nema.org/resources/ontology/DCM"
	systemSourceType      = "http://terminology.hl7.org/CodeSystem/security-source-type"
	systemEntityType      = "http://terminology.hl7.org/CodeSystem/audit-entity-type"
	systemObjectRole      = "http://terminology.hl7.org/CodeSystem/object-role"
	systemBALPEntityType  = "https://profiles.ihe.net/ITI/BALP/CodeSystem/BasicAuditEntityType"
	systemAction          = "urn:consilium:audit-action"
	systemRole            = "urn:consilium:role"
	systemPrincipal       = "urn:consilium:principal"
	systemCase            = "urn:consilium:case"
	systemPatient         = "urn:consilium:patient-pseudonym"
	systemStudy           = "urn:consilium:study"
	systemResource        = "urn:consilium:resource"
	systemPolicy          = "urn:consilium:policy"
	systemPolicyDigest    = "urn:consilium:policy-input-digest"
	systemAuditEntry      = "urn:consilium:audit-entry"
	fhirInstant           = "2006-01-02T15:04:05.000000Z07:00"
	fhirBundleContentType = "application/fhir+json"
)

// FHIRContentType is the media type of [WriteFHIRBundle]'s output.
const FHIRContentType = fhirBundleContentType

type coding struct {
	System  string `json:"system,omitempty"`
	Code    string `json:"code,omitempty"`
	Display string `json:"display,omitempty"`
}

type codeableConcept struct {
	Coding []coding `json:"coding,omitempty"`
	Text   string   `json:"text,omitempty"`
}

type identifier struct {
	System string `json:"system,omitempty"`
	Value  string `json:"value"`
}

type reference struct {
	Identifier *identifier `json:"identifier,omitempty"`
	Display    string      `json:"display,omitempty"`
}

type agent struct {
	Type      *codeableConcept  `json:"type,omitempty"`
	Role      []codeableConcept `json:"role,omitempty"`
	Who       *reference        `json:"who,omitempty"`
	Requestor bool              `json:"requestor"`
	Policy    []string          `json:"policy,omitempty"`
}

type fhirSource struct {
	Site     string    `json:"site,omitempty"`
	Observer reference `json:"observer"`
	Type     []coding  `json:"type,omitempty"`
}

type entityDetail struct {
	Type        string `json:"type"`
	ValueString string `json:"valueString"`
}

type entity struct {
	What        *reference     `json:"what,omitempty"`
	Type        *coding        `json:"type,omitempty"`
	Role        *coding        `json:"role,omitempty"`
	Description string         `json:"description,omitempty"`
	Detail      []entityDetail `json:"detail,omitempty"`
}

// auditEvent is a FHIR R4 AuditEvent.
type auditEvent struct {
	ResourceType string     `json:"resourceType"`
	ID           string     `json:"id"`
	Type         coding     `json:"type"`
	Subtype      []coding   `json:"subtype,omitempty"`
	Action       string     `json:"action,omitempty"`
	Recorded     string     `json:"recorded"`
	Outcome      string     `json:"outcome,omitempty"`
	OutcomeDesc  string     `json:"outcomeDesc,omitempty"`
	Agent        []agent    `json:"agent"`
	Source       fhirSource `json:"source"`
	Entity       []entity   `json:"entity,omitempty"`
}

// AuditEvent returns e as a FHIR R4 AuditEvent resource (JSON), shaped
// as the IHE Basic Audit Log Patterns (BALP) describe a RESTful
// interaction: type "rest" with a restful-interaction subtype (plus the
// Consilium action as a second subtype), the user agent (requestor)
// with the principal's role and the policy version, client and server
// agents (DICOM Source/Destination Role ID), the gateway instance as
// source observer, and one entity per pseudonymous target, the request
// id (BALP XrequestId), the policy decision and the chain position.
func AuditEvent(e Entry) ([]byte, error) {
	return json.Marshal(toAuditEvent(e))
}

func toAuditEvent(e Entry) auditEvent {
	action, interaction := fhirAction(e)
	ev := auditEvent{
		ResourceType: "AuditEvent",
		ID:           "audit-" + strconv.FormatUint(e.Seq, 10),
		Type:         coding{System: systemAuditEventType, Code: "rest", Display: "Restful Operation"},
		Subtype: []coding{
			{System: systemRestful, Code: interaction},
			{System: systemAction, Code: strings.Join(strings.Fields(e.Action), " ")},
		},
		Action:      action,
		Recorded:    e.Time.UTC().Format(fhirInstant),
		Outcome:     fhirOutcome(e.Outcome),
		OutcomeDesc: fmt.Sprintf("HTTP %d %s", e.Outcome, http.StatusText(e.Outcome)),
		Source: fhirSource{
			Site:     "consilium",
			Observer: reference{Display: e.Source},
			Type:     []coding{{System: systemSourceType, Code: "4", Display: "Application Server"}},
		},
	}
	ev.OutcomeDesc = strings.TrimSpace(ev.OutcomeDesc)

	user := agent{Requestor: true}
	userType := coding{System: systemParticipation, Code: "IRCP", Display: "information recipient"}
	if action != "R" {
		userType = coding{System: systemParticipation, Code: "AUT", Display: "author (originator)"}
	}
	user.Type = &codeableConcept{Coding: []coding{userType}}
	var who *reference
	if e.Actor.ID != "" {
		who = &reference{
			Identifier: &identifier{System: systemPrincipal, Value: e.Actor.ID},
			Display:    fmt.Sprintf("%s (%s, organisation %s, country %s)", e.Actor.ID, e.Actor.Role, e.Actor.Org, e.Actor.Country),
		}
		if e.Actor.Role != "" {
			user.Role = []codeableConcept{{Coding: []coding{{System: systemRole, Code: e.Actor.Role}}}}
		}
	} else {
		who = &reference{Display: "unauthenticated caller (no valid client certificate)"}
	}
	user.Who = who
	if d := e.Decision; d != nil && d.PolicyVersion != "" {
		user.Policy = []string{systemPolicy + ":" + d.PolicyVersion}
	}
	ev.Agent = []agent{
		user,
		{Type: &codeableConcept{Coding: []coding{{System: systemDCM, Code: "110153", Display: "Source Role ID"}}}, Who: who, Requestor: false},
		{Type: &codeableConcept{Coding: []coding{{System: systemDCM, Code: "110152", Display: "Destination Role ID"}}},
			Who: &reference{Display: e.Source}, Requestor: false},
	}

	add := func(system, value string, typ, role coding) {
		if value != "" {
			ev.Entity = append(ev.Entity, entity{What: &reference{Identifier: &identifier{System: system, Value: value}}, Type: &typ, Role: &role})
		}
	}
	person := coding{System: systemEntityType, Code: "1", Display: "Person"}
	object := coding{System: systemEntityType, Code: "2", Display: "System Object"}
	domain := coding{System: systemObjectRole, Code: "4", Display: "Domain Resource"}
	security := coding{System: systemObjectRole, Code: "13", Display: "Security Resource"}
	add(systemPatient, e.Target.Patient, person, coding{System: systemObjectRole, Code: "1", Display: "Patient"})
	add(systemCase, e.Target.Case, object, domain)
	add(systemStudy, e.Target.Study, object, domain)
	add(systemResource, e.Target.Resource, object, domain)
	add(systemPrincipal, e.Target.Principal, person, coding{System: systemObjectRole, Code: "6", Display: "User"})
	add(systemPolicy, e.Target.Policy, object, security)
	if e.RequestID != "" {
		ev.Entity = append(ev.Entity, entity{
			What: &reference{Identifier: &identifier{Value: e.RequestID}},
			Type: &coding{System: systemBALPEntityType, Code: "XrequestId", Display: "X-Request-Id"},
		})
	}
	if d := e.Decision; d != nil {
		verdict := "deny"
		if d.Allow {
			verdict = "allow"
		}
		de := entity{Type: &object, Role: &security, Description: "policy decision: " + verdict,
			Detail: []entityDetail{{Type: "allow", ValueString: strconv.FormatBool(d.Allow)}}}
		if d.InputDigest != "" {
			de.What = &reference{Identifier: &identifier{System: systemPolicyDigest, Value: d.InputDigest}}
		}
		if d.PolicyVersion != "" {
			de.Detail = append(de.Detail, entityDetail{Type: "policy-version", ValueString: d.PolicyVersion})
		}
		for _, r := range d.Reasons {
			if r = strings.TrimSpace(r); r != "" {
				de.Detail = append(de.Detail, entityDetail{Type: "reason", ValueString: r})
			}
		}
		ev.Entity = append(ev.Entity, de)
	}
	ev.Entity = append(ev.Entity, entity{
		What:        &reference{Identifier: &identifier{System: systemAuditEntry, Value: strconv.FormatUint(e.Seq, 10)}},
		Type:        &object,
		Role:        &security,
		Description: "position in the Consilium audit chain",
		Detail: []entityDetail{
			{Type: "hash", ValueString: e.Hash},
			{Type: "prev", ValueString: e.Prev},
		},
	})
	return ev
}

// fhirAction maps an entry to the AuditEvent action code and the FHIR
// restful-interaction. An action of the form "<capability>.<verb>"
// whose verb is a FHIR interaction (read, vread, search, history,
// create, update, patch, delete) uses it; other verbs are operations
// (action E); route-pattern actions follow the HTTP method.
func fhirAction(e Entry) (action, interaction string) {
	verb := e.Action
	if i := strings.LastIndexByte(verb, '.'); i >= 0 && !strings.ContainsRune(verb, ' ') {
		verb = verb[i+1:]
		switch verb {
		case "read", "vread", "history":
			return "R", verb
		case "search":
			return "R", "search-type"
		case "create":
			return "C", "create"
		case "update", "patch":
			return "U", verb
		case "delete":
			return "D", "delete"
		}
		return "E", "operation"
	}
	switch e.Method {
	case http.MethodGet, http.MethodHead:
		return "R", "read"
	case http.MethodPost:
		return "C", "create"
	case http.MethodPut, http.MethodPatch:
		return "U", "update"
	case http.MethodDelete:
		return "D", "delete"
	}
	return "E", "operation"
}

// fhirOutcome maps an HTTP status to the AuditEvent outcome code:
// success, minor failure (the caller's error or a refusal), serious
// failure (the server's error).
func fhirOutcome(status int) string {
	switch {
	case status >= 500:
		return "8"
	case status >= 400:
		return "4"
	}
	return "0"
}

// WriteFHIRBundle streams the entries as a FHIR R4 Bundle of type
// searchset whose entries are AuditEvent resources (see [AuditEvent]).
// It writes as it reads, so memory stays bounded. When entries yields
// an error, WriteFHIRBundle stops and returns it; what was written is
// then not a complete Bundle, and the caller must make that visible
// (an HTTP handler aborts the response).
func WriteFHIRBundle(w io.Writer, entries iter.Seq2[Entry, error], now time.Time) error {
	bw := bufio.NewWriter(w)
	fmt.Fprintf(bw, `{"resourceType":"Bundle","type":"searchset","timestamp":%q,"entry":[`, now.UTC().Format(fhirInstant))
	n := 0
	for e, err := range entries {
		if err != nil {
			return err // unflushed: a failure before 32 KiB leaves nothing written
		}
		res, err := json.Marshal(toAuditEvent(e))
		if err != nil {
			return err
		}
		if n > 0 {
			bw.WriteByte(',')
		}
		fmt.Fprintf(bw, `{"fullUrl":%q,"resource":%s,"search":{"mode":"match"}}`, entryUUID(e.Hash), res)
		n++
		if bw.Buffered() > 32<<10 {
			if err := bw.Flush(); err != nil {
				return err
			}
		}
	}
	bw.WriteString("]}\n")
	return bw.Flush()
}

// entryUUID derives a urn:uuid from an entry hash, so the same entry
// always has the same fullUrl.
func entryUUID(hash string) string {
	h := (hash + strings.Repeat("0", 32))[:32]
	return fmt.Sprintf("urn:uuid:%s-%s-%s-%s-%s", h[0:8], h[8:12], h[12:16], h[16:20], h[20:32])
}
