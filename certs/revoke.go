package certs

import (
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"math/big"
	"os"
	"path/filepath"
	"syscall"
	"time"
)

// crlValidity is how far ahead each CRL's NextUpdate lies. Servers re-read
// the file on change, so this only matters to outside relying parties.
const crlValidity = 30 * 24 * time.Hour

// ErrRevoked is returned (wrapped) by [ServerTLS] verification when a client
// presents a revoked certificate.
var ErrRevoked = errors.New("certs: certificate revoked")

// Revoke adds serial to the CA's revocation list and re-signs it. Running
// servers that use [NewServerTLS] pick the change up within their refresh
// interval. Revoking an already revoked serial is not an error.
func (a *Authority) Revoke(serial *big.Int) error {
	unlock, err := lockDir(a.dir)
	if err != nil {
		return err
	}
	defer unlock()

	crl, err := a.readCRL()
	if err != nil {
		return err
	}
	entries := crl.RevokedCertificateEntries
	for _, e := range entries {
		if e.SerialNumber.Cmp(serial) == 0 {
			return nil
		}
	}
	entries = append(entries, x509.RevocationListEntry{SerialNumber: serial, RevocationTime: a.now()})
	return a.writeCRL(entries, new(big.Int).Add(crl.Number, big.NewInt(1)))
}

// Revoked returns the revoked serial numbers.
func (a *Authority) Revoked() ([]*big.Int, error) {
	crl, err := a.readCRL()
	if err != nil {
		return nil, err
	}
	out := make([]*big.Int, 0, len(crl.RevokedCertificateEntries))
	for _, e := range crl.RevokedCertificateEntries {
		out = append(out, e.SerialNumber)
	}
	return out, nil
}

func (a *Authority) readCRL() (*x509.RevocationList, error) {
	data, err := os.ReadFile(filepath.Join(a.dir, CRLFile))
	if errors.Is(err, fs.ErrNotExist) {
		return &x509.RevocationList{Number: big.NewInt(0)}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("reading revocation list: %w", err)
	}
	return parseCRL(data, a.cert)
}

func (a *Authority) writeCRL(entries []x509.RevocationListEntry, number *big.Int) error {
	now := a.now()
	der, err := x509.CreateRevocationList(rand.Reader, &x509.RevocationList{
		Number:                    number,
		ThisUpdate:                now,
		NextUpdate:                now.Add(crlValidity),
		RevokedCertificateEntries: entries,
	}, a.cert, a.key)
	if err != nil {
		return fmt.Errorf("signing revocation list: %w", err)
	}
	data := pem.EncodeToMemory(&pem.Block{Type: "X509 CRL", Bytes: der})
	return writeFileAtomic(filepath.Join(a.dir, CRLFile), data, 0o644)
}

// parseCRL parses a PEM or DER CRL and checks that ca signed it.
func parseCRL(data []byte, ca *x509.Certificate) (*x509.RevocationList, error) {
	if b, _ := pem.Decode(data); b != nil {
		if b.Type != "X509 CRL" {
			return nil, fmt.Errorf("revocation list: unexpected PEM block %q", b.Type)
		}
		data = b.Bytes
	}
	crl, err := x509.ParseRevocationList(data)
	if err != nil {
		return nil, fmt.Errorf("parsing revocation list: %w", err)
	}
	if err := crl.CheckSignatureFrom(ca); err != nil {
		return nil, fmt.Errorf("revocation list is not signed by the CA: %w", err)
	}
	return crl, nil
}

// lockDir takes an exclusive advisory lock on the CA folder so two
// concurrent revocations cannot lose each other's entry.
func lockDir(dir string) (func(), error) {
	f, err := os.OpenFile(filepath.Join(dir, ".lock"), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, fmt.Errorf("locking CA folder: %w", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
		f.Close()
		return nil, fmt.Errorf("locking CA folder: %w", err)
	}
	return func() {
		syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
		f.Close()
	}, nil
}
