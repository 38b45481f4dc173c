package gateway

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"

	"github.com/consilium/consilium/cases"
	"github.com/consilium/consilium/certs"
	"github.com/consilium/consilium/policy"
	"github.com/consilium/consilium/storage"
)

// errUnauthenticated is returned for API routes called without a client
// certificate.
var errUnauthenticated = errors.New("a client certificate issued by this gateway's CA is required")

// errRevoked is returned when the caller's certificate was revoked after
// its connection was established.
var errRevoked = errors.New("the client certificate has been revoked")

// httpError is an error with the status and safe message to answer with.
// Handlers return it (via errorf or withStatus) for conditions only they
// can classify; everything else is classified in statusOf.
type httpError struct {
	status int
	msg    string // safe to show the caller: no patient data, no key material
	err    error  // the cause, for logs and errors.Is
}

func (e *httpError) Error() string {
	if e.err != nil {
		return e.msg + ": " + e.err.Error()
	}
	return e.msg
}

func (e *httpError) Unwrap() error { return e.err }

// errorf returns an error that answers with status and the formatted
// message. Never format patient data into it.
func errorf(status int, format string, a ...any) error {
	return &httpError{status: status, msg: fmt.Sprintf(format, a...)}
}

// withStatus attaches a status and safe message to err.
func withStatus(status int, msg string, err error) error {
	return &httpError{status: status, msg: msg, err: err}
}

// statusOf maps an error to the status and the message shown to the
// caller. It is the only place that does this.
func statusOf(err error) (int, string) {
	var he *httpError
	var tooBig *http.MaxBytesError
	switch {
	case errors.As(err, &he):
		return he.status, he.msg
	case errors.Is(err, policy.ErrDenied):
		return http.StatusForbidden, "forbidden by policy"
	case errors.Is(err, policy.ErrInvalidBundle):
		return http.StatusUnprocessableEntity, "the policy bundle was refused; the active policy is unchanged"
	case errors.Is(err, policy.ErrInvalidVersion):
		return http.StatusBadRequest, "invalid policy version name: use 1-63 characters of a-z, 0-9, '.', '_' or '-'"
	case errors.Is(err, policy.ErrVersionExists):
		return http.StatusConflict, "this policy version already exists; versions are immutable, upload under a new name"
	case errors.Is(err, policy.ErrUnknownVersion):
		return http.StatusNotFound, "no such policy version"
	case errors.Is(err, policy.ErrConflict):
		return http.StatusConflict, "another activation happened at the same time; list the policies and retry"
	case errors.Is(err, cases.ErrIllegalTransition):
		return http.StatusConflict, err.Error()
	case errors.Is(err, cases.ErrConflict):
		return http.StatusConflict, "the case was changed by others at the same time; retry"
	case errors.Is(err, cases.ErrNotFound):
		return http.StatusNotFound, "not found"
	case errors.Is(err, cases.ErrInvalid):
		return http.StatusUnprocessableEntity, err.Error()
	case errors.Is(err, errUnauthenticated), errors.Is(err, errRevoked):
		return http.StatusUnauthorized, err.Error()
	case errors.Is(err, certs.ErrInvalidPrincipal):
		return http.StatusForbidden, "the client certificate does not carry a valid principal: " + err.Error()
	case errors.As(err, &tooBig):
		return http.StatusRequestEntityTooLarge, fmt.Sprintf("request body exceeds %d bytes", tooBig.Limit)
	case errors.Is(err, storage.ErrNotFound):
		return http.StatusNotFound, "not found"
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		// The client went away or a progress timeout fired; the answer
		// will most likely not be read. 503 tells a proxy to retry.
		return http.StatusServiceUnavailable, "the request was cancelled or timed out"
	default:
		return http.StatusInternalServerError, "internal error"
	}
}

// errorBody is the JSON error answer of Consilium's own routes.
type errorBody struct {
	Error     string           `json:"error"`
	Reasons   []string         `json:"reasons,omitempty"`
	Problems  []policy.Problem `json:"problems,omitempty"`
	RequestID string           `json:"request_id"`
}

// problem is an error as the caller sees it.
type problem struct {
	Status int
	// Message is safe to show: no patient data, no key material.
	Message string
	// Reasons are the policy's reasons for a deny.
	Reasons []string
	// Problems are what is wrong with an uploaded policy bundle.
	Problems  []policy.Problem
	RequestID string
	// Err is the error being answered, for renderers that show its
	// structured details (FHIR issues). Never render it as text.
	Err error
}

// errorRenderer writes a problem in a route family's format. Routes choose
// theirs with the renderErrors route option; the default is errorBody.
type errorRenderer func(w http.ResponseWriter, p problem)

func renderJSON(w http.ResponseWriter, p problem) {
	writeJSON(w, p.Status, errorBody{Error: p.Message, Reasons: p.Reasons, Problems: p.Problems, RequestID: p.RequestID})
}

func isDenied(err error) bool { return errors.Is(err, policy.ErrDenied) }

// writeError answers the request with err and logs it once: server errors
// at error level with the cause, client errors at info level.
func (s *Server) writeError(w http.ResponseWriter, r *http.Request, err error) {
	status, msg := statusOf(err)
	id := RequestID(r.Context())
	level := slog.LevelInfo
	if status >= 500 {
		level = slog.LevelError
		msg = fmt.Sprintf("%s (request id %s)", msg, id)
	}
	s.log.Log(r.Context(), level, "request failed", "request_id", id, "status", status, "err", err.Error())
	p := problem{Status: status, Message: msg, RequestID: id, Err: err}
	// Reasons are shown for a deny answered as such, never for one turned
	// into 404 (that would confirm the record exists).
	var denied *policy.DeniedError
	if status == http.StatusForbidden && errors.As(err, &denied) {
		p.Reasons = denied.Reasons
	}
	var bundle *policy.BundleError
	if errors.As(err, &bundle) {
		p.Problems = bundle.Problems
	}
	render := requestInfoFrom(r.Context()).render
	if render == nil {
		render = renderJSON
	}
	render(w, p)
}

// writeJSON writes v as a JSON response with status.
func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v) // the client may have gone; nothing more to do
}

// cutStream ends a response that has started and then failed: the status
// is sent and cannot change, so the connection is cut and the client sees
// a broken body rather than a short one it might take for complete.
func (s *Server) cutStream(r *http.Request, err error) {
	s.log.Error("streaming an answer failed", "request_id", RequestID(r.Context()), "err", err.Error())
	panic(http.ErrAbortHandler)
}
