package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/consilium/consilium/gateway/gatewaytest"
	"github.com/consilium/consilium/packet"
)

func TestCaseCreateRequest(t *testing.T) {
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	day := 24 * time.Hour
	tests := []struct {
		name    string
		f       caseCreateFlags
		want    caseCreateRequest
		wantErr string
	}{
		{"everything", caseCreateFlags{patient: "Patient/p1", question: " Malignant? ", specialty: "oncology",
			languages: stringList{"en,es", "en"}, studies: stringList{"1.2.3", "1.2.4"}, resources: stringList{"Condition", "Observation"}, due: "14d"},
			caseCreateRequest{Patient: "Patient/p1", Question: "Malignant?", Specialty: "oncology", Languages: []string{"en", "es"},
				Studies: []string{"1.2.3", "1.2.4"}, Resources: []string{"Condition", "Observation"}, Deadline: ptr(now.Add(14 * day))}, ""},
		{"bare patient id", caseCreateFlags{patient: "p1", question: "q", specialty: "oncology"},
			caseCreateRequest{Patient: "Patient/p1", Question: "q", Specialty: "oncology"}, ""},
		{"deadline", caseCreateFlags{patient: "p1", question: "q", specialty: "s", deadline: "2026-12-31T00:00:00+01:00"},
			caseCreateRequest{Patient: "Patient/p1", Question: "q", Specialty: "s", Deadline: ptr(time.Date(2026, 12, 30, 23, 0, 0, 0, time.UTC))}, ""},
		{"due in weeks", caseCreateFlags{patient: "p1", question: "q", specialty: "s", due: "2w"},
			caseCreateRequest{Patient: "Patient/p1", Question: "q", Specialty: "s", Deadline: ptr(now.Add(14 * day))}, ""},
		{"due in hours", caseCreateFlags{patient: "p1", question: "q", specialty: "s", due: "36h"},
			caseCreateRequest{Patient: "Patient/p1", Question: "q", Specialty: "s", Deadline: ptr(now.Add(36 * time.Hour))}, ""},
		{"no patient", caseCreateFlags{question: "q", specialty: "s"}, caseCreateRequest{}, "--patient is required"},
		{"patient of another type", caseCreateFlags{patient: "Patient/a/b", question: "q", specialty: "s"}, caseCreateRequest{}, "want Patient/ID"},
		{"no question", caseCreateFlags{patient: "p1", question: "  ", specialty: "s"}, caseCreateRequest{}, "--question is required"},
		{"no specialty", caseCreateFlags{patient: "p1", question: "q"}, caseCreateRequest{}, "--specialty is required"},
		{"deadline and due", caseCreateFlags{patient: "p1", question: "q", specialty: "s", deadline: "2027-01-01T00:00:00Z", due: "3d"}, caseCreateRequest{}, "not both"},
		{"deadline not RFC 3339", caseCreateFlags{patient: "p1", question: "q", specialty: "s", deadline: "31/12/2026"}, caseCreateRequest{}, "RFC 3339"},
		{"deadline past", caseCreateFlags{patient: "p1", question: "q", specialty: "s", deadline: "2026-01-01T00:00:00Z"}, caseCreateRequest{}, "not in the future"},
		{"due zero", caseCreateFlags{patient: "p1", question: "q", specialty: "s", due: "0d"}, caseCreateRequest{}, "positive"},
		{"due negative", caseCreateFlags{patient: "p1", question: "q", specialty: "s", due: "-3d"}, caseCreateRequest{}, "positive"},
		{"due nonsense", caseCreateFlags{patient: "p1", question: "q", specialty: "s", due: "soon"}, caseCreateRequest{}, "--due"},
		{"resource not a type", caseCreateFlags{patient: "p1", question: "q", specialty: "s", resources: stringList{"condition"}}, caseCreateRequest{}, "FHIR resource type"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := tc.f.request(now)
			if tc.wantErr != "" {
				if err == nil || !errors.As(err, new(usageError)) || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("error %v, want a usage error saying %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			gj, _ := json.Marshal(got)
			wj, _ := json.Marshal(tc.want)
			if string(gj) != string(wj) {
				t.Fatalf("request\n got %s\nwant %s", gj, wj)
			}
		})
	}
}

func ptr[T any](v T) *T { return &v }

func TestParseDue(t *testing.T) {
	tests := []struct {
		in   string
		want time.Duration
		ok   bool
	}{
		{"1d", 24 * time.Hour, true},
		{"14d", 14 * 24 * time.Hour, true},
		{"2w", 14 * 24 * time.Hour, true},
		{"90m", 90 * time.Minute, true},
		{"1h30m", 90 * time.Minute, true},
		{"0h", 0, false},
		{"d", 0, false},
		{"1.5d", 0, false},
		{"99999d", 0, false},
		{"", 0, false},
	}
	for _, tc := range tests {
		t.Run(tc.in, func(t *testing.T) {
			got, err := parseDue(tc.in)
			if (err == nil) != tc.ok || got != tc.want {
				t.Fatalf("%s, %v; want %s, ok=%v", got, err, tc.want, tc.ok)
			}
		})
	}
}

// recorder is a fake gateway that records requests and answers each
// path with a canned status and body.
type recorder struct {
	mu      sync.Mutex
	reqs    []recorded
	answers map[string]answer
}

type recorded struct {
	method, path, query, contentType string
	body                             []byte
}

type answer struct {
	status int
	body   string
}

func (rc *recorder) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	rc.mu.Lock()
	rc.reqs = append(rc.reqs, recorded{r.Method, r.URL.Path, r.URL.RawQuery, r.Header.Get("Content-Type"), body})
	a, ok := rc.answers[r.Method+" "+r.URL.Path]
	rc.mu.Unlock()
	if !ok {
		a = answer{404, `{"error":"not found","request_id":"r-1"}`}
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(a.status)
	io.WriteString(w, a.body)
}

func (rc *recorder) last() recorded {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	if len(rc.reqs) == 0 {
		return recorded{}
	}
	return rc.reqs[len(rc.reqs)-1]
}

const caseViewJSON = `{"id":"c-0123456789abcdef","org":"st-marys","patient":"Patient/p1","studies":["1.2.3"],
"question":"Is the nodule malignant?","specialty":"oncology","languages":["en"],"deadline":"2099-12-31T00:00:00Z",
"status":"released","assigned":["dr-garcia","dr-okafor"],"released":["dr-garcia","dr-okafor"],
"created":"2026-03-01T12:00:00Z","updated":"2026-03-02T12:00:00Z","overdue":false,"opinions":1,
"timeline":[{"at":"2026-03-01T12:00:00Z","status":"draft","by":"st-marys","note":"case created"},
{"at":"2026-03-02T12:00:00Z","status":"released","by":"cm-ana","note":"released to dr-garcia, dr-okafor"}]}`

// TestCaseCommands runs each case subcommand against a fake gateway and
// checks the request it sends and what it prints.
func TestCaseCommands(t *testing.T) {
	l := devLayout(t)
	const id = "c-0123456789abcdef"
	rc := &recorder{answers: map[string]answer{
		"POST /cases":                    {201, caseViewJSON},
		"GET /cases/" + id:               {200, caseViewJSON},
		"POST /cases/" + id + "/assign":  {200, caseViewJSON},
		"POST /cases/" + id + "/release": {403, `{"error":"forbidden by policy","reasons":["dr-garcia: the patient's consent does not permit transfers to ES"],"request_id":"r-7"}`},
		"POST /cases/" + id + "/cancel":  {200, strings.Replace(caseViewJSON, `"status":"released"`, `"status":"cancelled"`, 1)},
		"POST /cases/" + id + "/close":   {409, `{"error":"cases: not allowed in this state: cannot close a case that is cancelled","request_id":"r-8"}`},
		"GET /cases":                     {200, `{"cases":[` + strings.Replace(caseViewJSON, `"overdue":false`, `"overdue":true`, 1) + `]}`},
		"GET /specialists":               {200, `{"specialists":[{"id":"dr-garcia","org":"dr-garcia","country":"ES","specialty":"radiology","languages":["es","en"],"recipient":"age1x","updated":"2026-03-01T12:00:00Z"}]}`},
	}}
	url := fakeGateway(t, l, rc)
	conn := []string{"--server", url, "--as", "cm-ana", "--data", l.Dir}
	tests := []struct {
		name              string
		args              []string
		code              int
		method, path, qry string
		body              string // JSON the request must equal (when set)
		stdout, stderr    []string
	}{
		{"create", []string{"create", "--patient", "p1", "--question", "Is the nodule malignant?", "--specialty", "oncology", "--language", "en", "--study", "1.2.3", "--deadline", "2099-12-31T00:00:00Z"},
			0, "POST", "/cases", "", `{"patient":"Patient/p1","question":"Is the nodule malignant?","specialty":"oncology","languages":["en"],"studies":["1.2.3"],"deadline":"2099-12-31T00:00:00Z"}`,
			[]string{"case " + id + " created", "patient       Patient/p1", "released to   dr-garcia, dr-okafor", "timeline:", "draft     st-marys  case created"}, nil},
		{"create --json", []string{"create", "--patient", "p1", "--question", "q", "--specialty", "oncology", "--json"},
			0, "POST", "/cases", "", "", []string{`"id": "c-0123456789abcdef"`, `"timeline": [`}, nil},
		{"show", []string{"show", id}, 0, "GET", "/cases/" + id, "", "", []string{"status        released", "deadline      2099-12-31", "opinions      1"}, nil},
		{"show, flags after the id", []string{"show", id, "--json"}, 0, "GET", "/cases/" + id, "", "", []string{`"status": "released"`}, nil},
		{"show unknown", []string{"show", "c-ffffffffffffffff"}, 1, "GET", "/cases/c-ffffffffffffffff", "", "", nil, []string{"gateway answered 404: not found", "request id r-1"}},
		{"assign", []string{"assign", id, "dr-okafor", "dr-garcia"}, 0, "POST", "/cases/" + id + "/assign", "", `{"specialists":["dr-okafor","dr-garcia"]}`,
			[]string{"assigned to dr-garcia, dr-okafor; release it with: consilium case release " + id}, nil},
		{"release refused with reasons", []string{"release", id}, 1, "POST", "/cases/" + id + "/release", "", "", nil,
			[]string{"gateway answered 403: forbidden by policy", "  - dr-garcia: the patient's consent does not permit transfers to ES", "request id r-7"}},
		{"cancel", []string{"cancel", id}, 0, "POST", "/cases/" + id + "/cancel", "", "", []string{"case " + id + " cancelled", "status        cancelled"}, nil},
		{"close refused", []string{"close", id}, 1, "POST", "/cases/" + id + "/close", "", "", nil, []string{"409", "cannot close a case that is cancelled"}},
		{"list", []string{"list", "--status", "released", "--overdue"}, 0, "GET", "/cases", "overdue=true&status=released", "",
			[]string{"CASE", "PATIENT", id + "  released (overdue)", "Patient/p1", "Is the nodule malignant?"}, nil},
		{"specialists", []string{"specialists", "--specialty", "radiology", "--language", "es"}, 0, "GET", "/specialists", "language=es&specialty=radiology", "",
			[]string{"SPECIALIST", "dr-garcia   radiology  es,en      ES"}, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			args := append(append([]string{"case", tc.args[0]}, conn...), tc.args[1:]...)
			code, stdout, stderr := runCLI(t, nil, args...)
			if code != tc.code {
				t.Fatalf("exit %d, want %d\nstdout:\n%s\nstderr:\n%s", code, tc.code, stdout, stderr)
			}
			r := rc.last()
			if r.method != tc.method || r.path != tc.path || r.query != tc.qry {
				t.Errorf("request %s %s?%s, want %s %s?%s", r.method, r.path, r.query, tc.method, tc.path, tc.qry)
			}
			if tc.body != "" && strings.TrimSpace(string(r.body)) != tc.body {
				t.Errorf("body\n got %s\nwant %s", r.body, tc.body)
			}
			if len(r.body) > 0 && r.contentType != "application/json" {
				t.Errorf("Content-Type %q", r.contentType)
			}
			for _, w := range tc.stdout {
				if !strings.Contains(stdout, w) {
					t.Errorf("stdout does not hold %q:\n%s", w, stdout)
				}
			}
			for _, w := range tc.stderr {
				if !strings.Contains(stderr, w) {
					t.Errorf("stderr does not hold %q:\n%s", w, stderr)
				}
			}
		})
	}
}

