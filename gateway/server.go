package gateway

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"aead.dev/minisign"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/consilium/consilium/audit"
	"github.com/consilium/consilium/cases"
	"github.com/consilium/consilium/deid"
	"github.com/consilium/consilium/fhir"
	"github.com/consilium/consilium/imaging"
	"github.com/consilium/consilium/policy"
	"github.com/consilium/consilium/storage"
)

// Defaults for [Config].
const (
	DefaultAddr              = "127.0.0.1:8443"
	DefaultMaxBodyBytes      = 1 << 20
	DefaultReadHeaderTimeout = 10 * time.Second
	DefaultProgressTimeout   = 30 * time.Second
	DefaultIdleTimeout       = 120 * time.Second
	DefaultHandlerTimeout    = 5 * time.Minute
	DefaultShutdownTimeout   = 30 * time.Second
	DefaultMaxHeaderBytes    = 64 << 10
)

// Config is the gateway's section of the process configuration. Zero
// values take the documented defaults.
type Config struct {
	// Addr is the host:port to listen on. Default 127.0.0.1:8443.
	Addr string `json:"addr,omitempty"`
	// MaxBodyBytes bounds request bodies of JSON API routes. Routes that
	// stream large uploads set their own bound. Default 1 MiB.
	MaxBodyBytes int64 `json:"max_body_bytes,omitempty"`
	// ReadHeaderTimeout bounds the TLS handshake and the request headers
	// (slowloris). Default 10s.
	ReadHeaderTimeout time.Duration `json:"read_header_timeout,omitempty"`
	// ProgressTimeout ends a request whose body read or response write
	// makes no progress for this long, so slow-drip clients cannot hold
	// connections while large uploads and downloads still stream. Default 30s.
	ProgressTimeout time.Duration `json:"progress_timeout,omitempty"`
	// HandlerTimeout bounds the time until a handler first writes its
	// response. Default 5m.
	HandlerTimeout time.Duration `json:"handler_timeout,omitempty"`
	// IdleTimeout closes idle keep-alive connections. Default 120s.
	IdleTimeout time.Duration `json:"idle_timeout,omitempty"`
	// ShutdownTimeout bounds the graceful drain on SIGTERM. Default 30s.
	ShutdownTimeout time.Duration `json:"shutdown_timeout,omitempty"`
	// FHIR bounds the FHIR API's uploads.
	FHIR FHIRConfig `json:"fhir,omitzero"`
}

// withDefaults returns c with zero fields set to their defaults.
func (c Config) withDefaults() Config {
	set := func(d *time.Duration, v time.Duration) {
		if *d == 0 {
			*d = v
		}
	}
	if c.Addr == "" {
		c.Addr = DefaultAddr
	}
	if c.MaxBodyBytes == 0 {
		c.MaxBodyBytes = DefaultMaxBodyBytes
	}
	set(&c.ReadHeaderTimeout, DefaultReadHeaderTimeout)
	set(&c.ProgressTimeout, DefaultProgressTimeout)
	set(&c.HandlerTimeout, DefaultHandlerTimeout)
	set(&c.IdleTimeout, DefaultIdleTimeout)
	set(&c.ShutdownTimeout, DefaultShutdownTimeout)
	c.FHIR = c.FHIR.withDefaults()
	return c
}

// Validate reports the first invalid setting.
func (c Config) Validate() error {
	c = c.withDefaults()
	if _, _, err := net.SplitHostPort(c.Addr); err != nil {
		return fmt.Errorf("gateway: address %q: %w", c.Addr, err)
	}
	if c.MaxBodyBytes < 0 {
		return errors.New("gateway: max body bytes must not be negative")
	}
	if c.FHIR.MaxBodyBytes < 0 || c.FHIR.MaxLineBytes < 0 {
		return errors.New("gateway: FHIR limits must not be negative")
	}
	for _, d := range []time.Duration{c.ReadHeaderTimeout, c.ProgressTimeout, c.HandlerTimeout, c.IdleTimeout, c.ShutdownTimeout} {
		if d < 0 {
			return errors.New("gateway: timeouts must not be negative")
		}
	}
	return nil
}

