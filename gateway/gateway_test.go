package gateway_test

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/consilium/consilium/certs"
	"github.com/consilium/consilium/gateway"
	"github.com/consilium/consilium/gateway/gatewaytest"
	"github.com/consilium/consilium/internal/devenv"
)

func TestWhoamiPerRole(t *testing.T) {
	g := gatewaytest.Start(t, nil, gatewaytest.Config{})
	for _, want := range devenv.Principals() {
		t.Run(want.ID, func(t *testing.T) {
			resp, err := g.Client(t, want.ID).Get(g.URL + "/whoami")
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("status %d", resp.StatusCode)
			}
			if resp.TLS == nil || resp.TLS.Version != tls.VersionTLS13 {
				t.Fatalf("connection is not TLS 1.3: %+v", resp.TLS)
			}
			if resp.Header.Get("X-Request-Id") == "" {
				t.Error("no X-Request-Id header")
			}
			var got certs.Principal
			if err := json.NewDecoder(resp.Body).Decode(&got); err != nil {
				t.Fatal(err)
			}
			gotJSON, _ := json.Marshal(got)
			wantJSON, _ := json.Marshal(want)
			if string(gotJSON) != string(wantJSON) {
				t.Fatalf("whoami = %s, want %s", gotJSON, wantJSON)
			}
		})
	}
}

func TestRefusedCallers(t *testing.T) {
	g := gatewaytest.Start(t, nil, gatewaytest.Config{})

	t.Run("no certificate", func(t *testing.T) {
		c := g.AnonymousClient(t)
		for _, path := range []string{"/healthz", "/readyz"} {
			resp := get(t, c, g.URL+path)
			if resp.StatusCode != http.StatusOK {
				t.Errorf("%s without a certificate: status %d, want 200", path, resp.StatusCode)
			}
		}
		for _, path := range []string{"/whoami", "/metrics", "/no-such-route"} {
			resp := get(t, c, g.URL+path)
			if resp.StatusCode != http.StatusUnauthorized {
				t.Errorf("%s without a certificate: status %d, want 401", path, resp.StatusCode)
			}
		}
	})

	t.Run("foreign CA", func(t *testing.T) {
		other, err := certs.Init(t.TempDir(), certs.InitOptions{Name: "Someone else's CA"})
		if err != nil {
			t.Fatal(err)
		}
		iss, err := other.IssueClient(devenv.Principals()[0], certs.IssueOptions{})
		if err != nil {
			t.Fatal(err)
		}
		dir := t.TempDir()
		if err := iss.WriteFiles(dir+"/c.pem", dir+"/c.key"); err != nil {
			t.Fatal(err)
		}
		expectHandshakeRefused(t, forcedClient(t, g, dir+"/c.pem", dir+"/c.key"), g.URL+"/whoami")
	})

	t.Run("expired", func(t *testing.T) {
		iss, err := g.CA.IssueClient(devenv.Principals()[0], certs.IssueOptions{
			NotBefore: time.Now().Add(-48 * time.Hour), Validity: 24 * time.Hour,
		})
		if err != nil {
			t.Fatal(err)
		}
		dir := t.TempDir()
		if err := iss.WriteFiles(dir+"/c.pem", dir+"/c.key"); err != nil {
			t.Fatal(err)
		}
		expectHandshakeRefused(t, forcedClient(t, g, dir+"/c.pem", dir+"/c.key"), g.URL+"/whoami")
	})

	t.Run("server certificate used as client", func(t *testing.T) {
		// Missing the client-auth usage: refused at the handshake.
		expectHandshakeRefused(t, forcedClient(t, g, g.Layout.ServerCert(), g.Layout.ServerKey()), g.URL+"/whoami")
	})
}

