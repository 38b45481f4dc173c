package main

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"text/tabwriter"

	"aead.dev/minisign"

	"github.com/consilium/consilium/audit"
	"github.com/consilium/consilium/certs"
	"github.com/consilium/consilium/gateway"
	"github.com/consilium/consilium/internal/devenv"
	"github.com/consilium/consilium/policy"
	"github.com/consilium/consilium/storage"
)

func serveCommand() command {
	return command{summary: "run the gateway (--dev: the embedded default, nothing else to install)", run: runServe}
}

func runServe(ctx context.Context, env *cli, args []string) error {
	fs := newFlagSet(env, "serve", "serve --dev [--data DIR] [--addr HOST:PORT]\n"+
		"       consilium serve [--config FILE] [--addr HOST:PORT]\n\n"+
		"Without --dev, settings come from the JSON file given by --config and from\n"+
		"these environment variables, which override the file:\n"+envHelp())
	dev := fs.Bool("dev", false, "embedded default: development CA, demo principals, filesystem store under --data")
	data := fs.String("data", "consilium-data", "folder of the embedded default (with --dev)")
	addr := fs.String("addr", "", "listen address (default 127.0.0.1:8443)")
	configFile := fs.String("config", "", "JSON configuration file (without --dev)")
	if err := parseFlags(fs, args, false); err != nil {
		return err
	}

	var cfg serveConfig
	var layout devenv.Layout
	if *dev {
		if *configFile != "" {
			return usagef("--dev and --config are exclusive")
		}
		var err error
		if cfg, layout, err = devConfig(*data, *addr); err != nil {
			return err
		}
	} else {
		var err error
		if cfg, err = loadServeConfig(*configFile, env.getenv); err != nil {
			return err
		}
		if *addr != "" {
			cfg.Gateway.Addr = *addr
		}
		if err := cfg.validate(); err != nil {
			return err
		}
	}
	log := newLogger(env, cfg.Log)

	app, err := buildGateway(ctx, cfg, log)
	if err != nil {
		return err
	}
	defer app.audit.Close() // after the last request: commits what is queued, signs a final checkpoint
	if *dev {
		// The demo specialists can receive packets at once.
		specialists, err := devenv.Specialists(layout)
		if err != nil {
			return err
		}
		for _, sp := range specialists {
			if err := app.srv.Directory().Register(ctx, sp); err != nil {
				return fmt.Errorf("registering %s in the specialist directory: %w", sp.ID, err)
			}
		}
		printDev(env, layout, app.srv.Addr())
	}
	app.background.Add(1)
	go func() { defer app.background.Done(); app.tls.Watch(ctx) }()
	err = app.srv.ListenAndServe(ctx)
	// Let background loops finish their last writes (decision inputs).
	app.background.Wait()
	return err
}

// app is the running gateway and the background loops that serve it.
type app struct {
	srv        *gateway.Server
	tls        *certs.ServerTLS
	audit      *audit.Log
	background sync.WaitGroup
}

func envHelp() string {
	var b strings.Builder
	tw := tabwriter.NewWriter(&b, 0, 0, 2, ' ', 0)
	for _, e := range envVars() {
		fmt.Fprintf(tw, "  %s\t%s\n", e.name, e.help)
	}
	tw.Flush()
	return b.String()
}

// devConfig prepares the embedded default in dir and returns the
// configuration that points at it.
func devConfig(dir, addr string) (serveConfig, devenv.Layout, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return serveConfig{}, devenv.Layout{}, err
	}
	if addr == "" {
		addr = gateway.DefaultAddr
	}
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return serveConfig{}, devenv.Layout{}, usagef("--addr %q: %v", addr, err)
	}
	var hosts []string
	if host != "" && host != "localhost" && host != "127.0.0.1" && host != "::1" {
		hosts = append(hosts, host)
	}
	layout, _, err := devenv.Ensure(abs, hosts)
	if err != nil {
		return serveConfig{}, layout, err
	}
	cfg := serveConfig{
		Gateway: gateway.Config{Addr: addr},
		TLS: certs.ServerConfig{
			CAFile: layout.CAFile(), CertFile: layout.ServerCert(), KeyFile: layout.ServerKey(), CRLFile: layout.CRLFile(),
		},
		Storage:        storageConfig{Backend: "fs", Dir: layout.StoreDir()},
		KeyringFile:    layout.KeyringFile(),
		SigningKeyFile: layout.SigningKey(),
		Log:            logConfig{Level: "info", Format: "text"},
	}
	return cfg, layout, nil
}

