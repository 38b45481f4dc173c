package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/consilium/consilium/audit"
	"github.com/consilium/consilium/certs"
	"github.com/consilium/consilium/gateway"
	"github.com/consilium/consilium/storage"
)

// serveConfig is the whole configuration of `consilium serve` outside dev
// mode: a JSON file (--config) overridden by CONSILIUM_* environment
// variables. Each package owns its section type and its defaults.
type serveConfig struct {
	Gateway gateway.Config     `json:"gateway"`
	TLS     certs.ServerConfig `json:"tls"`
	Storage storageConfig      `json:"storage"`
	// KeyringFile holds the storage key-encryption keys (0600).
	KeyringFile string `json:"keyring_file"`
	// SigningKeyFile is the gateway's minisign secret key, used to sign
	// packet manifests and audit checkpoints.
	SigningKeyFile string `json:"signing_key_file"`
	// SigningKeyPasswordFile, when set, holds the password of an encrypted
	// signing key.
	SigningKeyPasswordFile string    `json:"signing_key_password_file,omitempty"`
	Log                    logConfig `json:"log"`
	// Audit configures the audit trail, kept in the storage backend
	// (unencrypted: it holds pseudonyms only) under audit/.
	Audit audit.Config `json:"audit"`
}

// storageConfig selects and configures the storage backend.
type storageConfig struct {
	// Backend is "fs" (a local folder) or "minio".
	Backend string `json:"backend"`
	// Dir is the filesystem backend's folder.
	Dir string `json:"dir,omitempty"`
	// MinIO configures the MinIO backend. Its secret key is never read
	// from the file: it comes from CONSILIUM_MINIO_SECRET_KEY or the file
	// named by MinIOSecretKeyFile / CONSILIUM_MINIO_SECRET_KEY_FILE.
	MinIO              storage.MinIOConfig `json:"minio"`
	MinIOSecretKeyFile string              `json:"minio_secret_key_file,omitempty"`
}

type logConfig struct {
	// Level is debug, info, warn or error. Default info.
	Level string `json:"level,omitempty"`
	// Format is json or text. Default json.
	Format string `json:"format,omitempty"`
}

// envVar documents one environment variable and where it lands.
type envVar struct {
	name string
	help string
	set  func(c *serveConfig, v string) error
}

