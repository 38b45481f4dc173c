package gateway

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/consilium/consilium/audit"
	"github.com/consilium/consilium/policy"
)

// # The audit hook
//
// Every request that reaches a handler through wrap leaves at least one
// entry in the audit trail (package audit), except the public probes and
// routes registered with unaudited() (/metrics). The hook in wrap records
// the entry after the handler has answered, with the final status as
// outcome; refused callers (no or revoked certificate) are recorded too.
//
// Handlers tell the hook what the request was about, from the handler
// goroutine, before they answer:
//
//	setAuditAction(r, "case.release")               // default: the route pattern, "POST /cases/{id}/release"
//	setAuditTarget(r, audit.Target{Case: id, Patient: pseudonym})  // pseudonymous ids only
//	setAuditDecision(r, audit.Decision{Allow: d.Allow, Reasons: d.Reasons,
//		InputDigest: d.InputDigest, PolicyVersion: d.PolicyVersion})
//
// Reads may be recorded after the response: the hook does it. A failure
// to record them is logged and counted (consilium_audit_record_failures_total
// with when="after"); the caller already has the data.
//
// Writes that change data, releases and packet downloads must be durable
// in the trail BEFORE the response (fail closed). Such a handler calls
// auditCommit with the status it is about to answer with, and returns the
// error if there is one; it must not write its success answer then:
//
//	setAuditAction(r, "case.release")
//	setAuditTarget(r, audit.Target{Case: id})
//	setAuditDecision(r, ...)
//	if err := s.auditCommit(r, http.StatusOK); err != nil {
//		return err // 503: the audit trail is unavailable, the operation is refused
//	}
//	// ... perform the change (or stream the packet) and answer 200 ...
//
// Call auditCommit before the irreversible step where there is one (the
// state change, the first byte of a packet), so that nothing happens
// unrecorded. If the request then ends with another status than the one
// committed (the change failed), the hook records a second entry with
// the same request id and the real outcome; if it ends as committed, the
// hook adds nothing.

// auditState is what the handler of a request tells the audit hook. It
// lives in the request's requestInfo and is used from the handler
// goroutine only.
type auditState struct {
	action   string
	target   audit.Target
	decision *audit.Decision
	// committed is the outcome auditCommit made durable; 0 if none.
	committed int
}

// setAuditAction names the action of the request (default: the route
// pattern). Use "<capability>.<verb>", with a FHIR interaction as verb
// where one fits (read, search, create, update, delete): the FHIR export
// maps those to AuditEvent codes.
func setAuditAction(r *http.Request, action string) {
	requestInfoFrom(r.Context()).audit.action = action
}

// setAuditTarget says what the request touched, by pseudonymous ids only.
func setAuditTarget(r *http.Request, t audit.Target) {
	requestInfoFrom(r.Context()).audit.target = t
}

// setAuditDecision records the policy decision taken for the request.
func setAuditDecision(r *http.Request, d audit.Decision) {
	requestInfoFrom(r.Context()).audit.decision = &d
}

// auditWriteTimeout bounds how long a request waits for its entry.
const auditWriteTimeout = 30 * time.Second

// auditCommit records the request's entry durably, with status as
// outcome, before the handler answers. On error the handler must return
// the error (503) and not perform or acknowledge the operation.
func (s *Server) auditCommit(r *http.Request, status int) error {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(r.Context()), auditWriteTimeout)
	defer cancel()
	if _, err := s.audit.Record(ctx, s.auditEntry(r, status)); err != nil {
		s.auditFailures.WithLabelValues("before").Inc()
		return withStatus(http.StatusServiceUnavailable, "the audit trail is unavailable, so the operation was refused", err)
	}
	requestInfoFrom(r.Context()).audit.committed = status
	return nil
}

// auditAfter is the hook at the end of every audited request. completed
// is false when the handler panicked (the answer is then a 500).
func (s *Server) auditAfter(w http.ResponseWriter, r *http.Request, completed bool) {
	status := http.StatusInternalServerError
	if completed {
		if sw, ok := w.(*statusWriter); ok {
			status = sw.status()
		}
		// The client need not wait for the entry.
		_ = http.NewResponseController(w).Flush()
	}
	ri := requestInfoFrom(r.Context())
	if ri.audit.committed == status {
		return
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(r.Context()), auditWriteTimeout)
	defer cancel()
	if _, err := s.audit.Record(ctx, s.auditEntry(r, status)); err != nil {
		s.auditFailures.WithLabelValues("after").Inc()
		s.log.Error("audit entry not recorded", "request_id", ri.id, "status", status, "err", err.Error())
	}
}

// auditEntry builds the entry of a request from what the gateway and
// the handler know.
func (s *Server) auditEntry(r *http.Request, status int) audit.Entry {
	ri := requestInfoFrom(r.Context())
	e := audit.Entry{
		RequestID: ri.id,
		Action:    ri.audit.action,
		Method:    r.Method,
		Target:    ri.audit.target,
		Decision:  ri.audit.decision,
		Outcome:   status,
	}
	if e.Action == "" {
		// The route pattern, never the path: paths carry resource ids.
		switch pattern := r.Pattern; {
		case pattern == "":
			e.Action = r.Method + " (no route)"
		case strings.Contains(pattern, " "):
			e.Action = pattern
		default:
			e.Action = r.Method + " " + pattern
		}
	}
	if p := ri.principal; p != nil {
		e.Actor = audit.Actor{ID: p.ID, Org: p.Org, Role: string(p.Role), Country: p.Country}
	}
	return e
}