// Options are the gateway's collaborators, built by the caller.
type Options struct {
	// Logger receives access logs and errors. Required.
	Logger *slog.Logger
	// TLS is the server TLS configuration (see certs.ServerTLS.Config).
	// Required: the gateway never serves plain HTTP.
	TLS *tls.Config
	// Store is the (encrypted) object store. Required.
	Store storage.Store
	// PacketStore keeps built case packets. They are encrypted to their
	// specialist with age already, so it may be the raw backend under
	// Store, which saves a decryption per download. Default: Store.
	PacketStore storage.Store
	// Registry receives the gateway's metrics and is served on /metrics.
	// Default: a new registry with the Go and process collectors.
	Registry *prometheus.Registry
	// Policy decides every request. Required.
	Policy *policy.Engine
	// ReadyChecks are run by /readyz in addition to the store check.
	ReadyChecks []func(context.Context) error
	// Audit is the audit trail every request is recorded in (see
	// audit.go for the hook). Required: the gateway does not serve
	// unaudited.
	Audit *audit.Log
	// Names returns a keyed hash of value (storage.Keyring.NameHash): FHIR
	// object names and the pseudonymous patient keys of policy inputs.
	// Required.
	Names func(kind, value string) string
	// Secrets returns a stable secret for a purpose
	// (storage.Keyring.Derive): the pseudonym secret of packets.
	// Required.
	Secrets func(purpose string) []byte
	// SigningKey is the gateway's minisign key: it signs packet
	// manifests. Required.
	SigningKey minisign.PrivateKey
	// Revoked, when set, is asked on every request whether the caller's
	// certificate has been revoked since its connection was established,
	// so a revocation also ends keep-alive connections, not only new
	// handshakes (see certs.ServerTLS.IsRevoked).
	Revoked func(*x509.Certificate) bool
}

// Server is the gateway. Build it with [New].
type Server struct {
	cfg     Config
	log     *slog.Logger
	tls     *tls.Config
	store   storage.Store
	reg     *prometheus.Registry
	metrics *metrics
	ready   []func(context.Context) error
	revoked func(*x509.Certificate) bool
	policy  *policy.Engine
	names   func(kind, value string) string
	fhir    *fhir.Store
	// capability is the FHIR CapabilityStatement.
	capability []byte
	dicom      *imaging.Archive
	handler    http.Handler

	cases      *cases.Store
	directory  *cases.Directory
	signingKey minisign.PrivateKey
	pseudonyms *deid.Keyed     // GDPR pseudonymisation (keyed, reversible by its records)
	surrogates *deid.Surrogate // HIPAA Safe Harbor (random, recorded)

	audit         *audit.Log
	auditFailures *prometheus.CounterVec
}

// New builds a gateway from its configuration and collaborators.
func New(cfg Config, opts Options) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	switch {
	case opts.Logger == nil:
		return nil, errors.New("gateway: a logger is required")
	case opts.TLS == nil:
		return nil, errors.New("gateway: a TLS configuration is required")
	case opts.Store == nil:
		return nil, errors.New("gateway: a store is required")
	case opts.Policy == nil:
		return nil, errors.New("gateway: a policy engine is required")
	case opts.Names == nil:
		return nil, errors.New("gateway: a name hasher is required")
	}
	reg := opts.Registry
	if reg == nil {
		reg = NewRegistry()
	}
	m, err := newMetrics(reg)
	if err != nil {
		return nil, err
	}
	s := &Server{
		cfg:     cfg.withDefaults(),
		log:     opts.Logger.With("component", "gateway"),
		tls:     opts.TLS,
		store:   opts.Store,
		reg:     reg,
		metrics: m,
		ready:   opts.ReadyChecks,
		revoked: opts.Revoked,
		policy:  opts.Policy,
		names:   opts.Names,
	}
	if err := s.initAudit(opts.Audit, reg); err != nil {
		return nil, err
	}
	if s.fhir, err = newFHIRStore(s); err != nil {
		return nil, err
	}
	s.capability = capabilityStatementJSON(time.Now())
	if s.dicom, err = imaging.New(opts.Store, imaging.Options{Names: opts.Names, Logger: opts.Logger}); err != nil {
		return nil, err
	}
	if err := s.initCases(opts); err != nil {
		return nil, err
	}
	s.handler = s.observe(s.routes())
	return s, nil
}

