package main

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"strings"
	"time"

	"github.com/consilium/consilium/certs"
	"github.com/consilium/consilium/internal/devenv"
)

// clientFlags are the connection flags every client subcommand shares.
// Each falls back to a CONSILIUM_* variable; --as picks a demo principal's
// files from the embedded default's folder.
type clientFlags struct {
	server, cert, key, ca *string
	as, data              *string
}

func addClientFlags(fs *flag.FlagSet) *clientFlags {
	return &clientFlags{
		server: fs.String("server", "", "gateway URL (CONSILIUM_SERVER; default https://127.0.0.1:8443)"),
		cert:   fs.String("cert", "", "client certificate (CONSILIUM_CERT)"),
		key:    fs.String("key", "", "client key (CONSILIUM_KEY)"),
		ca:     fs.String("ca", "", "CA certificate that signed the gateway's certificate (CONSILIUM_CA)"),
		as:     fs.String("as", "", "act as this demo principal of the embedded default (uses --data's pki folder)"),
		data:   fs.String("data", "consilium-data", "folder of the embedded default, for --as"),
	}
}

// apiClient calls the gateway over mutual TLS.
type apiClient struct {
	base string
	http *http.Client
	bulk *http.Client // HTTP/1.1, for packet downloads
}

func (f *clientFlags) client(env *cli) (*apiClient, error) {
	pick := func(flagV, envName, def string) string {
		if flagV != "" {
			return flagV
		}
		if v := env.getenv(envName); v != "" {
			return v
		}
		return def
	}
	server := strings.TrimRight(pick(*f.server, "CONSILIUM_SERVER", "https://127.0.0.1:8443"), "/")
	var cert, key, ca string
	if *f.as != "" {
		l := devenv.Layout{Dir: *f.data}
		cert, key, ca = l.ClientCert(*f.as), l.ClientKey(*f.as), l.CAFile()
	}
	cert = pick(*f.cert, "CONSILIUM_CERT", cert)
	key = pick(*f.key, "CONSILIUM_KEY", key)
	ca = pick(*f.ca, "CONSILIUM_CA", ca)
	if cert == "" || key == "" || ca == "" {
		return nil, usagef("a client certificate, its key and the CA are needed: --cert/--key/--ca (or CONSILIUM_CERT/KEY/CA), or --as ID with the embedded default")
	}
	if !strings.HasPrefix(server, "https://") {
		return nil, usagef("--server %q: the gateway only speaks https://", server)
	}
	cfg, err := certs.ClientTLSConfig(filepath.Clean(ca), cert, key)
	if err != nil {
		return nil, err
	}
	tr := &http.Transport{TLSClientConfig: cfg, ForceAttemptHTTP2: true, IdleConnTimeout: 90 * time.Second, ResponseHeaderTimeout: 10 * time.Minute}
	// Bulk downloads (packets) use HTTP/1.1: one large stream gains
	// nothing from HTTP/2 and its 16 KiB frames cost about twice the CPU
	// per byte (bench/cases).
	bulk := &http.Transport{TLSClientConfig: cfg.Clone(), IdleConnTimeout: 90 * time.Second, ResponseHeaderTimeout: 10 * time.Minute,
		TLSNextProto: map[string]func(string, *tls.Conn) http.RoundTripper{}}
	bulk.TLSClientConfig.NextProtos = []string{"http/1.1"}
	return &apiClient{base: server, http: &http.Client{Transport: tr}, bulk: &http.Client{Transport: bulk}}, nil
}

// apiError is an error answer of the gateway.
type apiError struct {
	Status    int
	Message   string            `json:"error"`
	Reasons   []string          `json:"reasons"`
	Problems  []json.RawMessage `json:"problems"`
	RequestID string            `json:"request_id"`
}

func (e *apiError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "gateway answered %d: %s", e.Status, e.Message)
	for _, r := range e.Reasons {
		fmt.Fprintf(&b, "\n  - %s", r)
	}
	for _, p := range e.Problems {
		var pr struct {
			File    string `json:"file"`
			Row     int    `json:"row"`
			Message string `json:"message"`
		}
		if json.Unmarshal(p, &pr) == nil {
			loc := pr.File
			if pr.Row > 0 {
				loc = fmt.Sprintf("%s:%d", pr.File, pr.Row)
			}
			if loc != "" {
				loc += ": "
			}
			fmt.Fprintf(&b, "\n  - %s%s", loc, pr.Message)
		}
	}
	if e.RequestID != "" {
		fmt.Fprintf(&b, "\n(request id %s)", e.RequestID)
	}
	return b.String()
}

// do sends a request and returns the response if its status is 2xx;
// otherwise it reads the error body into an *apiError.
func (c *apiClient) do(ctx context.Context, method, path string, body io.Reader, contentType string) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, body)
	if err != nil {
		return nil, err
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, fmt.Errorf("calling the gateway: %w", err)
	}
	if resp.StatusCode >= 200 && resp.StatusCode < 300 {
		return resp, nil
	}
	defer resp.Body.Close()
	e := &apiError{Status: resp.StatusCode}
	data, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if json.Unmarshal(data, e) != nil || e.Message == "" {
		e.Message = strings.TrimSpace(string(data))
	}
	return nil, e
}

// doJSON sends in (if not nil) as JSON and decodes the answer into out (if
// not nil).
func (c *apiClient) doJSON(ctx context.Context, method, path string, in, out any) error {
	var body io.Reader
	ct := ""
	if in != nil {
		data, err := json.Marshal(in)
		if err != nil {
			return err
		}
		body, ct = strings.NewReader(string(data)), "application/json"
	}
	resp, err := c.do(ctx, method, path, body, ct)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if out == nil {
		_, err = io.Copy(io.Discard, resp.Body)
		return err
	}
	if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
		return fmt.Errorf("reading the gateway's answer: %w", err)
	}
	return nil
}