// initAudit checks the audit log and registers its metrics.
func (s *Server) initAudit(l *audit.Log, reg prometheus.Registerer) error {
	if l == nil {
		return errors.New("gateway: an audit log is required")
	}
	s.audit = l
	s.auditFailures = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "consilium", Subsystem: "audit", Name: "record_failures_total",
		Help: "Audit entries that could not be recorded: before (the operation was refused) or after the response.",
	}, []string{"when"})
	stat := func(name, help string, f func(audit.Stats) uint64) prometheus.Collector {
		return prometheus.NewCounterFunc(prometheus.CounterOpts{Namespace: "consilium", Subsystem: "audit", Name: name, Help: help},
			func() float64 { return float64(f(l.Stats())) })
	}
	for _, c := range []prometheus.Collector{
		s.auditFailures,
		stat("entries_total", "Audit entries this instance made durable.", func(st audit.Stats) uint64 { return st.Appended }),
		stat("segments_total", "Audit segments (store writes) this instance made.", func(st audit.Stats) uint64 { return st.Segments }),
		stat("conflicts_total", "Audit sequence numbers another instance took first.", func(st audit.Stats) uint64 { return st.Conflicts }),
		stat("checkpoints_total", "Signed audit checkpoints this instance wrote.", func(st audit.Stats) uint64 { return st.Checkpoints }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Namespace: "consilium", Subsystem: "audit", Name: "head_seq",
			Help: "Sequence number of the last audit entry this instance knows."},
			func() float64 { return float64(l.Head().Seq) }),
	} {
		if err := reg.Register(c); err != nil {
			return fmt.Errorf("gateway: registering audit metrics: %w", err)
		}
	}
	return nil
}

// auditFilter reads the filters of GET /audit and /audit/export.
func auditFilter(r *http.Request) (audit.Filter, error) {
	q := r.URL.Query()
	var f audit.Filter
	for _, p := range []struct {
		name string
		dst  *time.Time
	}{{"from", &f.From}, {"to", &f.To}} {
		if v := q.Get(p.name); v != "" {
			t, err := time.Parse(time.RFC3339Nano, v)
			if err != nil {
				return f, errorf(http.StatusBadRequest, "%s must be an RFC 3339 time such as 2026-01-31T12:00:00Z", p.name)
			}
			*p.dst = t
		}
	}
	for _, p := range []struct {
		name string
		dst  *string
	}{{"actor", &f.Actor}, {"case", &f.Case}, {"patient", &f.Patient}, {"action", &f.Action}, {"request_id", &f.RequestID}} {
		v := q.Get(p.name)
		if p.name != "action" && !audit.ValidToken(v) {
			return f, errorf(http.StatusBadRequest, "%s must be a short token of [A-Za-z0-9._:/-]", p.name)
		}
		*p.dst = v
	}
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 {
			return f, errorf(http.StatusBadRequest, "limit must be a non-negative integer")
		}
		f.Limit = n
	}
	setAuditTarget(r, audit.Target{Case: f.Case, Patient: f.Patient, Principal: f.Actor})
	return f, nil
}

// auditSearch streams the entries that match the filters as NDJSON.
func (s *Server) auditSearch(w http.ResponseWriter, r *http.Request) error {
	setAuditAction(r, "audit.search")
	if _, err := s.authorize(r, policy.Input{Action: policy.ActionAuditRead}); err != nil {
		return err
	}
	f, err := auditFilter(r)
	if err != nil {
		return err
	}
	w.Header().Set("Content-Type", "application/x-ndjson")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	enc := json.NewEncoder(w)
	n := 0
	for e, err := range s.audit.Read(r.Context(), f) {
		if err != nil {
			return s.abortStream(w, r, n, err)
		}
		if err := enc.Encode(e); err != nil {
			return nil // the client went away
		}
		if n++; n%256 == 0 {
			_ = http.NewResponseController(w).Flush()
		}
	}
	if n == 0 {
		w.WriteHeader(http.StatusOK)
	}
	return nil
}

// abortStream ends a streaming answer that failed: before the first
// byte it is an ordinary error; after, the connection is cut so that the
// client sees a failed transfer rather than a short, complete-looking one.
func (s *Server) abortStream(w http.ResponseWriter, r *http.Request, written int, err error) error {
	if written == 0 {
		return err
	}
	s.cutStream(r, err)
	return nil // not reached
}

// auditVerify verifies the whole chain in the store and answers with the
// report (200 whether or not it is intact: the report says).
func (s *Server) auditVerify(w http.ResponseWriter, r *http.Request) error {
	setAuditAction(r, "audit.verify")
	if _, err := s.authorize(r, policy.Input{Action: policy.ActionAuditVerify}); err != nil {
		return err
	}
	rep, err := s.audit.Verify(r.Context())
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, rep)
	return nil
}

// auditExport streams the matching entries as a FHIR R4 Bundle of
// AuditEvent resources.
func (s *Server) auditExport(w http.ResponseWriter, r *http.Request) error {
	setAuditAction(r, "audit.export")
	if _, err := s.authorize(r, policy.Input{Action: policy.ActionAuditExport}); err != nil {
		return err
	}
	if format := r.URL.Query().Get("format"); format != "fhir" {
		return errorf(http.StatusBadRequest, "format must be fhir")
	}
	f, err := auditFilter(r)
	if err != nil {
		return err
	}
	w.Header().Set("Content-Type", audit.FHIRContentType)
	w.Header().Set("X-Content-Type-Options", "nosniff")
	cw := &countingWriter{w: w}
	if err := audit.WriteFHIRBundle(cw, s.audit.Read(r.Context(), f), time.Now()); err != nil {
		return s.abortStream(w, r, int(min(cw.n, 1)), err)
	}
	return nil
}

type countingWriter struct {
	w http.ResponseWriter
	n int64
}

func (c *countingWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}
