package certs

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"math/big"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

// DefaultCRLRefresh is how often a server re-reads its revocation list.
const DefaultCRLRefresh = 2 * time.Second

// ServerConfig says where a server finds its TLS material.
type ServerConfig struct {
	// CAFile is the CA certificate that client certificates must chain to.
	CAFile string `json:"ca_file"`
	// CertFile and KeyFile are the server's certificate and key.
	CertFile string `json:"cert_file"`
	KeyFile  string `json:"key_file"`
	// CRLFile is the CA's revocation list. It must exist at start (an
	// empty list is fine) and is re-read while running.
	CRLFile string `json:"crl_file"`
	// CRLRefresh is how often CRLFile is checked for changes. Default
	// [DefaultCRLRefresh].
	CRLRefresh time.Duration `json:"crl_refresh,omitempty"`
}

// Validate reports the first missing setting.
func (c ServerConfig) Validate() error {
	for _, f := range []struct{ name, v string }{
		{"CA certificate file", c.CAFile},
		{"server certificate file", c.CertFile},
		{"server key file", c.KeyFile},
		{"revocation list file", c.CRLFile},
	} {
		if f.v == "" {
			return fmt.Errorf("TLS: %s is not set", f.name)
		}
	}
	if c.CRLRefresh < 0 {
		return errors.New("TLS: CRL refresh interval must not be negative")
	}
	return nil
}

// ServerTLS holds a server's TLS configuration and keeps its view of
// revoked certificates current.
type ServerTLS struct {
	cfg     ServerConfig
	ca      *x509.Certificate
	pool    *x509.CertPool
	cert    tls.Certificate
	log     *slog.Logger
	revoked atomic.Pointer[revocationSet]
	mu      sync.Mutex // serialises reloads
	lastCRL []byte
}

type revocationSet struct {
	serials map[string]struct{}
	number  string
}

// NewServerTLS loads the CA, the server key pair and the revocation list.
// Call [ServerTLS.Watch] to follow revocations while running.
func NewServerTLS(cfg ServerConfig, log *slog.Logger) (*ServerTLS, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.CRLRefresh == 0 {
		cfg.CRLRefresh = DefaultCRLRefresh
	}
	ca, err := LoadCertificate(cfg.CAFile)
	if err != nil {
		return nil, fmt.Errorf("TLS CA: %w", err)
	}
	cert, err := tls.LoadX509KeyPair(cfg.CertFile, cfg.KeyFile)
	if err != nil {
		return nil, fmt.Errorf("TLS server certificate: %w", err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(ca)
	s := &ServerTLS{cfg: cfg, ca: ca, pool: pool, cert: cert, log: log.With("component", "tls")}
	if err := s.reload(); err != nil {
		return nil, err
	}
	return s, nil
}

// Config returns the server's TLS configuration: TLS 1.3 only; a client
// certificate is requested and, when given, must chain to the CA, be
// within its validity period, carry the client-auth usage, and not be
// revoked. Whether a route needs a certificate at all is the HTTP layer's
// decision (health probes do not).
func (s *ServerTLS) Config() *tls.Config {
	return &tls.Config{
		MinVersion:       tls.VersionTLS13,
		Certificates:     []tls.Certificate{s.cert},
		ClientAuth:       tls.VerifyClientCertIfGiven,
		ClientCAs:        s.pool,
		VerifyConnection: s.verifyConnection,
	}
}

func (s *ServerTLS) verifyConnection(cs tls.ConnectionState) error {
	if len(cs.PeerCertificates) == 0 {
		return nil
	}
	leaf := cs.PeerCertificates[0]
	if _, ok := s.revoked.Load().serials[leaf.SerialNumber.String()]; ok {
		s.log.Warn("refused revoked client certificate", "serial", leaf.SerialNumber.Text(16), "principal", leaf.Subject.CommonName)
		return fmt.Errorf("%w: serial %s", ErrRevoked, leaf.SerialNumber.Text(16))
	}
	return nil
}

// IsRevoked reports whether c is revoked in this server's current view
// of the revocation list.
func (s *ServerTLS) IsRevoked(c *x509.Certificate) bool {
	_, ok := s.revoked.Load().serials[c.SerialNumber.String()]
	return ok
}

// Watch re-reads the revocation list every CRLRefresh until ctx ends. A
// list that fails to parse or verify is logged and ignored: the previous
// list stays in force (revocations are never silently dropped).
func (s *ServerTLS) Watch(ctx context.Context) {
	t := time.NewTicker(s.cfg.CRLRefresh)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if err := s.reload(); err != nil {
				s.log.Error("revocation list not reloaded; keeping the previous one", "err", err)
			}
		}
	}
}

func (s *ServerTLS) reload() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	data, err := os.ReadFile(s.cfg.CRLFile)
	if err != nil {
		return fmt.Errorf("TLS revocation list: %w", err)
	}
	if s.revoked.Load() != nil && bytes.Equal(data, s.lastCRL) {
		return nil
	}
	crl, err := parseCRL(data, s.ca)
	if err != nil {
		return fmt.Errorf("TLS revocation list %s: %w", s.cfg.CRLFile, err)
	}
	if cur := s.revoked.Load(); cur != nil && crl.Number != nil && cur.number != "" {
		// A list older than the one in force would un-revoke serials.
		if old, ok := new(big.Int).SetString(cur.number, 10); ok && crl.Number.Cmp(old) < 0 {
			return fmt.Errorf("TLS revocation list %s has number %s, older than %s in force", s.cfg.CRLFile, crl.Number, cur.number)
		}
	}
	set := &revocationSet{serials: make(map[string]struct{}, len(crl.RevokedCertificateEntries))}
	if crl.Number != nil {
		set.number = crl.Number.String()
	}
	for _, e := range crl.RevokedCertificateEntries {
		set.serials[e.SerialNumber.String()] = struct{}{}
	}
	if s.revoked.Load() != nil {
		s.log.Info("revocation list reloaded", "revoked", len(set.serials), "crl_number", set.number)
	}
	s.revoked.Store(set)
	s.lastCRL = data
	return nil
}

// ClientTLSConfig builds a TLS 1.3 client configuration that presents the
// certificate in certFile/keyFile and trusts only the CA in caFile.
func ClientTLSConfig(caFile, certFile, keyFile string) (*tls.Config, error) {
	ca, err := LoadCertificate(caFile)
	if err != nil {
		return nil, fmt.Errorf("CA certificate: %w", err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(ca)
	cfg := &tls.Config{MinVersion: tls.VersionTLS13, RootCAs: pool}
	if certFile != "" || keyFile != "" {
		cert, err := tls.LoadX509KeyPair(certFile, keyFile)
		if err != nil {
			return nil, fmt.Errorf("client certificate: %w", err)
		}
		cfg.Certificates = []tls.Certificate{cert}
	}
	return cfg, nil
}
