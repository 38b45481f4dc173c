package gateway

import (
	"encoding/json"
	"net/http"
	"time"

	"github.com/consilium/consilium/fhir"
)

// The CapabilityStatement says what this server does, and only that:
// every R4 resource type with read, vread, instance history, create
// (conditional), update (update-as-create, conditional, If-Match), delete
// (conditional: one match at most), type search with the
// parameters package fhir supports; transaction and batch at the base;
// Patient/$everything; JSON only; mutual TLS.

type capabilityStatement struct {
	ResourceType   string            `json:"resourceType"`
	Status         string            `json:"status"`
	Date           string            `json:"date"`
	Publisher      string            `json:"publisher"`
	Kind           string            `json:"kind"`
	Software       map[string]string `json:"software"`
	Implementation map[string]string `json:"implementation"`
	FHIRVersion    string            `json:"fhirVersion"`
	Format         []string          `json:"format"`
	Rest           []capRest         `json:"rest"`
}

type capRest struct {
	Mode          string        `json:"mode"`
	Documentation string        `json:"documentation"`
	Security      capSecurity   `json:"security"`
	Resource      []capResource `json:"resource"`
	Interaction   []capCode     `json:"interaction"`
}

type capSecurity struct {
	CORS        bool   `json:"cors"`
	Description string `json:"description"`
}

type capResource struct {
	Type              string         `json:"type"`
	Versioning        string         `json:"versioning"`
	ReadHistory       bool           `json:"readHistory"`
	UpdateCreate      bool           `json:"updateCreate"`
	ConditionalCreate bool           `json:"conditionalCreate"`
	ConditionalRead   string         `json:"conditionalRead"`
	ConditionalUpdate bool           `json:"conditionalUpdate"`
	ConditionalDelete string         `json:"conditionalDelete"`
	Interaction       []capCode      `json:"interaction"`
	SearchParam       []capParam     `json:"searchParam"`
	Operation         []capOperation `json:"operation,omitempty"`
}

type capCode struct {
	Code          string `json:"code"`
	Documentation string `json:"documentation,omitempty"`
}

type capParam struct {
	Name          string `json:"name"`
	Type          string `json:"type"`
	Documentation string `json:"documentation"`
}

type capOperation struct {
	Name       string `json:"name"`
	Definition string `json:"definition"`
}

// capabilityStatementJSON builds the statement served at /fhir/metadata.
func capabilityStatementJSON(now time.Time) []byte {
	var params []capParam
	for _, p := range fhir.SearchParams {
		params = append(params, capParam{Name: p.Name, Type: p.Type, Documentation: p.Doc})
	}
	interactions := []capCode{
		{Code: "read"}, {Code: "vread"}, {Code: "update"}, {Code: "delete"},
		{Code: "history-instance"}, {Code: "create"}, {Code: "search-type"},
	}
	var res []capResource
	for _, t := range fhir.ResourceTypes() {
		r := capResource{
			Type: t, Versioning: "versioned", ReadHistory: true, UpdateCreate: true,
			ConditionalCreate: true, ConditionalRead: "not-supported", ConditionalUpdate: true, ConditionalDelete: "single",
			Interaction: interactions, SearchParam: params,
		}
		if t == "Patient" {
			r.Operation = []capOperation{{Name: "everything", Definition: "http://hl7.org/fhir/OperationDefinition/Patient-everything"}}
		}
		res = append(res, r)
	}
	cs := capabilityStatement{
		ResourceType: "CapabilityStatement", Status: "active", Date: now.UTC().Format(time.RFC3339),
		Publisher: "Consilium", Kind: "instance",
		Software:       map[string]string{"name": "Consilium gateway"},
		Implementation: map[string]string{"description": "Consilium FHIR R4 API for hospitals' records (second opinions)"},
		FHIRVersion:    "4.0.1",
		Format:         []string{"json", fhirJSON},
		Rest: []capRest{{
			Mode: "server",
			Documentation: "Records are scoped by organisation: a hospital reads and writes its own; naming another organisation in the " +
				OrganizationHeader + " header gets 404s. POST to the base takes a transaction or batch Bundle (" + fhirJSON +
				") or resources as " + fhirNDJSON + " (bulk load, one commit at the end). Search parameters that are not listed are refused, not ignored.",
			Security: capSecurity{Description: "Mutual TLS 1.3: a client certificate issued by the gateway's CA (CN principal, O organisation, OU role); every request is decided by the gateway's policy."},
			Resource: res,
			Interaction: []capCode{
				{Code: "transaction", Documentation: "all or nothing; urn:uuid fullUrls and conditional references resolved"},
				{Code: "batch", Documentation: "per-entry outcomes; entries may not reference each other"},
			},
		}},
	}
	b, err := json.Marshal(cs)
	if err != nil {
		panic("gateway: CapabilityStatement: " + err.Error()) // static content
	}
	return b
}

// fhirMetadata is GET /fhir/metadata. It carries no patient data, so any
// authenticated caller may read it without a policy decision.
func (s *Server) fhirMetadata(w http.ResponseWriter, r *http.Request) error {
	if err := fhirAccept(r); err != nil {
		return err
	}
	writeFHIR(w, http.StatusOK, s.capability)
	return nil
}
