// Package fhir owns FHIR R4 parsing, validation and de-identification.
//
// De-identification starts at [NewDeidentifier]: it rewrites a resource, a
// Bundle or an NDJSON export on the JSON tree (not through typed protos, which
// is an order of magnitude slower), applying the rules of
// ../shared/reference/fhir-r4-deid-rules.md under the "shifted" or
// "safe-harbor" profile of package deid, with the same pseudonyms, date
// offsets and UID mapping as package dicom.
package fhir