func TestCaseUsage(t *testing.T) {
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"no subcommand", []string{"case"}, "Usage: consilium case"},
		{"unknown subcommand", []string{"case", "reopen"}, "unknown case subcommand"},
		{"show without id", []string{"show"}, "exactly one case ID"},
		{"show two ids", []string{"show", "c-1", "c-2"}, "exactly one case ID"},
		{"id with a slash", []string{"show", "c-1/../x"}, "is not a case id"},
		{"assign without specialists", []string{"assign", "c-1"}, "at least one specialist"},
		{"release without id", []string{"release"}, "exactly one case ID"},
		{"list bad status", []string{"list", "--status", "open"}, `--status "open"`},
		{"list positional", []string{"list", "c-1"}, "unexpected argument"},
		{"create without patient", []string{"create", "--question", "q", "--specialty", "s"}, "--patient is required"},
		{"create with due and deadline", []string{"create", "--patient", "p", "--question", "q", "--specialty", "s", "--due", "3d", "--deadline", "2099-01-01T00:00:00Z"}, "not both"},
		{"no certificate", []string{"show", "c-1"}, "a client certificate"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			args := tc.args
			if args[0] != "case" {
				args = append([]string{"case"}, args...)
			}
			code, _, stderr := runCLI(t, nil, args...)
			if code != 2 || !strings.Contains(stderr, tc.want) {
				t.Fatalf("exit %d (want 2), stderr:\n%s", code, stderr)
			}
		})
	}
}

