// Package gatewaytest starts a real gateway for tests: TLS 1.3 on a
// loopback port, the development CA and demo principals of the embedded
// default (package devenv), and HTTP clients that present each principal's
// client certificate. Tests of every capability that is reached over HTTP
// use it, so they all go through real TLS with real certificates.
package gatewaytest

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"testing"
	"time"

	"aead.dev/minisign"

	"github.com/consilium/consilium/audit"
	"github.com/consilium/consilium/certs"
	"github.com/consilium/consilium/gateway"
	"github.com/consilium/consilium/internal/devenv"
	"github.com/consilium/consilium/policy"
	"github.com/consilium/consilium/storage"
)

// Gateway is a running gateway.
type Gateway struct {
	// URL is the base URL, https://127.0.0.1:<port>.
	URL string
	// Layout is the development folder with the CA and client files.
	Layout devenv.Layout
	// CA is the development certificate authority.
	CA *certs.Authority
	// TLS is the server's TLS state (revocations).
	TLS *certs.ServerTLS
	// Server is the gateway itself.
	Server *gateway.Server
	// Logger is the logger the gateway writes to.
	Logger *slog.Logger
	// Store is the store the gateway serves from.
	Store storage.Store
	// Audit is the gateway's audit log: Options.Audit, or one that Start
	// made in a filesystem store of its own, signed with the
	// development signing key.
	Audit *audit.Log
	// Policy is the gateway's policy engine: Options.Policy, or the
	// built-in bundle over Store.
	Policy *policy.Engine
	// Options are the options the gateway was built with, defaults
	// filled in, for tests that build a second server alike.
	Options gateway.Options

	stop func()
}

// Config adjusts [Start].
type Config struct {
	// Dir is the development folder; default a new temporary folder.
	// Two gateways given the same Dir share CA and keys.
	Dir string
	// Gateway is the gateway configuration; Addr is ignored (a free
	// loopback port is used).
	Gateway gateway.Config
	// Options are passed to gateway.New; Logger, TLS, Revoked, Names (a
	// fresh keyring's) and Policy (the built-in bundle over the test's
	// store) are filled in when empty.
	Options gateway.Options
	// CRLRefresh is how often the server re-reads revocations; default
	// 100ms so revocation tests are fast.
	CRLRefresh time.Duration
}