// buildGateway opens the store, loads keys, opens the audit log and
// builds the gateway. The background loops it starts end with ctx; the
// caller closes the audit log after serving.
func buildGateway(ctx context.Context, cfg serveConfig, log *slog.Logger) (*app, error) {
	backend, err := openBackend(ctx, cfg.Storage)
	if err != nil {
		return nil, err
	}
	kr, err := storage.LoadKeyring(cfg.KeyringFile)
	if err != nil {
		return nil, fmt.Errorf("storage keyring: %w", err)
	}
	key, err := loadSigningKey(cfg.SigningKeyFile, cfg.SigningKeyPasswordFile)
	if err != nil {
		return nil, err
	}
	stls, err := certs.NewServerTLS(cfg.TLS, log)
	if err != nil {
		return nil, err
	}
	store := storage.NewEncrypted(backend, kr)
	// Policy bundles and recorded decision inputs live in the encrypted
	// store: the inputs hold pseudonymous patient keys and consents.
	engine, err := policy.New(ctx, policy.WithStore(store), policy.WithDecisionLog(store, 0), policy.WithLogger(log))
	if err != nil {
		return nil, fmt.Errorf("policy engine: %w", err)
	}
	// The audit log goes to the raw backend, not the encrypted store: it
	// holds pseudonyms only, and `consilium audit verify` then needs only
	// the store and the gateway's public key.
	alog, err := audit.Open(ctx, auditConfig(cfg, log), audit.Options{Store: backend, Signer: key, Logger: log})
	if err != nil {
		return nil, fmt.Errorf("audit log: %w", err)
	}
	a := &app{tls: stls, audit: alog}
	a.background.Add(1)
	go func() {
		defer a.background.Done()
		if err := engine.Run(ctx); err != nil && ctx.Err() == nil {
			log.Error("policy engine stopped following activations", "err", err)
		}
	}()
	srv, err := gateway.New(cfg.Gateway, gateway.Options{
		Logger:     log,
		TLS:        stls.Config(),
		Store:      store,
		Policy:     engine,
		Audit:      alog,
		Revoked:    stls.IsRevoked,
		Names:      kr.NameHash,
		Secrets:    kr.Derive,
		SigningKey: key,
	})
	if err != nil {
		alog.Close()
		return nil, err
	}
	a.srv = srv
	return a, nil
}

// auditConfig settles the audit retention the backend can give: by
// default governance retention where the store enforces it (read-only
// files, or a MinIO bucket with object lock), none elsewhere.
func auditConfig(cfg serveConfig, log *slog.Logger) audit.Config {
	a := cfg.Audit
	if a.RetentionMode == "" {
		if cfg.Storage.Backend == "minio" && !cfg.Storage.MinIO.ObjectLock {
			a.RetentionMode = audit.RetentionNone
			log.Warn("the audit trail is not write-once: the MinIO bucket has no object lock (set CONSILIUM_MINIO_OBJECT_LOCK=true on a new bucket)")
		} else {
			a.RetentionMode = audit.RetentionGovernance
		}
	}
	return a
}

// openBackend builds the configured storage backend.
func openBackend(ctx context.Context, c storageConfig) (storage.Store, error) {
	switch c.Backend {
	case "fs":
		return storage.NewFilesystem(c.Dir)
	case "minio":
		return storage.NewMinIO(ctx, c.MinIO)
	default:
		return nil, fmt.Errorf("unknown storage backend %q", c.Backend)
	}
}

// loadSigningKey reads the gateway's minisign key, decrypting it with the
// password in passwordFile when the key is encrypted.
func loadSigningKey(path, passwordFile string) (minisign.PrivateKey, error) {
	var key minisign.PrivateKey
	data, err := os.ReadFile(path)
	if err != nil {
		return key, fmt.Errorf("signing key: %w", err)
	}
	if minisign.IsEncrypted(data) {
		if passwordFile == "" {
			return key, fmt.Errorf("signing key %s is encrypted: set CONSILIUM_SIGNING_KEY_PASSWORD_FILE", path)
		}
		pw, err := os.ReadFile(passwordFile)
		if err != nil {
			return key, fmt.Errorf("signing key password: %w", err)
		}
		if key, err = minisign.DecryptKey(strings.TrimRight(string(pw), "\r\n"), data); err != nil {
			return key, fmt.Errorf("signing key %s: %w", path, err)
		}
		return key, nil
	}
	if err := key.UnmarshalText(data); err != nil {
		return key, fmt.Errorf("signing key %s: %w", path, err)
	}
	return key, nil
}

// printDev tells a newcomer where everything is and how to call the
// gateway.
func printDev(env *cli, l devenv.Layout, addr string) {
	w := env.stdout
	fmt.Fprintf(w, "Consilium development gateway on https://%s (embedded default, data in %s)\n\n", addr, l.Dir)
	fmt.Fprintf(w, "CA certificate (trust this):  %s\n", l.CAFile())
	fmt.Fprintf(w, "Server certificate and key:   %s, %s\n", l.ServerCert(), l.ServerKey())
	fmt.Fprintf(w, "Revocation list:              %s\n", l.CRLFile())
	fmt.Fprintf(w, "Storage keyring:              %s\n", l.KeyringFile())
	fmt.Fprintf(w, "Gateway signing key:          %s (public key %s)\n", l.SigningKey(), l.SigningPub())
	fmt.Fprintf(w, "Encrypted object store:       %s\n\n", l.StoreDir())
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "PRINCIPAL\tROLE\tORG\tCOUNTRY\tCERTIFICATE\tKEY\tAGE IDENTITY")
	for _, p := range devenv.Principals() {
		age := "-"
		if p.Role == certs.RoleSpecialist {
			age = l.AgeIdentity(p.ID)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", p.ID, p.Role, p.Org, p.Country, l.ClientCert(p.ID), l.ClientKey(p.ID), age)
	}
	tw.Flush()
	host, port, _ := net.SplitHostPort(addr)
	if host == "" || host == "0.0.0.0" || host == "::" {
		host = "127.0.0.1"
	}
	fmt.Fprintf(w, "\nTry it:\n  curl --cacert %s --cert %s --key %s https://%s/whoami\n\n",
		l.CAFile(), l.ClientCert("st-marys"), l.ClientKey("st-marys"), net.JoinHostPort(host, port))
}
