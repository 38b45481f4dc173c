// Package devenv creates and reuses the folder behind `consilium serve
// --dev`, the embedded default: a development CA, a server certificate, a
// client certificate for each demo principal, the specialists' age
// identities, the storage keyring and the gateway's signing key. Tests use
// the same code, so what a newcomer runs is what the tests exercise.
//
// Start with [Ensure]; [Layout] says where everything is.
package devenv

import (
	"bytes"
	"crypto/rand"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"slices"
	"time"

	"filippo.io/age"

	"github.com/consilium/consilium/cases"
	"github.com/consilium/consilium/certs"
	"github.com/consilium/consilium/internal/keyfiles"
	"github.com/consilium/consilium/storage"
)

// Principals returns the demo principals, in a stable order.
func Principals() []certs.Principal {
	return []certs.Principal{
		{ID: "st-marys", Org: "st-marys", Role: certs.RoleHospital, Country: "GB"},
		{ID: "city-general", Org: "city-general", Role: certs.RoleHospital, Country: "GB"},
		{ID: "cm-ana", Org: "consilium", Role: certs.RoleCaseManager, Country: "GB"},
		{ID: "dr-okafor", Org: "dr-okafor", Role: certs.RoleSpecialist, Country: "US", Specialty: "oncology", Languages: []string{"en"}},
		{ID: "dr-garcia", Org: "dr-garcia", Role: certs.RoleSpecialist, Country: "ES", Specialty: "radiology", Languages: []string{"es", "en"}},
		{ID: "co-lee", Org: "consilium", Role: certs.RoleCompliance, Country: "GB"},
	}
}

// Layout names every file of a development folder.
type Layout struct{ Dir string }

func (l Layout) pki(name string) string  { return filepath.Join(l.Dir, "pki", name) }
func (l Layout) keys(name string) string { return filepath.Join(l.Dir, "keys", name) }

// PKIDir is the CA folder (see package certs).
func (l Layout) PKIDir() string { return filepath.Join(l.Dir, "pki") }

// CAFile is the CA certificate clients trust.
func (l Layout) CAFile() string { return l.pki(certs.CAFile) }

// CRLFile is the CA's revocation list.
func (l Layout) CRLFile() string { return l.pki(certs.CRLFile) }

// ServerCert is the gateway's certificate.
func (l Layout) ServerCert() string { return l.pki("server.pem") }

// ServerKey is the gateway's private key.
func (l Layout) ServerKey() string { return l.pki("server.key") }

// ClientCert is the client certificate of principal id.
func (l Layout) ClientCert(id string) string { return l.pki(id + ".pem") }

// ClientKey is the client key of principal id.
func (l Layout) ClientKey(id string) string { return l.pki(id + ".key") }

// KeysDir holds the keyring, the signing key and the age identities.
func (l Layout) KeysDir() string { return filepath.Join(l.Dir, "keys") }

// SigningKey is the gateway's minisign secret key (unencrypted, 0600).
func (l Layout) SigningKey() string { return l.keys("gateway.key") }

// SigningPub is the gateway's minisign public key, which specialists use
// to verify packet manifests.
func (l Layout) SigningPub() string { return l.keys("gateway.pub") }

// KeyringFile is the storage keyring (key-encryption keys, 0600).
func (l Layout) KeyringFile() string { return l.keys("keyring.json") }

// AgeIdentity is specialist id's age identity file (age-keygen format).
func (l Layout) AgeIdentity(id string) string { return l.keys(id + ".agekey") }

// StoreDir is the filesystem backend's folder.
func (l Layout) StoreDir() string { return filepath.Join(l.Dir, "store") }

