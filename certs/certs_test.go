package certs_test

import (
	"crypto/x509"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/consilium/consilium/certs"
)

func TestPrincipalRoundTrip(t *testing.T) {
	ca, err := certs.Init(t.TempDir(), certs.InitOptions{})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		p    certs.Principal
	}{
		{"hospital", certs.Principal{ID: "st-marys", Org: "st-marys", Role: certs.RoleHospital, Country: "GB"}},
		{"case manager", certs.Principal{ID: "cm-ana", Org: "consilium", Role: certs.RoleCaseManager, Country: "GB"}},
		{"specialist", certs.Principal{ID: "dr-garcia", Org: "hospital-clinic", Role: certs.RoleSpecialist, Country: "ES", Specialty: "radiology", Languages: []string{"es", "en"}}},
		{"compliance", certs.Principal{ID: "co-lee", Org: "consilium", Role: certs.RoleCompliance, Country: "GB"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			iss, err := ca.IssueClient(tt.p, certs.IssueOptions{})
			if err != nil {
				t.Fatal(err)
			}
			c, err := certs.ParseCertificatePEM(iss.CertPEM)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := c.Verify(x509.VerifyOptions{Roots: pool(ca), KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
				t.Fatalf("issued certificate does not verify: %v", err)
			}
			got, err := certs.PrincipalFromCertificate(c)
			if err != nil {
				t.Fatal(err)
			}
			if got.ID != tt.p.ID || got.Org != tt.p.Org || got.Role != tt.p.Role || got.Country != tt.p.Country ||
				got.Specialty != tt.p.Specialty || len(got.Languages) != len(tt.p.Languages) {
				t.Fatalf("principal = %+v, want %+v", got, tt.p)
			}
			for i := range got.Languages {
				if got.Languages[i] != tt.p.Languages[i] {
					t.Fatalf("languages = %v, want %v", got.Languages, tt.p.Languages)
				}
			}
			if got := c.URIs; tt.p.Specialty != "" && (len(got) == 0 || got[0].String() != "urn:consilium:specialty:"+tt.p.Specialty) {
				t.Fatalf("SAN URIs = %v, want urn:consilium:specialty:%s first", got, tt.p.Specialty)
			}
		})
	}
}

func TestPrincipalValidate(t *testing.T) {
	ok := certs.Principal{ID: "st-marys", Org: "st-marys", Role: certs.RoleHospital, Country: "GB"}
	tests := []struct {
		name   string
		mutate func(*certs.Principal)
	}{
		{"empty id", func(p *certs.Principal) { p.ID = "" }},
		{"upper-case id", func(p *certs.Principal) { p.ID = "St-Marys" }},
		{"id with slash", func(p *certs.Principal) { p.ID = "a/b" }},
		{"empty org", func(p *certs.Principal) { p.Org = "" }},
		{"unknown role", func(p *certs.Principal) { p.Role = "admin" }},
		{"bad country", func(p *certs.Principal) { p.Country = "GBR" }},
		{"specialist without specialty", func(p *certs.Principal) { p.Role = certs.RoleSpecialist }},
		{"bad language", func(p *certs.Principal) { p.Languages = []string{"English"} }},
	}
	if err := ok.Validate(); err != nil {
		t.Fatalf("valid principal refused: %v", err)
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := ok
			tt.mutate(&p)
			if err := p.Validate(); !errors.Is(err, certs.ErrInvalidPrincipal) {
				t.Fatalf("Validate() = %v, want ErrInvalidPrincipal", err)
			}
		})
	}
}

func TestInitRefusesExistingCA(t *testing.T) {
	dir := t.TempDir()
	if _, err := certs.Init(dir, certs.InitOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := certs.Init(dir, certs.InitOptions{}); !errors.Is(err, certs.ErrExists) {
		t.Fatalf("second Init = %v, want ErrExists", err)
	}
	st, err := os.Stat(filepath.Join(dir, certs.CAKeyFile))
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o600 {
		t.Fatalf("CA key mode = %v, want 0600", st.Mode().Perm())
	}
	if _, err := certs.Load(dir); err != nil {
		t.Fatalf("Load after Init: %v", err)
	}
}

func TestRevokeIsCumulativeAndIdempotent(t *testing.T) {
	dir := t.TempDir()
	ca, err := certs.Init(dir, certs.InitOptions{})
	if err != nil {
		t.Fatal(err)
	}
	p := certs.Principal{ID: "st-marys", Org: "st-marys", Role: certs.RoleHospital, Country: "GB"}
	a, _ := ca.IssueClient(p, certs.IssueOptions{})
	b, _ := ca.IssueClient(p, certs.IssueOptions{})
	for _, s := range []*x509.Certificate{a.Certificate, b.Certificate, a.Certificate} {
		if err := ca.Revoke(s.SerialNumber); err != nil {
			t.Fatal(err)
		}
	}
	// A second process loading the folder sees the same list.
	again, err := certs.Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	got, err := again.Revoked()
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got[0].Cmp(a.Certificate.SerialNumber) != 0 || got[1].Cmp(b.Certificate.SerialNumber) != 0 {
		t.Fatalf("revoked = %v, want the two serials once each", got)
	}
}

func TestIssueServerSANs(t *testing.T) {
	ca, err := certs.Init(t.TempDir(), certs.InitOptions{})
	if err != nil {
		t.Fatal(err)
	}
	iss, err := ca.IssueServer([]string{"localhost", "127.0.0.1", "::1", "gw.example.org"}, certs.IssueOptions{Validity: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	c := iss.Certificate
	for _, h := range []string{"localhost", "127.0.0.1", "::1", "gw.example.org"} {
		if err := c.VerifyHostname(h); err != nil {
			t.Errorf("server certificate does not cover %s: %v", h, err)
		}
	}
	if _, err := c.Verify(x509.VerifyOptions{Roots: pool(ca), KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}); err != nil {
		t.Fatalf("server certificate does not verify: %v", err)
	}
	if _, err := ca.IssueServer(nil, certs.IssueOptions{}); err == nil {
		t.Fatal("IssueServer with no hosts succeeded")
	}
}

func pool(ca *certs.Authority) *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(ca.Certificate())
	return p
}