// Logger returns a logger for tests: silent unless CONSILIUM_TEST_LOG is
// set, in which case it writes text to stderr.
func Logger() *slog.Logger {
	if os.Getenv("CONSILIUM_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

// Start starts a gateway over store and stops it when the test ends. A nil
// store means an encrypted filesystem store in a temporary folder, as the
// embedded default uses.
func Start(t testing.TB, store storage.Store, cfg Config) *Gateway {
	t.Helper()
	if store == nil {
		store = NewStore(t)
	}
	if cfg.Dir == "" {
		cfg.Dir = t.TempDir()
	}
	if cfg.CRLRefresh == 0 {
		cfg.CRLRefresh = 100 * time.Millisecond
	}
	layout, _, err := devenv.Ensure(cfg.Dir, nil)
	if err != nil {
		t.Fatalf("development folder: %v", err)
	}
	ca, err := certs.Load(layout.PKIDir())
	if err != nil {
		t.Fatal(err)
	}
	log := cfg.Options.Logger
	if log == nil {
		log = Logger()
	}
	stls, err := certs.NewServerTLS(certs.ServerConfig{
		CAFile: layout.CAFile(), CertFile: layout.ServerCert(), KeyFile: layout.ServerKey(),
		CRLFile: layout.CRLFile(), CRLRefresh: cfg.CRLRefresh,
	}, log)
	if err != nil {
		t.Fatal(err)
	}
	opts := cfg.Options
	opts.Logger = log
	opts.Store = store
	if opts.Names == nil {
		// A name key of this gateway's own; gateways that share a store
		// must share one (pass Options.Names).
		kr, err := storage.GenerateKeyring(rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		opts.Names = kr.NameHash
	}
	ctx, cancel := context.WithCancel(context.Background())
	if opts.Policy == nil {
		engine, err := policy.New(ctx, policy.WithStore(store), policy.WithDecisionLog(store, 0), policy.WithLogger(log))
		if err != nil {
			cancel()
			t.Fatalf("policy engine: %v", err)
		}
		opts.Policy = engine
		engineDone := make(chan struct{})
		go func() { engine.Run(ctx); close(engineDone) }()
		// The engine's last flush must end before the test's folders go.
		t.Cleanup(func() { cancel(); <-engineDone })
	}
	if opts.Audit == nil {
		opts.Audit = NewAudit(t, layout, log)
	}
	if opts.TLS == nil {
		opts.TLS = stls.Config()
	}
	if opts.Revoked == nil {
		opts.Revoked = stls.IsRevoked
	}
	// Names and secrets come from the development folder's keyring, so
	// gateways started on one Dir agree on object names and pseudonyms.
	kr, err := storage.LoadKeyring(layout.KeyringFile())
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	if opts.Names == nil {
		opts.Names = kr.NameHash
	}
	if opts.Secrets == nil {
		opts.Secrets = kr.Derive
	}
	if opts.SigningKey.ID() == 0 {
		opts.SigningKey = SigningKey(t, layout)
	}
	srv, err := gateway.New(cfg.Gateway, opts)
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	specialists, err := devenv.Specialists(layout)
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	for _, sp := range specialists {
		if err := srv.Directory().Register(ctx, sp); err != nil {
			cancel()
			t.Fatalf("registering %s: %v", sp.ID, err)
		}
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go stls.Watch(ctx)
	go func() { done <- srv.Serve(ctx, ln) }()
	g := &Gateway{
		URL: "https://" + ln.Addr().String(), Layout: layout, CA: ca, TLS: stls, Server: srv, Logger: log, Store: store,
		Audit: opts.Audit, Policy: opts.Policy, Options: opts,
	}
	var stopped bool
	g.stop = func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		if err := <-done; err != nil {
			t.Errorf("gateway stopped with error: %v", err)
		}
	}
	t.Cleanup(g.stop)
	return g
}

// SigningKey reads the development signing key of layout.
func SigningKey(t testing.TB, layout devenv.Layout) minisign.PrivateKey {
	t.Helper()
	data, err := os.ReadFile(layout.SigningKey())
	if err != nil {
		t.Fatal(err)
	}
	var key minisign.PrivateKey
	if err := key.UnmarshalText(data); err != nil {
		t.Fatal(err)
	}
	return key
}

// NewAudit opens an audit log in a new filesystem store in a temporary
// folder, signing checkpoints with the development signing key of layout.
// It is closed when the test ends, after the gateways started before it
// was made have stopped.
func NewAudit(t testing.TB, layout devenv.Layout, log *slog.Logger) *audit.Log {
	t.Helper()
	fs, err := storage.NewFilesystem(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	l, err := audit.Open(context.Background(), audit.Config{}, audit.Options{Store: fs, Signer: SigningKey(t, layout), Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return l
}

// NewStore returns an encrypted filesystem store in a temporary folder with
// a fresh keyring.
func NewStore(t testing.TB) *storage.Encrypted {
	t.Helper()
	fs, err := storage.NewFilesystem(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	kr, err := storage.GenerateKeyring(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return storage.NewEncrypted(fs, kr)
}

// Stop shuts the gateway down gracefully (it is also stopped at the end of
// the test).
func (g *Gateway) Stop() { g.stop() }

// Client returns an HTTP client that presents demo principal id's
// certificate and trusts only the development CA.
func (g *Gateway) Client(t testing.TB, id string) *http.Client {
	t.Helper()
	return g.ClientWithFiles(t, g.Layout.ClientCert(id), g.Layout.ClientKey(id))
}

// ClientWithFiles returns an HTTP client presenting the given certificate
// and key.
func (g *Gateway) ClientWithFiles(t testing.TB, certFile, keyFile string) *http.Client {
	t.Helper()
	cfg, err := certs.ClientTLSConfig(g.Layout.CAFile(), certFile, keyFile)
	if err != nil {
		t.Fatal(err)
	}
	return client(t, cfg)
}

// AnonymousClient returns a client that trusts the CA but presents no
// certificate.
func (g *Gateway) AnonymousClient(t testing.TB) *http.Client {
	t.Helper()
	cfg, err := certs.ClientTLSConfig(g.Layout.CAFile(), "", "")
	if err != nil {
		t.Fatal(err)
	}
	return client(t, cfg)
}

func client(t testing.TB, cfg *tls.Config) *http.Client {
	tr := &http.Transport{TLSClientConfig: cfg, ForceAttemptHTTP2: true}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: 5 * time.Minute}
}