func TestRevokedWhileRunning(t *testing.T) {
	g := gatewaytest.Start(t, nil, gatewaytest.Config{})
	iss, err := g.CA.IssueClient(devenv.Principals()[0], certs.IssueOptions{})
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if err := iss.WriteFiles(dir+"/c.pem", dir+"/c.key"); err != nil {
		t.Fatal(err)
	}
	c := g.ClientWithFiles(t, dir+"/c.pem", dir+"/c.key")
	if resp := get(t, c, g.URL+"/whoami"); resp.StatusCode != http.StatusOK {
		t.Fatalf("before revocation: status %d", resp.StatusCode)
	}
	// Revoke through a second load of the CA folder, as `consilium certs
	// revoke` does from another process.
	ca, err := certs.Load(g.Layout.PKIDir())
	if err != nil {
		t.Fatal(err)
	}
	if err := ca.Revoke(iss.Certificate.SerialNumber); err != nil {
		t.Fatal(err)
	}
	revokedAt := time.Now()
	deadline := revokedAt.Add(5 * time.Second)
	for !g.TLS.IsRevoked(iss.Certificate) {
		if time.Now().After(deadline) {
			t.Fatal("the running server did not pick up the revocation within 5s")
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Logf("revocation in force after %v", time.Since(revokedAt).Round(time.Millisecond))
	// The kept-alive connection is refused per request...
	if resp := get(t, c, g.URL+"/whoami"); resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("revoked certificate on an open connection: status %d, want 401", resp.StatusCode)
	}
	// ...and a new connection is refused at the handshake.
	expectHandshakeRefused(t, forcedClient(t, g, dir+"/c.pem", dir+"/c.key"), g.URL+"/whoami")
	// Other principals are unaffected.
	if resp := get(t, g.Client(t, "st-marys"), g.URL+"/whoami"); resp.StatusCode != http.StatusOK {
		t.Fatalf("unrevoked principal: status %d", resp.StatusCode)
	}
}

func TestLimitsAndErrors(t *testing.T) {
	g := gatewaytest.Start(t, nil, gatewaytest.Config{Gateway: gateway.Config{MaxBodyBytes: 1024}})
	c := g.Client(t, "st-marys")

	resp := get(t, c, g.URL+"/no-such-route")
	if resp.StatusCode != http.StatusNotFound {
		t.Fatalf("unknown route: status %d", resp.StatusCode)
	}
	var body struct {
		Error     string `json:"error"`
		RequestID string `json:"request_id"`
	}
	if err := json.Unmarshal(resp.body, &body); err != nil || body.Error == "" || body.RequestID == "" {
		t.Fatalf("error body %q is not {error, request_id}", resp.body)
	}

	resp = get(t, c, g.URL+"/metrics")
	if resp.StatusCode != http.StatusForbidden || !strings.Contains(string(resp.body), "reasons") {
		t.Fatalf("metrics as a hospital: status %d %s, want 403 with reasons", resp.StatusCode, resp.body)
	}
	resp = get(t, g.Client(t, "co-lee"), g.URL+"/metrics")
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(resp.body), "consilium_http_requests_total") {
		t.Fatalf("metrics: status %d, body lacks consilium_http_requests_total", resp.StatusCode)
	}
	if strings.Contains(string(resp.body), "no-such-route") {
		t.Fatal("metrics carry a concrete path instead of the route pattern")
	}
}

func TestSlowHeadersAreCut(t *testing.T) {
	g := gatewaytest.Start(t, nil, gatewaytest.Config{Gateway: gateway.Config{ReadHeaderTimeout: 300 * time.Millisecond}})
	cfg, err := certs.ClientTLSConfig(g.Layout.CAFile(), g.Layout.ClientCert("st-marys"), g.Layout.ClientKey("st-marys"))
	if err != nil {
		t.Fatal(err)
	}
	conn, err := tls.Dial("tcp", strings.TrimPrefix(g.URL, "https://"), cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	// Send half a request line and stall, as a slowloris client does.
	if _, err := io.WriteString(conn, "GET /whoami HTTP/1.1\r\nHost: x\r\n"); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, err = bufio.NewReader(conn).ReadString('\n')
	if err == nil {
		// A 408 response line is also an acceptable way to hang up.
		t.Logf("server answered the stalled request after %v", time.Since(start))
	} else if ne, ok := err.(net.Error); ok && ne.Timeout() {
		t.Fatal("server kept a stalled request open for 5s")
	}
	if time.Since(start) > 3*time.Second {
		t.Fatalf("stalled request cut after %v, want about 300ms", time.Since(start))
	}
}

func TestGracefulShutdown(t *testing.T) {
	g := gatewaytest.Start(t, nil, gatewaytest.Config{})
	c := g.Client(t, "st-marys")
	if resp := get(t, c, g.URL+"/whoami"); resp.StatusCode != http.StatusOK {
		t.Fatal(resp.StatusCode)
	}
	done := make(chan struct{})
	go func() { g.Stop(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("shutdown with an idle keep-alive connection took over 10s")
	}
	if _, err := net.DialTimeout("tcp", strings.TrimPrefix(g.URL, "https://"), time.Second); err == nil {
		t.Fatal("listener still accepts after shutdown")
	}
}

type response struct {
	StatusCode int
	body       []byte
}

func get(t *testing.T, c *http.Client, url string) response {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return response{resp.StatusCode, b}
}

// expectHandshakeRefused asserts the request fails with a TLS alert from
// the server, not with an HTTP answer.
func expectHandshakeRefused(t *testing.T, c *http.Client, url string) {
	t.Helper()
	resp, err := c.Get(url)
	if err == nil {
		resp.Body.Close()
		t.Fatalf("request succeeded with status %d; want the handshake refused", resp.StatusCode)
	}
	t.Logf("refused: %v", err)
	var alert tls.AlertError
	if !errors.As(err, &alert) && !strings.Contains(err.Error(), "tls:") {
		t.Fatalf("request failed, but not with a TLS alert: %v", err)
	}
}

// forcedClient presents the certificate whatever CAs the server asks for,
// as curl does (Go's client would otherwise send none), over HTTP/1.1 so
// the server's TLS alert reaches the caller unwrapped.
func forcedClient(t *testing.T, g *gatewaytest.Gateway, certFile, keyFile string) *http.Client {
	t.Helper()
	cfg, err := certs.ClientTLSConfig(g.Layout.CAFile(), certFile, keyFile)
	if err != nil {
		t.Fatal(err)
	}
	cert := cfg.Certificates[0]
	cfg.Certificates = nil
	cfg.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &cert, nil }
	tr := &http.Transport{TLSClientConfig: cfg}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: 10 * time.Second}
}
