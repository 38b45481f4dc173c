package gateway

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"

	"github.com/consilium/consilium/certs"
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
	Error     string `json:"error"`
	RequestID string `json:"request_id"`
}

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
	writeJSON(w, status, errorBody{Error: msg, RequestID: id})
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
