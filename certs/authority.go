package certs

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"io/fs"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"time"
)

// File names inside a CA folder.
const (
	CAFile    = "ca.pem"
	CAKeyFile = "ca.key"
	CRLFile   = "crl.pem"
)

// Default validity periods.
const (
	DefaultCAValidity     = 10 * 365 * 24 * time.Hour
	DefaultClientValidity = 365 * 24 * time.Hour
	DefaultServerValidity = 365 * 24 * time.Hour
)

// ErrExists is returned by [Init] when the folder already holds a CA.
var ErrExists = errors.New("certs: a certificate authority already exists here")

// Authority is a certificate authority loaded from its folder.
type Authority struct {
	dir  string
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	now  func() time.Time
}

// Option adjusts an [Authority].
type Option func(*Authority)

// WithClock makes the authority use now instead of time.Now, for tests
// that need expired or not-yet-valid certificates.
func WithClock(now func() time.Time) Option { return func(a *Authority) { a.now = now } }

// InitOptions modify [Init].
type InitOptions struct {
	// Name is the CA's common name. Default "Consilium CA".
	Name string
	// Validity of the CA certificate. Default [DefaultCAValidity].
	Validity time.Duration
}

// Init creates a new CA (key, self-signed certificate and an empty
// revocation list) in dir, creating dir if needed. It returns [ErrExists]
// if dir already holds a CA certificate or key.
func Init(dir string, opts InitOptions, options ...Option) (*Authority, error) {
	a := &Authority{dir: dir, now: time.Now}
	for _, o := range options {
		o(a)
	}
	if opts.Name == "" {
		opts.Name = "Consilium CA"
	}
	if opts.Validity == 0 {
		opts.Validity = DefaultCAValidity
	}
	for _, f := range []string{CAFile, CAKeyFile} {
		if _, err := os.Stat(filepath.Join(dir, f)); err == nil {
			return nil, fmt.Errorf("%w: %s", ErrExists, filepath.Join(dir, f))
		} else if !errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("checking %s: %w", dir, err)
		}
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("creating CA folder: %w", err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generating CA key: %w", err)
	}
	serial, err := newSerial()
	if err != nil {
		return nil, err
	}
	now := a.now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: opts.Name, Organization: []string{"Consilium"}},
		NotBefore:             now.Add(-5 * time.Minute),
		NotAfter:              now.Add(opts.Validity),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, fmt.Errorf("signing CA certificate: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("parsing CA certificate: %w", err)
	}
	keyPEM, err := encodeKey(key)
	if err != nil {
		return nil, err
	}
	if err := writeFileAtomic(filepath.Join(dir, CAKeyFile), keyPEM, 0o600); err != nil {
		return nil, err
	}
	if err := writeFileAtomic(filepath.Join(dir, CAFile), encodeCert(der), 0o644); err != nil {
		return nil, err
	}
	a.cert, a.key = cert, key
	if err := a.writeCRL(nil, big.NewInt(1)); err != nil {
		return nil, err
	}
	return a, nil
}

// Load reads the CA in dir.
func Load(dir string, options ...Option) (*Authority, error) {
	a := &Authority{dir: dir, now: time.Now}
	for _, o := range options {
		o(a)
	}
	cert, err := LoadCertificate(filepath.Join(dir, CAFile))
	if err != nil {
		return nil, err
	}
	key, err := LoadKey(filepath.Join(dir, CAKeyFile))
	if err != nil {
		return nil, err
	}
	pub, ok := cert.PublicKey.(*ecdsa.PublicKey)
	if !ok || !pub.Equal(&key.PublicKey) {
		return nil, fmt.Errorf("CA key %s does not match certificate %s", filepath.Join(dir, CAKeyFile), filepath.Join(dir, CAFile))
	}
	a.cert, a.key = cert, key
	return a, nil
}

// Certificate returns the CA certificate.
func (a *Authority) Certificate() *x509.Certificate { return a.cert }

// Dir returns the CA folder.
func (a *Authority) Dir() string { return a.dir }

// Issued is a freshly issued certificate with its private key, both PEM.
type Issued struct {
	Certificate *x509.Certificate
	CertPEM     []byte
	KeyPEM      []byte
}

// WriteFiles writes the certificate to certPath (0644) and the key to
// keyPath (0600), atomically.
func (i *Issued) WriteFiles(certPath, keyPath string) error {
	if err := writeFileAtomic(keyPath, i.KeyPEM, 0o600); err != nil {
		return err
	}
	return writeFileAtomic(certPath, i.CertPEM, 0o644)
}

// IssueOptions modify certificate issuance.
type IssueOptions struct {
	// Validity of the certificate. Defaults to [DefaultClientValidity] or
	// [DefaultServerValidity]. It is cut to the CA's own expiry.
	Validity time.Duration
	// NotBefore overrides the start of validity (default: now minus five
	// minutes of clock skew).
	NotBefore time.Time
}

// IssueClient issues a client certificate for p, which must be valid.
func (a *Authority) IssueClient(p Principal, opts IssueOptions) (*Issued, error) {
	if err := p.Validate(); err != nil {
		return nil, err
	}
	if opts.Validity == 0 {
		opts.Validity = DefaultClientValidity
	}
	tmpl := &x509.Certificate{
		Subject: pkix.Name{
			CommonName:         p.ID,
			Organization:       []string{p.Org},
			OrganizationalUnit: []string{string(p.Role)},
			Country:            []string{p.Country},
		},
		URIs:        p.uris(),
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	return a.issue(tmpl, opts)
}

// IssueServer issues a server certificate for hosts (DNS names or IP
// addresses). The first host is the common name.
func (a *Authority) IssueServer(hosts []string, opts IssueOptions) (*Issued, error) {
	if len(hosts) == 0 {
		return nil, errors.New("a server certificate needs at least one host name or IP address")
	}
	if opts.Validity == 0 {
		opts.Validity = DefaultServerValidity
	}
	tmpl := &x509.Certificate{
		Subject:     pkix.Name{CommonName: hosts[0], Organization: []string{"Consilium"}},
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	for _, h := range hosts {
		if ip := net.ParseIP(h); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, h)
		}
	}
	return a.issue(tmpl, opts)
}

func (a *Authority) issue(tmpl *x509.Certificate, opts IssueOptions) (*Issued, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generating key: %w", err)
	}
	serial, err := newSerial()
	if err != nil {
		return nil, err
	}
	tmpl.SerialNumber = serial
	tmpl.NotBefore = opts.NotBefore
	if tmpl.NotBefore.IsZero() {
		tmpl.NotBefore = a.now().Add(-5 * time.Minute)
	}
	tmpl.NotAfter = tmpl.NotBefore.Add(opts.Validity)
	if tmpl.NotAfter.After(a.cert.NotAfter) {
		tmpl.NotAfter = a.cert.NotAfter
	}
	tmpl.BasicConstraintsValid = true
	der, err := x509.CreateCertificate(rand.Reader, tmpl, a.cert, &key.PublicKey, a.key)
	if err != nil {
		return nil, fmt.Errorf("signing certificate: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("parsing issued certificate: %w", err)
	}
	keyPEM, err := encodeKey(key)
	if err != nil {
		return nil, err
	}
	return &Issued{Certificate: cert, CertPEM: encodeCert(der), KeyPEM: keyPEM}, nil
}

// newSerial returns a random 128-bit positive serial number.
func newSerial() (*big.Int, error) {
	s, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, fmt.Errorf("generating serial number: %w", err)
	}
	return s.Add(s, big.NewInt(1)), nil
}