// initCases sets up the case workflow: its store, the directory and the
// pseudonym sources packets are de-identified with. Their records live in
// the encrypted store: they map pseudonyms back to patients.
func (s *Server) initCases(opts Options) error {
	if opts.Secrets == nil {
		return errors.New("gateway: a secret source (Options.Secrets) is required")
	}
	if opts.SigningKey.ID() == 0 {
		return errors.New("gateway: a signing key is required")
	}
	s.signingKey = opts.SigningKey
	packets := opts.PacketStore
	if packets == nil {
		packets = opts.Store
	}
	s.cases = cases.NewStore(opts.Store, packets)
	s.directory = cases.NewDirectory(opts.Store)
	var err error
	if s.pseudonyms, err = deid.NewKeyed(opts.Secrets("pseudonyms"), deid.KeyedOptions{
		Store: opts.Store, NameKey: opts.Secrets("pseudonym-names"),
	}); err != nil {
		return fmt.Errorf("gateway: pseudonym source: %w", err)
	}
	if s.surrogates, err = deid.NewSurrogate(opts.Store, opts.Secrets("surrogate-names"), deid.SurrogateOptions{Prefix: "deid-surrogates/"}); err != nil {
		return fmt.Errorf("gateway: surrogate source: %w", err)
	}
	return nil
}

// Handler returns the gateway's HTTP handler, for tests that bring their
// own TLS listener.
func (s *Server) Handler() http.Handler { return s.handler }

// Addr returns the configured listen address.
func (s *Server) Addr() string { return s.cfg.Addr }

// ListenAndServe listens on the configured address and serves until ctx
// ends, then shuts down gracefully.
func (s *Server) ListenAndServe(ctx context.Context) error {
	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "tcp", s.cfg.Addr)
	if err != nil {
		return fmt.Errorf("gateway: listening on %s: %w", s.cfg.Addr, err)
	}
	return s.Serve(ctx, ln)
}

// Serve serves TLS on ln until ctx ends. Then it stops accepting, lets
// in-flight requests finish for up to ShutdownTimeout, and returns nil; it
// returns an error only if serving failed.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	srv := &http.Server{
		Handler:           s.handler,
		TLSConfig:         s.tls.Clone(),
		ReadHeaderTimeout: s.cfg.ReadHeaderTimeout,
		IdleTimeout:       s.cfg.IdleTimeout,
		MaxHeaderBytes:    DefaultMaxHeaderBytes,
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelDebug),
		BaseContext:       func(net.Listener) context.Context { return context.WithoutCancel(ctx) },
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.ServeTLS(ln, "", "") }()
	s.log.Info("gateway listening", "addr", ln.Addr().String())
	select {
	case err := <-errc:
		return fmt.Errorf("gateway: serving: %w", err)
	case <-ctx.Done():
	}
	s.log.Info("gateway shutting down", "timeout", s.cfg.ShutdownTimeout.String())
	sctx, cancel := context.WithTimeout(context.Background(), s.cfg.ShutdownTimeout)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		srv.Close()
		return fmt.Errorf("gateway: graceful shutdown: %w", err)
	}
	if err := <-errc; err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("gateway: serving: %w", err)
	}
	if s.dicom != nil {
		if err := s.dicom.Flush(sctx); err != nil {
			s.log.Error("writing deferred DICOM catalog counts", "err", err.Error())
		}
	}
	s.log.Info("gateway stopped")
	return nil
}