// Ensure creates what is missing in dir and reuses what is there. hosts are
// extra names or addresses the server certificate must cover besides
// localhost, 127.0.0.1 and ::1. It returns the files it created.
func Ensure(dir string, hosts []string) (Layout, []string, error) {
	l := Layout{Dir: dir}
	var created []string
	for _, d := range []string{dir, l.PKIDir(), l.KeysDir(), l.StoreDir()} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return l, nil, fmt.Errorf("creating %s: %w", d, err)
		}
	}

	ca, err := certs.Load(l.PKIDir())
	if errors.Is(err, fs.ErrNotExist) {
		ca, err = certs.Init(l.PKIDir(), certs.InitOptions{Name: "Consilium development CA"})
		created = append(created, l.CAFile())
	}
	if err != nil {
		return l, nil, fmt.Errorf("development CA: %w", err)
	}

	hosts = append([]string{"localhost", "127.0.0.1", "::1"}, hosts...)
	if !certCovers(l.ServerCert(), l.ServerKey(), hosts) {
		iss, err := ca.IssueServer(hosts, certs.IssueOptions{})
		if err != nil {
			return l, nil, fmt.Errorf("server certificate: %w", err)
		}
		if err := iss.WriteFiles(l.ServerCert(), l.ServerKey()); err != nil {
			return l, nil, err
		}
		created = append(created, l.ServerCert())
	}

	for _, p := range Principals() {
		if usable(l.ClientCert(p.ID), l.ClientKey(p.ID)) {
			continue
		}
		iss, err := ca.IssueClient(p, certs.IssueOptions{})
		if err != nil {
			return l, nil, fmt.Errorf("client certificate for %s: %w", p.ID, err)
		}
		if err := iss.WriteFiles(l.ClientCert(p.ID), l.ClientKey(p.ID)); err != nil {
			return l, nil, err
		}
		created = append(created, l.ClientCert(p.ID))
	}

	for _, p := range Principals() {
		if p.Role != certs.RoleSpecialist {
			continue
		}
		if ok, err := exists(l.AgeIdentity(p.ID)); err != nil {
			return l, nil, err
		} else if ok {
			continue
		}
		if _, err := keyfiles.WriteAgeIdentity(l.AgeIdentity(p.ID)); err != nil {
			return l, nil, fmt.Errorf("age identity for %s: %w", p.ID, err)
		}
		created = append(created, l.AgeIdentity(p.ID))
	}

	if ok, err := exists(l.SigningKey()); err != nil {
		return l, nil, err
	} else if !ok {
		if err := keyfiles.WriteSigningKey(l.SigningKey(), l.SigningPub()); err != nil {
			return l, nil, fmt.Errorf("signing key: %w", err)
		}
		created = append(created, l.SigningKey(), l.SigningPub())
	}
	if ok, err := exists(l.KeyringFile()); err != nil {
		return l, nil, err
	} else if !ok {
		kr, err := storage.GenerateKeyring(rand.Reader)
		if err != nil {
			return l, nil, err
		}
		if err := kr.Save(l.KeyringFile()); err != nil {
			return l, nil, err
		}
		created = append(created, l.KeyringFile())
	}
	return l, created, nil
}

// certCovers reports whether the certificate at certPath exists, has a key,
// is valid for at least another day, and covers every host.
func certCovers(certPath, keyPath string, hosts []string) bool {
	if !usable(certPath, keyPath) {
		return false
	}
	c, err := certs.LoadCertificate(certPath)
	if err != nil {
		return false
	}
	for _, h := range hosts {
		if ip := net.ParseIP(h); ip != nil {
			if !slices.ContainsFunc(c.IPAddresses, ip.Equal) {
				return false
			}
		} else if c.VerifyHostname(h) != nil {
			return false
		}
	}
	return true
}

// usable reports whether a certificate and its key exist and the
// certificate is valid for at least another day.
func usable(certPath, keyPath string) bool {
	c, err := certs.LoadCertificate(certPath)
	if err != nil {
		return false
	}
	if _, err := certs.LoadKey(keyPath); err != nil {
		return false
	}
	return time.Until(c.NotAfter) > 24*time.Hour
}

func exists(path string) (bool, error) {
	_, err := os.Stat(path)
	switch {
	case err == nil:
		return true, nil
	case errors.Is(err, fs.ErrNotExist):
		return false, nil
	default:
		return false, fmt.Errorf("checking %s: %w", path, err)
	}
}

// Specialists returns the directory entries of the demo specialists: who
// they are and the recipient of their age identity in l. The embedded
// default registers them at start, so packets can be built for them at
// once.
func Specialists(l Layout) ([]cases.Specialist, error) {
	var out []cases.Specialist
	for _, p := range Principals() {
		if p.Role != certs.RoleSpecialist {
			continue
		}
		data, err := os.ReadFile(l.AgeIdentity(p.ID))
		if err != nil {
			return nil, fmt.Errorf("age identity of %s: %w", p.ID, err)
		}
		ids, err := age.ParseIdentities(bytes.NewReader(data))
		if err != nil || len(ids) != 1 {
			return nil, fmt.Errorf("age identity of %s: want one X25519 identity", p.ID)
		}
		x, ok := ids[0].(*age.X25519Identity)
		if !ok {
			return nil, fmt.Errorf("age identity of %s: not an X25519 identity", p.ID)
		}
		out = append(out, cases.Specialist{
			ID: p.ID, Org: p.Org, Country: p.Country, Specialty: p.Specialty, Languages: p.Languages,
			Recipient: x.Recipient().String(), Updated: time.Now().UTC(),
		})
	}
	return out, nil
}