// cutProxy forwards TCP connections to a gateway and breaks the first one
// after it has carried cutAfter bytes towards the client: a download cut
// mid-packet, TLS and all.
type cutProxy struct {
	addr  string
	conns atomic.Int32
	mu    sync.Mutex
	open  []net.Conn
}

func startCutProxy(t *testing.T, target string, cutAfter int64) *cutProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &cutProxy{addr: ln.Addr().String()}
	var wg sync.WaitGroup
	t.Cleanup(func() {
		ln.Close()
		p.mu.Lock()
		for _, c := range p.open {
			c.Close() // idle keep-alive connections too
		}
		p.mu.Unlock()
		wg.Wait()
	})
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			n := p.conns.Add(1)
			s, err := net.Dial("tcp", target)
			if err != nil {
				c.Close()
				continue
			}
			p.mu.Lock()
			p.open = append(p.open, c, s)
			p.mu.Unlock()
			wg.Add(2)
			go func() { defer wg.Done(); io.Copy(s, c); s.Close() }()
			go func() {
				defer wg.Done()
				if n == 1 {
					io.CopyN(c, s, cutAfter)
				} else {
					io.Copy(c, s)
				}
				c.Close()
				s.Close()
			}()
		}
	}()
	return p
}

// TestSecondOpinionJourney drives the whole journey with the commands, as
// the README tells it, against a real gateway (gatewaytest: TLS, client
// certificates, the built-in policy, the encrypted store): st-marys pushes
// a Synthea record, a Consent and a CT study and opens a case; cm-ana
// assigns dr-okafor and dr-garcia and releases; each pulls (dr-okafor's
// download is cut mid-packet and resumes); both send opinions; st-marys
// reads them about its own patient; a cancelled case refuses the packet.
func TestSecondOpinionJourney(t *testing.T) {
	g := gatewaytest.Start(t, nil, gatewaytest.Config{})
	as := func(id string) []string { return []string{"--server", g.URL, "--as", id, "--data", g.Layout.Dir} }
	cmd := func(t *testing.T, want int, id string, args ...string) (string, string) {
		t.Helper()
		// Subcommand words first, then the connection, then the rest.
		n := 1
		if args[0] == "case" || args[0] == "opinion" {
			n = 2
		}
		full := append(append(append([]string{}, args[:n]...), as(id)...), args[n:]...)
		code, stdout, stderr := runCLI(t, nil, full...)
		if code != want {
			t.Fatalf("consilium %s as %s: exit %d, want %d\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), id, code, want, stdout, stderr)
		}
		return stdout, stderr
	}
	td := sharedTestdata(t)

	// The hospital's records.
	cmd(t, 0, "st-marys", "push", filepath.Join(td, "fhir", "synthea", "Liz_Conn_27c911c6-f045-4ffa-af5d-6eba57ac94b2.json"),
		filepath.Join(td, "dicom", "modality", "ct", "CT_small.dcm"))
	hosp := g.Client(t, "st-marys")
	var found struct {
		Entry []struct {
			Resource struct{ ID string } `json:"resource"`
		} `json:"entry"`
	}
	getJSON(t, hosp, g.URL+"/fhir/Patient?identifier="+url.QueryEscape("https://github.com/synthetichealth/synthea|27c911c6-f045-4ffa-af5d-6eba57ac94b2"), &found)
	if len(found.Entry) != 1 {
		t.Fatalf("%d patients found", len(found.Entry))
	}
	patient := found.Entry[0].Resource.ID
	var studies []map[string]json.RawMessage
	getJSON(t, hosp, g.URL+"/dicomweb/studies", &studies)
	if len(studies) != 1 {
		t.Fatalf("%d studies", len(studies))
	}
	study := firstValue(studies[0]["0020000D"])
	consent := writeTemp(t, "consent.json", []byte(strings.ReplaceAll(consentTemplate, "PATIENT", patient)))
	cmd(t, 0, "st-marys", "push", consent)

	// st-marys opens the case.
	out, _ := cmd(t, 0, "st-marys", "case", "create", "--patient", "Patient/"+patient, "--question", "Is the lung nodule malignant?",
		"--specialty", "oncology", "--language", "en", "--study", study, "--due", "14d", "--json")
	var c caseInfo
	if err := json.Unmarshal([]byte(out), &c); err != nil || c.Status != "draft" || c.Patient != "Patient/"+patient || c.Deadline == nil {
		t.Fatalf("create: %v\n%s", err, out)
	}
	_, stderr := cmd(t, 1, "city-general", "case", "show", c.ID)
	if !strings.Contains(stderr, "404") {
		t.Errorf("city-general sees the case: %s", stderr)
	}

	// cm-ana finds specialists, assigns and releases.
	out, _ = cmd(t, 0, "cm-ana", "case", "specialists", "--specialty", "oncology")
	if !strings.Contains(out, "dr-okafor") || strings.Contains(out, "dr-garcia") {
		t.Errorf("specialists in oncology:\n%s", out)
	}
	out, _ = cmd(t, 0, "cm-ana", "case", "assign", c.ID, "dr-okafor", "dr-garcia")
	if !strings.Contains(out, "assigned to dr-garcia, dr-okafor") {
		t.Errorf("assign:\n%s", out)
	}
	_, stderr = cmd(t, 1, "dr-okafor", "pull", "--case", c.ID, "--out", t.TempDir())
	if !strings.Contains(stderr, "409") {
		t.Errorf("pull before release: %s", stderr)
	}
	out, _ = cmd(t, 0, "cm-ana", "case", "release", c.ID)
	if !strings.Contains(out, "released to dr-garcia, dr-okafor") {
		t.Errorf("release:\n%s", out)
	}

	// dr-okafor pulls through a connection that breaks mid-packet: the
	// first download (the gateway builds the packet as it streams) is
	// cut, the retry resumes from the stored copy with Range + If-Range.
	target, _ := url.Parse(g.URL)
	proxy := startCutProxy(t, target.Host, 64<<10)
	okaforDir := t.TempDir()
	o := defaultPullOptions()
	o.backoff = 2 * time.Second // time for the gateway to finish storing the build
	pullErr, stdout, stderr := pullWith(t, o, "--case", c.ID, "--out", okaforDir,
		"--server", "https://"+proxy.addr, "--as", "dr-okafor", "--data", g.Layout.Dir)
	if pullErr != nil {
		t.Fatalf("pull through the cut: %v\n%s", pullErr, stderr)
	}
	if proxy.conns.Load() < 2 || !strings.Contains(stderr, "retrying") || strings.Contains(stderr, "starting over") {
		t.Errorf("the cut download was not resumed (%d connections):\n%s", proxy.conns.Load(), stderr)
	}
	if !strings.Contains(stdout, "packet verified: case "+c.ID) || !strings.Contains(stdout, "residual identifier scan: clean") {
		t.Fatalf("pull:\n%s", stdout)
	}
	checkUnpacked(t, okaforDir, c.ID)
	manifest, err := os.ReadFile(filepath.Join(okaforDir, c.ID, packet.ManifestPath))
	if err != nil {
		t.Fatal(err)
	}
	m, err := packet.ParseManifest(manifest)
	if err != nil || m.Case.Patient == "" || m.Case.Patient == patient || m.Case.Recipient != "dr-okafor" {
		t.Fatalf("manifest: %v %+v", err, m.Case)
	}
	if !strings.Contains(stdout, "subject Patient/"+m.Case.Patient) {
		t.Errorf("pull does not say what the opinion's subject is:\n%s", stdout)
	}
	garciaDir := t.TempDir()
	cmd(t, 0, "dr-garcia", "pull", "--case", c.ID, "--out", garciaDir)
	checkUnpacked(t, garciaDir, c.ID)

	// Both send opinions about the pseudonymous patient; dr-okafor with a PDF.
	report := func(conclusion string) string {
		return writeTemp(t, "report.json", []byte(`{"resourceType":"DiagnosticReport","status":"final",
		"code":{"coding":[{"system":"http://loinc.org","code":"60570-9"}],"text":"Second opinion"},
		"subject":{"reference":"Patient/`+m.Case.Patient+`"},"conclusion":"`+conclusion+`"}`))
	}
	pdf := writeTemp(t, "opinion.pdf", pdfBytes)
	out, _ = cmd(t, 0, "dr-okafor", "opinion", "submit", "--case", c.ID, report("Benign; follow-up CT in 6 months."), "--pdf", pdf)
	if !strings.Contains(out, "opinion with PDF") || !strings.Contains(out, "from dr-okafor") {
		t.Errorf("submit:\n%s", out)
	}
	cmd(t, 0, "dr-garcia", "opinion", "submit", "--case", c.ID, report("No malignancy seen."))

	// st-marys reads them, about its own patient.
	opDir := filepath.Join(t.TempDir(), "opinions")
	out, _ = cmd(t, 0, "st-marys", "opinion", "list", "--case", c.ID, "--out", opDir)
	for _, w := range []string{"dr-garcia", "No malignancy seen.", "dr-okafor", "Benign; follow-up CT in 6 months.", "Patient/" + patient} {
		if !strings.Contains(out, w) {
			t.Errorf("opinion list does not hold %q:\n%s", w, out)
		}
	}
	if strings.Contains(out, m.Case.Patient) {
		t.Errorf("the hospital sees the pseudonym:\n%s", out)
	}
	if got, _ := os.ReadFile(filepath.Join(opDir, "dr-okafor.pdf")); !bytes.Equal(got, pdfBytes) {
		t.Errorf("dr-okafor.pdf: %q", got)
	}
	var bundle struct {
		Entry []struct {
			Resource struct {
				Subject struct{ Reference string } `json:"subject"`
			} `json:"resource"`
		} `json:"entry"`
	}
	if b, err := os.ReadFile(filepath.Join(opDir, "opinions.json")); err != nil || json.Unmarshal(b, &bundle) != nil || len(bundle.Entry) != 2 {
		t.Fatalf("opinions.json: %v %s", err, b)
	}
	out, _ = cmd(t, 0, "st-marys", "case", "show", c.ID)
	for _, w := range []string{"opinion-received", "opinions      2", "opinion received from dr-okafor", "opinion received from dr-garcia"} {
		if !strings.Contains(out, w) {
			t.Errorf("case show does not hold %q:\n%s", w, out)
		}
	}
	out, _ = cmd(t, 0, "cm-ana", "case", "list", "--status", "opinion-received")
	if !strings.Contains(out, c.ID) {
		t.Errorf("case list:\n%s", out)
	}

	// Cancelled: the packet is refused, with the policy's reasons.
	cmd(t, 0, "st-marys", "case", "cancel", c.ID)
	_, stderr = cmd(t, 1, "dr-okafor", "pull", "--case", c.ID, "--out", t.TempDir())
	if !strings.Contains(stderr, "gateway answered 403") || !strings.Contains(stderr, "\n  - ") {
		t.Errorf("pull after cancel: %s", stderr)
	}
	_, stderr = cmd(t, 1, "cm-ana", "case", "close", c.ID)
	if !strings.Contains(stderr, "409") {
		t.Errorf("close after cancel: %s", stderr)
	}
}

// consentTemplate permits second-opinion sharing with the US and Spain
// (the demo specialists' countries) for PATIENT.
const consentTemplate = `{"resourceType":"Consent","status":"active",
"scope":{"coding":[{"system":"http://terminology.hl7.org/CodeSystem/consentscope","code":"patient-privacy"}]},
"category":[{"coding":[{"system":"http://loinc.org","code":"59284-0"}]}],
"patient":{"reference":"Patient/PATIENT"},
"policyRule":{"coding":[{"system":"http://terminology.hl7.org/CodeSystem/v3-ActCode","code":"OPTIN"}]},
"provision":{"type":"permit","period":{"start":"2020-01-01","end":"2099-12-31"},
 "purpose":[{"system":"https://consilium.health/fhir/CodeSystem/purpose","code":"second-opinion"}],
 "extension":[{"url":"https://consilium.health/fhir/StructureDefinition/recipient-country","valueCode":"US"},
  {"url":"https://consilium.health/fhir/StructureDefinition/recipient-country","valueCode":"ES"}]}}`

func getJSON(t *testing.T, c *http.Client, u string, out any) {
	t.Helper()
	resp, err := c.Get(u)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 {
		t.Fatalf("GET %s: %d %s", u, resp.StatusCode, b)
	}
	if err := json.Unmarshal(b, out); err != nil {
		t.Fatalf("GET %s: %v", u, err)
	}
}
