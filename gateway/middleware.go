package gateway

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"runtime/debug"
	"strconv"
	"time"

	"github.com/consilium/consilium/certs"
)

// observe is the outermost layer: it gives the request an id, recovers
// panics, extends the response write deadline while the handler makes
// progress, and records the access log line and metrics.
func (s *Server) observe(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		ri := &requestInfo{id: newRequestID()}
		r = r.WithContext(withRequestInfo(r.Context(), ri))
		sw := newStatusWriter(w, s.cfg.ProgressTimeout)
		sw.Header().Set("X-Request-Id", ri.id)
		// Until the handler first writes, it has HandlerTimeout; each
		// write then extends the deadline by ProgressTimeout.
		_ = sw.rc.SetWriteDeadline(start.Add(s.cfg.HandlerTimeout))
		s.metrics.inFlight.Inc()
		defer func() {
			s.metrics.inFlight.Dec()
			if v := recover(); v != nil {
				if v == http.ErrAbortHandler { //nolint:errorlint // sentinel compared as net/http does
					panic(v)
				}
				s.log.Error("handler panic", "request_id", ri.id, "panic", fmt.Sprint(v), "stack", string(debug.Stack()))
				if !sw.wroteHeader {
					s.writeError(sw, r, errors.New("internal error"))
				}
			}
			route := r.Pattern
			if route == "" {
				route = "unmatched"
			}
			elapsed := time.Since(start)
			s.metrics.requests.WithLabelValues(route, r.Method, strconv.Itoa(sw.status())).Inc()
			s.metrics.duration.WithLabelValues(route, r.Method).Observe(elapsed.Seconds())
			s.metrics.bytesOut.WithLabelValues(route).Add(float64(sw.bytes))
			if rb, ok := r.Body.(*progressBody); ok {
				s.metrics.bytesIn.WithLabelValues(route).Add(float64(rb.n))
			}
			attrs := []slog.Attr{
				slog.String("request_id", ri.id),
				slog.String("method", r.Method),
				// The route pattern, never the path: paths carry resource
				// ids that a hospital may have derived from patient data.
				slog.String("route", route),
				slog.Int("status", sw.status()),
				slog.Int64("bytes_out", sw.bytes),
				slog.Float64("duration_ms", float64(elapsed.Microseconds())/1000),
				slog.String("remote", r.RemoteAddr),
			}
			if ri.principal != nil {
				attrs = append(attrs, slog.String("principal", ri.principal.ID), slog.String("role", string(ri.principal.Role)))
			}
			s.log.LogAttrs(r.Context(), slog.LevelInfo, "request", attrs...)
		}()
		next.ServeHTTP(sw, r)
	})
}

// newRequestID returns 16 random hex characters.
func newRequestID() string {
	var b [8]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails on supported platforms
	return hex.EncodeToString(b[:])
}

// route is one registered route: its handler and how much of the request
// it accepts.
type route struct {
	public    bool          // served without a client certificate
	unaudited bool          // leaves no audit entry (see audit.go)
	maxBody   int64         // 0: Config.MaxBodyBytes; <0: unbounded (streaming routes)
	render    errorRenderer // nil: JSON errorBody
}

// RouteOption adjusts a route.
type routeOption func(*route)

// public marks a route that needs no client certificate.
func public() routeOption { return func(r *route) { r.public = true } }

// unaudited marks a route whose requests leave no audit entry (metrics
// scrapes). Public routes are never audited.
func unaudited() routeOption { return func(r *route) { r.unaudited = true } }

// maxBody sets a route's body bound; n < 0 means unbounded (the route
// streams and enforces its own limits).
func maxBody(n int64) routeOption { return func(r *route) { r.maxBody = n } }

// renderErrors makes the route answer errors with render.
func renderErrors(render errorRenderer) routeOption { return func(r *route) { r.render = render } }

// handlerFunc is a route handler: it writes a response or returns an
// error, which errors.go turns into a status and body.
type handlerFunc func(w http.ResponseWriter, r *http.Request) error

