package fhir

import (
	"errors"
	"fmt"
	"strings"
)

// Errors that callers branch on. Every error of the REST operations of
// [Store] wraps one of them, usually inside an [*Error] that carries the
// issues to report.
var (
	// ErrMalformed: the request cannot be read (not JSON, not a Bundle of
	// a type this operation takes, an unsupported search parameter).
	// HTTP 400.
	ErrMalformed = errors.New("fhir: malformed request")
	// ErrInvalid: the content is JSON but not a valid FHIR R4 resource.
	// HTTP 422.
	ErrInvalid = errors.New("fhir: invalid resource")
	// ErrNotSupported: a valid request for something this server does not
	// do (PATCH, operations inside a Bundle, other Bundle types). HTTP 400
	// with issue code not-supported.
	ErrNotSupported = errors.New("fhir: not supported")
	// ErrNotFound: no such resource (or version) in the organisation.
	// HTTP 404.
	ErrNotFound = errors.New("fhir: resource not found")
	// ErrDeleted: the resource's current version is a deletion. HTTP 410.
	ErrDeleted = errors.New("fhir: resource deleted")
	// ErrPreconditionFailed: If-Match did not match, or a conditional
	// operation or reference matched more (or fewer) resources than it
	// may. HTTP 412.
	ErrPreconditionFailed = errors.New("fhir: precondition failed")
	// ErrConflict: the request contradicts itself (two entries of a
	// transaction touch one resource), or concurrent writers kept
	// winning. HTTP 409.
	ErrConflict = errors.New("fhir: conflict")
	// ErrTooLarge: one NDJSON line is longer than the line limit. HTTP 413.
	ErrTooLarge = errors.New("fhir: too large")
	// ErrForbidden: the caller's [Authorizer] refused an entry; the
	// *Error's Cause is the authorizer's error.
	ErrForbidden = errors.New("fhir: refused by the authorizer")
)

// Issue severities (FHIR IssueSeverity).
const (
	SeverityFatal       = "fatal"
	SeverityError       = "error"
	SeverityWarning     = "warning"
	SeverityInformation = "information"
)

// Issue types (FHIR IssueType) used by this package.
const (
	CodeStructure       = "structure"
	CodeInvalid         = "invalid"
	CodeRequired        = "required"
	CodeValue           = "value"
	CodeNotSupported    = "not-supported"
	CodeNotFound        = "not-found"
	CodeDeleted         = "deleted"
	CodeConflict        = "conflict"
	CodeDuplicate       = "duplicate"
	CodeMultipleMatches = "multiple-matches"
	CodeProcessing      = "processing"
	CodeTooLong         = "too-long"
	CodeInformational   = "informational"
	CodeForbidden       = "forbidden"
)

// Issue is one finding about a request, as OperationOutcome.issue says it.
type Issue struct {
	// Severity is fatal, error, warning or information.
	Severity string
	// Code is the FHIR IssueType code.
	Code string
	// Expression is the FHIRPath of the element concerned, for example
	// "Bundle.entry[3].resource.code.coding[0]"; empty when the issue is
	// about the whole request.
	Expression string
	// Details says what is wrong. It never quotes the input, so it may be
	// logged.
	Details string
	// Diagnostics may quote the input (a field name, part of a value): it
	// goes back to the caller who sent it, never to logs.
	Diagnostics string
}

// Error is a failed request with its issues. Kind is one of the sentinel
// errors above; errors.Is(err, ErrInvalid) and friends work on it.
type Error struct {
	Kind error
	// Entry is the index of the Bundle entry (or the 1-based NDJSON line)
	// that failed, or -1.
	Entry  int
	Issues []Issue
	// Cause is the underlying error when there is one (the authorizer's
	// refusal for ErrForbidden).
	Cause error
}

// Error describes the failure without quoting input: the kind, the entry
// and the first error issue's expression and details.
func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString(e.Kind.Error())
	if e.Entry >= 0 {
		fmt.Fprintf(&b, " (entry %d)", e.Entry)
	}
	for _, is := range e.Issues {
		if is.Severity != SeverityError && is.Severity != SeverityFatal {
			continue
		}
		b.WriteString(": ")
		if is.Expression != "" {
			b.WriteString(is.Expression)
			b.WriteString(": ")
		}
		b.WriteString(is.Details)
		break
	}
	if n := e.errorCount(); n > 1 {
		fmt.Fprintf(&b, " (and %d more)", n-1)
	}
	return b.String()
}

func (e *Error) errorCount() int {
	n := 0
	for _, is := range e.Issues {
		if is.Severity == SeverityError || is.Severity == SeverityFatal {
			n++
		}
	}
	return n
}

// Unwrap returns the kind and the cause.
func (e *Error) Unwrap() []error {
	if e.Cause != nil {
		return []error{e.Kind, e.Cause}
	}
	return []error{e.Kind}
}

// newError returns an *Error of kind with one error issue.
func newError(kind error, code, expr, format string, a ...any) *Error {
	return &Error{Kind: kind, Entry: -1, Issues: []Issue{{Severity: SeverityError, Code: code, Expression: expr, Details: fmt.Sprintf(format, a...)}}}
}

// atEntry returns err re-rooted at a Bundle entry: expressions that start
// at the resource get the entry's path in front, and Entry is set. Errors
// that are not *Error are returned unchanged.
func atEntry(err error, i int, root string) error {
	var fe *Error
	if !errors.As(err, &fe) {
		return err
	}
	out := &Error{Kind: fe.Kind, Entry: i, Issues: make([]Issue, len(fe.Issues)), Cause: fe.Cause}
	for j, is := range fe.Issues {
		is.Expression = reroot(is.Expression, root)
		out.Issues[j] = is
	}
	return out
}

// reroot replaces the leading resource type of a FHIRPath expression by
// root ("Observation.code" under "Bundle.entry[2].resource" becomes
// "Bundle.entry[2].resource.code").
func reroot(expr, root string) string {
	switch {
	case root == "":
		return expr
	case expr == "":
		return root
	case strings.HasPrefix(expr, "Bundle.entry["):
		return expr // already placed by the envelope checks
	}
	if i := strings.IndexByte(expr, '.'); i >= 0 {
		return root + expr[i:]
	}
	return root
}

// KindOf returns the sentinel error err wraps, or nil.
func KindOf(err error) error {
	for _, k := range []error{ErrMalformed, ErrInvalid, ErrNotSupported, ErrNotFound, ErrDeleted, ErrPreconditionFailed, ErrConflict, ErrTooLarge, ErrForbidden} {
		if errors.Is(err, k) {
			return k
		}
	}
	return nil
}
