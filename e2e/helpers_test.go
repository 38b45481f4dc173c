package e2e

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/consilium/consilium/internal/testenv"
)

// sharedTestdata is ../shared/testdata next to the repository.
func sharedTestdata(t *testing.T) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return filepath.Join(dir, "..", "shared", "testdata")
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatal("no go.mod above the test's folder")
		}
		dir = parent
	}
}

// tools are the outside programs the journey checks the gateway with.
type tools struct {
	age, minisign, tar, dcmdump, python string
}

func lookTools(t *testing.T) tools {
	t.Helper()
	tl := tools{
		age:      testenv.LookPath(t, "age", "apt-get install age"),
		minisign: testenv.LookPath(t, "minisign", "apt-get install minisign"),
		tar:      testenv.LookPath(t, "tar", "apt-get install tar"),
		dcmdump:  testenv.LookPath(t, "dcmdump", "apt-get install dcmtk"),
		// Debian's python, not a pyenv one first on PATH: it has pydicom.
		python: testenv.LookPath(t, "/usr/bin/python3", "apt-get install python3"),
	}
	if out, err := exec.Command(tl.python, "-c", "import pydicom").CombinedOutput(); err != nil {
		testenv.Missing(t, "pydicom for /usr/bin/python3", "apt-get install python3-pydicom ("+strings.TrimSpace(string(out))+")")
	}
	return tl
}

// run runs a program and fails the test with its output if it fails.
func run(t *testing.T, stdin io.Reader, name string, args ...string) []byte {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Stdin = stdin
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s%s", filepath.Base(name), strings.Join(args, " "), err, out, stderr.Bytes())
	}
	return out
}

// principal is an HTTP client presenting one principal's certificate.
type principal struct {
	id   string
	c    *http.Client
	base string
}

// reply is a response, read whole.
type reply struct {
	method, path string
	status       int
	header       http.Header
	body         []byte
}

func (p principal) do(t *testing.T, method, path, ctype string, body io.Reader) reply {
	t.Helper()
	req, err := http.NewRequest(method, p.base+path, body)
	if err != nil {
		t.Fatal(err)
	}
	if ctype != "" {
		req.Header.Set("Content-Type", ctype)
	}
	resp, err := p.c.Do(req)
	if err != nil {
		t.Fatalf("%s %s %s: %v", p.id, method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s %s: reading the answer: %v", p.id, method, path, err)
	}
	return reply{method: method, path: path, status: resp.StatusCode, header: resp.Header, body: b}
}

func (p principal) get(t *testing.T, path string) reply {
	t.Helper()
	return p.do(t, http.MethodGet, path, "", nil)
}

// send sends v as a JSON body (application/json unless ctype says else).
func (p principal) send(t *testing.T, method, path, ctype string, v any) reply {
	t.Helper()
	if ctype == "" {
		ctype = "application/json"
	}
	var body io.Reader
	if v != nil {
		b, err := json.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		body = bytes.NewReader(b)
	}
	return p.do(t, method, path, ctype, body)
}

// want fails the test unless the answer has status.
func (r reply) want(t *testing.T, status int) reply {
	t.Helper()
	if r.status != status {
		t.Fatalf("%s %s: status %d, want %d: %s", r.method, r.path, r.status, status, r.body)
	}
	return r
}

func (r reply) decode(t *testing.T, v any) {
	t.Helper()
	if err := json.Unmarshal(r.body, v); err != nil {
		t.Fatalf("%s %s: %v: %s", r.method, r.path, err, r.body)
	}
}

// refusal is the JSON error body of the case API.
type refusal struct {
	Error   string   `json:"error"`
	Reasons []string `json:"reasons"`
}

// wantRefused fails the test unless the answer is status with an error
// body (and reasons, for a 403).
func (r reply) wantRefused(t *testing.T, status int) refusal {
	t.Helper()
	r.want(t, status)
	var e refusal
	r.decode(t, &e)
	if e.Error == "" || status == http.StatusForbidden && len(e.Reasons) == 0 {
		t.Fatalf("%s %s: a %d without error or reasons: %s", r.method, r.path, status, r.body)
	}
	return e
}

// dicomJSONStrings returns the string values of attribute tag in the
// items of sequence seq of a DICOM JSON object.
func dicomJSONStrings(t *testing.T, body []byte, seq, tag string) []string {
	t.Helper()
	type attr struct {
		Value []json.RawMessage `json:"Value"`
	}
	var ds map[string]attr
	if err := json.Unmarshal(body, &ds); err != nil {
		t.Fatalf("DICOM JSON: %v: %s", err, body)
	}
	var out []string
	for _, raw := range ds[seq].Value {
		var item map[string]attr
		if err := json.Unmarshal(raw, &item); err != nil {
			t.Fatalf("DICOM JSON item: %v", err)
		}
		for _, v := range item[tag].Value {
			var s string
			if err := json.Unmarshal(v, &s); err == nil {
				out = append(out, s)
			}
		}
	}
	return out
}

// eventually retries check until it returns nil or the time is up.
func eventually(t *testing.T, within time.Duration, check func() error) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		err := check()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal(err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// execQuiet runs a program that is expected to fail, returning its
// combined output.
func execQuiet(name string, args ...string) ([]byte, error) {
	return exec.Command(name, args...).CombinedOutput()
}