// wrap builds the per-route chain: authentication, body bounds, error
// rendering, and the audit hook (audit.go).
func (s *Server) wrap(h handlerFunc, opts ...routeOption) http.Handler {
	rt := route{}
	for _, o := range opts {
		o(&rt)
	}
	limit := rt.maxBody
	if limit == 0 {
		limit = s.cfg.MaxBodyBytes
	}
	serve := func(w http.ResponseWriter, r *http.Request) {
		requestInfoFrom(r.Context()).render = rt.render
		if !rt.public {
			p, err := s.principalOf(r)
			if err != nil {
				s.writeError(w, r, err)
				return
			}
			requestInfoFrom(r.Context()).principal = &p
		}
		if r.Body != nil && r.Body != http.NoBody {
			var body io.ReadCloser = r.Body
			if limit > 0 {
				body = http.MaxBytesReader(w, body, limit)
			}
			r.Body = newProgressBody(body, http.NewResponseController(w), s.cfg.ProgressTimeout)
		}
		if err := h(w, r); err != nil {
			s.writeError(w, r, err)
		}
	}
	if rt.public || rt.unaudited {
		return http.HandlerFunc(serve)
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// Deferred, so that a request whose handler panics is recorded
		// too (as a 500) while the panic goes on to observe.
		completed := false
		defer func() { s.auditAfter(w, r, completed) }()
		serve(w, r)
		completed = true
	})
}

// principalOf reads the caller from the verified client certificate. The
// TLS layer has already checked chain, validity, usage and revocation.
func (s *Server) principalOf(r *http.Request) (certs.Principal, error) {
	if r.TLS == nil || len(r.TLS.PeerCertificates) == 0 || len(r.TLS.VerifiedChains) == 0 {
		return certs.Principal{}, errUnauthenticated
	}
	if s.revoked != nil && s.revoked(r.TLS.PeerCertificates[0]) {
		return certs.Principal{}, errRevoked
	}
	p, err := certs.PrincipalFromCertificate(r.TLS.PeerCertificates[0])
	if err != nil {
		return certs.Principal{}, err
	}
	return p, nil
}

// progressBody extends the connection's read deadline while the client
// keeps sending, so a large upload may take as long as it needs but a
// stalled one is cut off after the progress timeout.
type progressBody struct {
	io.ReadCloser
	rc       *http.ResponseController
	timeout  time.Duration
	extended time.Time
	n        int64
}

func newProgressBody(body io.ReadCloser, rc *http.ResponseController, timeout time.Duration) *progressBody {
	b := &progressBody{ReadCloser: body, rc: rc, timeout: timeout}
	b.extend(time.Now())
	return b
}

func (b *progressBody) extend(now time.Time) {
	// Extending on every read would be wasteful for 32 KiB reads of a
	// gigabyte; once a second keeps the bound within a second.
	if now.Sub(b.extended) < time.Second {
		return
	}
	b.extended = now
	_ = b.rc.SetReadDeadline(now.Add(b.timeout)) // unsupported writers just keep the server's defaults
}

func (b *progressBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	b.n += int64(n)
	if n > 0 {
		b.extend(time.Now())
	}
	return n, err
}

// statusWriter records the status and byte count, and extends the write
// deadline as the response makes progress.
type statusWriter struct {
	http.ResponseWriter
	rc          *http.ResponseController
	timeout     time.Duration
	extended    time.Time
	code        int
	wroteHeader bool
	bytes       int64
}

func newStatusWriter(w http.ResponseWriter, timeout time.Duration) *statusWriter {
	return &statusWriter{ResponseWriter: w, rc: http.NewResponseController(w), timeout: timeout}
}

func (w *statusWriter) WriteHeader(code int) {
	if !w.wroteHeader {
		w.code, w.wroteHeader = code, true
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(p []byte) (int, error) {
	if !w.wroteHeader {
		w.WriteHeader(http.StatusOK)
	}
	if now := time.Now(); now.Sub(w.extended) >= time.Second {
		w.extended = now
		_ = w.rc.SetWriteDeadline(now.Add(w.timeout))
	}
	n, err := w.ResponseWriter.Write(p)
	w.bytes += int64(n)
	return n, err
}

func (w *statusWriter) status() int {
	if !w.wroteHeader {
		return http.StatusOK
	}
	return w.code
}

// Flush lets streaming handlers push bytes early.
func (w *statusWriter) Flush() { _ = http.NewResponseController(w.ResponseWriter).Flush() }

// Unwrap lets http.ResponseController reach the connection.
func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }
