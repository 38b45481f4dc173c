package gateway

import (
	"net/http"

	"github.com/consilium/consilium/fhir"
)

// renderOutcome answers an error on a FHIR route as an OperationOutcome:
// the issues of a FHIR failure (entry index and element path), or one
// issue made from the status and safe message, with the policy's reasons
// for a deny and the request id for the logs.
func renderOutcome(w http.ResponseWriter, p problem) {
	var issues []fhir.Issue
	// A 404 never shows the cause (it may be a refusal that must look like
	// absence), nor does a server error.
	if p.Status != http.StatusNotFound && p.Status < 500 {
		issues = fhir.IssuesOf(p.Err)
	}
	if len(issues) == 0 {
		issues = []fhir.Issue{{Severity: fhir.SeverityError, Code: issueCodeFor(p.Status), Details: p.Message}}
	}
	for _, reason := range p.Reasons {
		issues = append(issues, fhir.Issue{Severity: fhir.SeverityInformation, Code: fhir.CodeInformational, Details: "policy: " + reason})
	}
	if p.RequestID != "" {
		issues = append(issues, fhir.Issue{Severity: fhir.SeverityInformation, Code: fhir.CodeInformational, Details: "request id " + p.RequestID})
	}
	writeFHIR(w, p.Status, fhir.AppendOutcome(nil, issues))
}

// issueCodeFor picks the IssueType for a status.
func issueCodeFor(status int) string {
	switch status {
	case http.StatusUnauthorized:
		return "login"
	case http.StatusForbidden:
		return fhir.CodeForbidden
	case http.StatusNotFound:
		return fhir.CodeNotFound
	case http.StatusGone:
		return fhir.CodeDeleted
	case http.StatusConflict, http.StatusPreconditionFailed:
		return fhir.CodeConflict
	case http.StatusRequestEntityTooLarge:
		return fhir.CodeTooLong
	case http.StatusUnsupportedMediaType, http.StatusNotAcceptable, http.StatusMethodNotAllowed:
		return fhir.CodeNotSupported
	case http.StatusBadRequest, http.StatusUnprocessableEntity:
		return fhir.CodeInvalid
	case http.StatusServiceUnavailable:
		return "transient"
	}
	if status >= 500 {
		return "exception"
	}
	return fhir.CodeProcessing
}