// envVars lists every CONSILIUM_* variable `serve` reads.
func envVars() []envVar {
	str := func(p func(*serveConfig) *string) func(*serveConfig, string) error {
		return func(c *serveConfig, v string) error { *p(c) = v; return nil }
	}
	boolean := func(p func(*serveConfig) *bool) func(*serveConfig, string) error {
		return func(c *serveConfig, v string) error {
			b, err := strconv.ParseBool(v)
			if err != nil {
				return fmt.Errorf("want true or false, got %q", v)
			}
			*p(c) = b
			return nil
		}
	}
	return []envVar{
		{"CONSILIUM_ADDR", "listen address host:port (default 127.0.0.1:8443)", str(func(c *serveConfig) *string { return &c.Gateway.Addr })},
		{"CONSILIUM_MAX_BODY_BYTES", "bound on JSON request bodies (default 1048576)", func(c *serveConfig, v string) error {
			n, err := strconv.ParseInt(v, 10, 64)
			if err != nil {
				return fmt.Errorf("want a byte count, got %q", v)
			}
			c.Gateway.MaxBodyBytes = n
			return nil
		}},
		{"CONSILIUM_TLS_CA", "CA certificate that client certificates chain to", str(func(c *serveConfig) *string { return &c.TLS.CAFile })},
		{"CONSILIUM_TLS_CERT", "server certificate", str(func(c *serveConfig) *string { return &c.TLS.CertFile })},
		{"CONSILIUM_TLS_KEY", "server private key", str(func(c *serveConfig) *string { return &c.TLS.KeyFile })},
		{"CONSILIUM_TLS_CRL", "CA revocation list, re-read while running", str(func(c *serveConfig) *string { return &c.TLS.CRLFile })},
		{"CONSILIUM_STORAGE", "storage backend: fs or minio", str(func(c *serveConfig) *string { return &c.Storage.Backend })},
		{"CONSILIUM_STORAGE_DIR", "filesystem backend folder", str(func(c *serveConfig) *string { return &c.Storage.Dir })},
		{"CONSILIUM_MINIO_ENDPOINT", "MinIO host:port", str(func(c *serveConfig) *string { return &c.Storage.MinIO.Endpoint })},
		{"CONSILIUM_MINIO_BUCKET", "MinIO bucket (created if missing)", str(func(c *serveConfig) *string { return &c.Storage.MinIO.Bucket })},
		{"CONSILIUM_MINIO_ACCESS_KEY", "MinIO access key", str(func(c *serveConfig) *string { return &c.Storage.MinIO.AccessKey })},
		{"CONSILIUM_MINIO_SECRET_KEY", "MinIO secret key (or use CONSILIUM_MINIO_SECRET_KEY_FILE)", str(func(c *serveConfig) *string { return &c.Storage.MinIO.SecretKey })},
		{"CONSILIUM_MINIO_SECRET_KEY_FILE", "file holding the MinIO secret key", str(func(c *serveConfig) *string { return &c.Storage.MinIOSecretKeyFile })},
		{"CONSILIUM_MINIO_TLS", "use HTTPS to reach MinIO (true/false)", boolean(func(c *serveConfig) *bool { return &c.Storage.MinIO.UseTLS })},
		{"CONSILIUM_MINIO_OBJECT_LOCK", "create the bucket with object lock (true/false)", boolean(func(c *serveConfig) *bool { return &c.Storage.MinIO.ObjectLock })},
		{"CONSILIUM_KEYRING_FILE", "storage keyring (key-encryption keys)", str(func(c *serveConfig) *string { return &c.KeyringFile })},
		{"CONSILIUM_SIGNING_KEY_FILE", "gateway minisign secret key", str(func(c *serveConfig) *string { return &c.SigningKeyFile })},
		{"CONSILIUM_SIGNING_KEY_PASSWORD_FILE", "file holding the signing key's password, if it is encrypted", str(func(c *serveConfig) *string { return &c.SigningKeyPasswordFile })},
		{"CONSILIUM_AUDIT_RETENTION_MODE", "audit retention: governance, compliance or none (default governance where the store has retention: the filesystem, or MinIO with object lock)", str(func(c *serveConfig) *string { return &c.Audit.RetentionMode })},
		{"CONSILIUM_AUDIT_RETENTION_DAYS", "days audit segments stay locked (default 2190)", func(c *serveConfig, v string) error {
			n, err := strconv.Atoi(v)
			if err != nil {
				return fmt.Errorf("want a number of days, got %q", v)
			}
			c.Audit.RetentionDays = n
			return nil
		}},
		{"CONSILIUM_AUDIT_CHECKPOINT_EVERY", "sign an audit checkpoint after this many entries (default 1000)", func(c *serveConfig, v string) error {
			n, err := strconv.Atoi(v)
			if err != nil {
				return fmt.Errorf("want a number of entries, got %q", v)
			}
			c.Audit.CheckpointEvery = n
			return nil
		}},
		{"CONSILIUM_AUDIT_CHECKPOINT_INTERVAL", "sign an audit checkpoint this often while entries arrive (default 1m)", func(c *serveConfig, v string) error {
			d, err := time.ParseDuration(v)
			if err != nil {
				return fmt.Errorf("want a duration such as 30s, got %q", v)
			}
			c.Audit.CheckpointInterval = d
			return nil
		}},
		{"CONSILIUM_AUDIT_SOURCE", "name of this gateway instance in audit entries (default host name and a random suffix)", str(func(c *serveConfig) *string { return &c.Audit.Source })},
		{"CONSILIUM_LOG_LEVEL", "debug, info, warn or error (default info)", str(func(c *serveConfig) *string { return &c.Log.Level })},
		{"CONSILIUM_LOG_FORMAT", "json or text (default json)", str(func(c *serveConfig) *string { return &c.Log.Format })},
	}
}

