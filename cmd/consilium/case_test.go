package main

import (
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"
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
