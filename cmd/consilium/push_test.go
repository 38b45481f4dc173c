package main

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/consilium/consilium/gateway/gatewaytest"
	"github.com/consilium/consilium/internal/testenv"
)

// sharedTestdata finds ../shared/testdata next to the module.
func sharedTestdata(t *testing.T) string {
	t.Helper()
	dir, _ := os.Getwd()
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			break
		}
		dir = filepath.Dir(dir)
	}
	p := filepath.Join(dir, "..", "shared", "testdata")
	if _, err := os.Stat(p); err != nil {
		testenv.Missing(t, "../shared/testdata", "the shared test corpus must sit next to the repository")
	}
	return p
}

func copyFile(t *testing.T, src, dst string) {
	t.Helper()
	b, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(dst, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

// pushFolder lays out what a hospital export looks like: DICOM with and
// without extensions in nested folders, a DICOMDIR, FHIR JSON and NDJSON,
// and files that are neither.
func pushFolder(t *testing.T) string {
	t.Helper()
	td := sharedTestdata(t)
	dir := t.TempDir()
	files := map[string]string{
		"dicom/modality/ct/CT_small.dcm":            "study1/CT_small.dcm",
		"dicom/modality/mr/MR_small.dcm":            "study2/series1/IM0001", // no extension: sniffed
		"dicom/modality/dx/dx_image.dcm":            "study3/dx.dcm",
		"dicom/invalid/no_meta.dcm":                 "broken/no_meta.dcm",
		"dicom/invalid/MR_truncated.dcm":            "broken/MR_truncated.dcm",
		"fhir/hl7-examples/patient-example.json":    "fhir/patient.json",
		"fhir/ndjson/AllergyIntolerance.000.ndjson": "fhir/allergies.ndjson",
	}
	for src, dst := range files {
		copyFile(t, filepath.Join(td, src), filepath.Join(dir, dst))
	}
	for name, content := range map[string]string{"README.txt": "export notes", "study1/DICOMDIR": "an index", ".hidden.dcm": "x"} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func clientArgs(g *gatewaytest.Gateway, id string) []string {
	return []string{"--server", g.URL, "--cert", g.Layout.ClientCert(id), "--key", g.Layout.ClientKey(id), "--ca", g.Layout.CAFile()}
}

func TestPushEndToEnd(t *testing.T) {
	g := gatewaytest.Start(t, nil, gatewaytest.Config{})
	dir := pushFolder(t)
	args := append(append([]string{"push"}, clientArgs(g, "st-marys")...), "--batch", "2", dir)
	code, stdout, stderr := runCLI(t, nil, args...)
	if code != 1 {
		t.Fatalf("exit %d, want 1 (some files fail)\nstdout:\n%s\nstderr:\n%s", code, stdout, stderr)
	}
	if !strings.Contains(stdout, "3 stored, 0 already stored (unchanged)") || !strings.Contains(stdout, "2 skipped") {
		t.Fatalf("summary:\n%s", stdout)
	}
	// Every failed file is listed with its reason.
	for _, want := range []string{
		filepath.Join(dir, "broken/no_meta.dcm") + `: C000 dicom: no-preamble`,
		filepath.Join(dir, "broken/MR_truncated.dcm") + `: C000 dicom: truncated`,
	} {
		if !strings.Contains(stdout, want) {
			t.Errorf("summary does not list %q:\n%s", want, stdout)
		}
	}
	// FHIR files are sent to /fhir: either accepted, or listed with the
	// gateway's reason (on a gateway without the FHIR API, 404).
	for _, f := range []string{"fhir/patient.json", "fhir/allergies.ndjson"} {
		p := regexp.QuoteMeta(filepath.Join(dir, f))
		if regexp.MustCompile(p+`: `).MatchString(stdout) && !regexp.MustCompile(p+`: gateway answered \d{3}: .+`).MatchString(stdout) {
			t.Errorf("%s failed without the gateway's reason:\n%s", f, stdout)
		}
	}
	if !strings.Contains(stderr, "push: ") {
		t.Errorf("no progress lines on stderr: %q", stderr)
	}
	// The studies are there.
	c := g.Client(t, "st-marys")
	resp, err := c.Get(g.URL + "/dicomweb/studies")
	if err != nil {
		t.Fatal(err)
	}
	var studies []any
	json.NewDecoder(resp.Body).Decode(&studies)
	resp.Body.Close()
	if len(studies) != 3 {
		t.Fatalf("%d studies after push", len(studies))
	}

	// Safe re-run: nothing stored twice.
	code, stdout, _ = runCLI(t, nil, args...)
	if code != 1 || !strings.Contains(stdout, "0 stored, 3 already stored (unchanged)") {
		t.Fatalf("re-run: exit %d\n%s", code, stdout)
	}
	// Only good files: success.
	os.RemoveAll(filepath.Join(dir, "broken"))
	os.RemoveAll(filepath.Join(dir, "fhir"))
	code, stdout, stderr = runCLI(t, nil, append([]string{"push", dir}, clientArgs(g, "st-marys")...)...)
	if code != 0 || !strings.Contains(stdout, "3 already stored") {
		t.Fatalf("exit %d\n%s\n%s", code, stdout, stderr)
	}
}

func TestPushRefusedCaller(t *testing.T) {
	g := gatewaytest.Start(t, nil, gatewaytest.Config{})
	dir := t.TempDir()
	copyFile(t, filepath.Join(sharedTestdata(t), "dicom/modality/ct/CT_small.dcm"), filepath.Join(dir, "a.dcm"))
	code, stdout, _ := runCLI(t, nil, append(append([]string{"push"}, clientArgs(g, "dr-okafor")...), dir)...)
	if code != 1 || !strings.Contains(stdout, "gateway answered 403: forbidden by policy") {
		t.Fatalf("exit %d\n%s", code, stdout)
	}
}

func TestPushUsage(t *testing.T) {
	for _, args := range [][]string{{"push"}, {"push", "--batch", "0", "x"}} {
		if code, _, _ := runCLI(t, nil, args...); code != 2 {
			t.Errorf("%v: exit %d, want 2", args, code)
		}
	}
}

// flaky fails the first n requests: with a 503 answer, or before the
// request reaches the gateway.
type flaky struct {
	next    http.RoundTripper
	n       atomic.Int32
	network bool
}

func (f *flaky) RoundTrip(r *http.Request) (*http.Response, error) {
	if f.n.Add(-1) >= 0 {
		if r.Body != nil {
			io.Copy(io.Discard, r.Body)
			r.Body.Close()
		}
		if f.network {
			return nil, io.ErrUnexpectedEOF
		}
		return &http.Response{StatusCode: 503, Header: http.Header{"Content-Type": {"application/json"}},
			Body: io.NopCloser(strings.NewReader(`{"error":"busy"}`)), Request: r}, nil
	}
	return f.next.RoundTrip(r)
}

func TestPushRetries(t *testing.T) {
	g := gatewaytest.Start(t, nil, gatewaytest.Config{})
	td := sharedTestdata(t)
	dir := t.TempDir()
	copyFile(t, filepath.Join(td, "dicom/modality/ct/CT_small.dcm"), filepath.Join(dir, "a.dcm"))
	copyFile(t, filepath.Join(td, "dicom/modality/mr/MR_small.dcm"), filepath.Join(dir, "b.dcm"))
	for _, tc := range []struct {
		name     string
		failures int32
		network  bool
		retries  int
		want     outcome
	}{
		{"503 then success", 2, false, 3, outStored},
		{"network errors then success", 2, true, 3, outStored},
		{"gives up", 5, false, 2, outFailed},
	} {
		t.Run(tc.name, func(t *testing.T) {
			env := &cli{stdout: io.Discard, stderr: io.Discard, getenv: func(string) string { return "" }}
			fs := newFlagSet(env, "push", "")
			cf := addClientFlags(fs)
			if err := fs.Parse(clientArgs(g, "city-general")); err != nil {
				t.Fatal(err)
			}
			c, err := cf.client(env)
			if err != nil {
				t.Fatal(err)
			}
			fl := &flaky{next: c.http.Transport, network: tc.network}
			fl.n.Store(tc.failures)
			c.http.Transport = fl
			files, _, err := collectFiles([]string{dir})
			if err != nil {
				t.Fatal(err)
			}
			p := &pusher{c: c, opts: pushOptions{batchFiles: 16, batchBytes: 1 << 30, concurrency: 1, retries: tc.retries, backoff: time.Millisecond},
				progress: newProgress(io.Discard)}
			results := p.push(context.Background(), files)
			if len(results) != 2 {
				t.Fatalf("%d results", len(results))
			}
			for _, r := range results {
				want := tc.want
				if want == outStored && tc.name != "503 then success" {
					want = outUnchanged // stored by the first subtest
				}
				if r.outcome != want && !(tc.want == outStored && r.outcome == outUnchanged) {
					t.Fatalf("%s: %v %q, want %v", r.file.path, r.outcome, r.reason, want)
				}
				if r.outcome == outFailed && !strings.Contains(r.reason, "503") {
					t.Fatalf("reason %q", r.reason)
				}
			}
		})
	}
}