// loadServeConfig reads path (if not empty) and applies the environment.
func loadServeConfig(path string, getenv func(string) string) (serveConfig, error) {
	var c serveConfig
	if path != "" {
		data, err := os.ReadFile(path)
		if err != nil {
			return c, fmt.Errorf("reading configuration: %w", err)
		}
		dec := json.NewDecoder(bytes.NewReader(data))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&c); err != nil {
			return c, fmt.Errorf("configuration %s: %w", path, err)
		}
		if c.Storage.MinIO.SecretKey != "" {
			return c, fmt.Errorf("configuration %s: put the MinIO secret key in a file (minio_secret_key_file) or CONSILIUM_MINIO_SECRET_KEY, not in the configuration", path)
		}
	}
	for _, e := range envVars() {
		if v := getenv(e.name); v != "" {
			if err := e.set(&c, v); err != nil {
				return c, fmt.Errorf("%s: %w", e.name, err)
			}
		}
	}
	if c.Storage.MinIO.SecretKey == "" && c.Storage.MinIOSecretKeyFile != "" {
		data, err := os.ReadFile(c.Storage.MinIOSecretKeyFile)
		if err != nil {
			return c, fmt.Errorf("MinIO secret key: %w", err)
		}
		c.Storage.MinIO.SecretKey = strings.TrimSpace(string(data))
	}
	return c, nil
}

// validate reports every missing or invalid setting at once, naming the
// environment variable that sets it, so an operator fixes them in one go.
func (c serveConfig) validate() error {
	var problems []string
	add := func(format string, a ...any) { problems = append(problems, fmt.Sprintf(format, a...)) }
	if err := c.Gateway.Validate(); err != nil {
		add("%v", err)
	}
	for _, f := range []struct{ v, env, what string }{
		{c.TLS.CAFile, "CONSILIUM_TLS_CA", "CA certificate"},
		{c.TLS.CertFile, "CONSILIUM_TLS_CERT", "server certificate"},
		{c.TLS.KeyFile, "CONSILIUM_TLS_KEY", "server key"},
		{c.TLS.CRLFile, "CONSILIUM_TLS_CRL", "revocation list"},
		{c.KeyringFile, "CONSILIUM_KEYRING_FILE", "storage keyring"},
		{c.SigningKeyFile, "CONSILIUM_SIGNING_KEY_FILE", "signing key"},
	} {
		if f.v == "" {
			add("%s is not set (%s)", f.what, f.env)
		} else if _, err := os.Stat(f.v); err != nil {
			add("%s %s: %v (%s)", f.what, f.v, errors.Unwrap(err), f.env)
		}
	}
	switch c.Storage.Backend {
	case "fs":
		if c.Storage.Dir == "" {
			add("filesystem storage folder is not set (CONSILIUM_STORAGE_DIR)")
		}
	case "minio":
		if err := c.Storage.MinIO.Validate(); err != nil {
			add("%v (CONSILIUM_MINIO_*)", err)
		}
	case "":
		add("storage backend is not set (CONSILIUM_STORAGE=fs or minio)")
	default:
		add("storage backend %q is neither fs nor minio (CONSILIUM_STORAGE)", c.Storage.Backend)
	}
	if err := c.Audit.Validate(); err != nil {
		add("%v (CONSILIUM_AUDIT_*)", err)
	}
	if m := c.Audit.RetentionMode; c.Storage.Backend == "minio" && !c.Storage.MinIO.ObjectLock && (m == audit.RetentionGovernance || m == audit.RetentionCompliance) {
		add("audit retention %s needs a bucket with object lock (CONSILIUM_MINIO_OBJECT_LOCK=true), or CONSILIUM_AUDIT_RETENTION_MODE=none", m)
	}
	if _, err := parseLevel(c.Log.Level); err != nil {
		add("%v (CONSILIUM_LOG_LEVEL)", err)
	}
	if f := c.Log.Format; f != "" && f != "json" && f != "text" {
		add("log format %q is neither json nor text (CONSILIUM_LOG_FORMAT)", f)
	}
	if len(problems) > 0 {
		return fmt.Errorf("the configuration is incomplete:\n  - %s\nRun 'consilium serve -h' for every setting, or 'consilium serve --dev' for the embedded default", strings.Join(problems, "\n  - "))
	}
	return nil
}

func parseLevel(s string) (slog.Level, error) {
	var l slog.Level
	if s == "" {
		return slog.LevelInfo, nil
	}
	if err := l.UnmarshalText([]byte(s)); err != nil {
		return l, fmt.Errorf("log level %q is not debug, info, warn or error", s)
	}
	return l, nil
}

func newLogger(env *cli, c logConfig) *slog.Logger {
	level, _ := parseLevel(c.Level) // validated before
	opts := &slog.HandlerOptions{Level: level}
	if c.Format == "text" {
		return slog.New(slog.NewTextHandler(env.stderr, opts))
	}
	return slog.New(slog.NewJSONHandler(env.stderr, opts))
}
