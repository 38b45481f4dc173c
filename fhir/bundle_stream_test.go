package fhir

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/consilium/consilium/storage"
)

// summary describes what parsing a Bundle gave: its type or error, and
// per entry the request, the error and the parsed resource.
func summary(typ string, es []*entry, err error) string {
	if err != nil {
		return "error: " + err.Error()
	}
	out := "type " + typ + "\n"
	for _, e := range es {
		res := "-"
		if e.res != nil {
			res = e.res.Type + "/" + e.res.ID
		}
		out += fmt.Sprintf("%d %s %s %q %v tree=%t res=%s\n", e.index, e.method, e.typ, e.fullURL, e.err, e.tree != nil, res)
	}
	return out
}

// checkSameAsPlain checks that parseBundle (decoding and parsing
// overlapped) gives what parseEnvelope then parseEntries give.
func checkSameAsPlain(t *testing.T, s *Store, body []byte) {
	t.Helper()
	typ, es, err := parseEnvelope(body)
	if err == nil {
		s.parseEntries(es)
	}
	want := summary(typ, es, err)
	typ, es, err = s.parseBundle(body)
	if got := summary(typ, es, err); got != want {
		t.Fatalf("parseBundle of %.200q:\n%s\nplain path:\n%s", body, got, want)
	}
}

func newTestStore(t testing.TB) *Store {
	fs, err := storage.NewFilesystem(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	s, err := NewStore(fs, StoreOptions{Names: func(kind, v string) string { return kind + v }, Workers: 2})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestParseBundleSameAsPlain(t *testing.T) {
	s := newTestStore(t)
	ent := `{"fullUrl":"urn:uuid:a","resource":{"resourceType":"Patient","gender":"female"},"request":{"method":"POST","url":"Patient"}}`
	bad := `{"resource":{"resourceType":"Observation","status":"nonsense"},"request":{"method":"POST","url":"Observation"}}`
	for _, tc := range []struct{ name, body string }{
		{"transaction", `{"resourceType":"Bundle","type":"transaction","entry":[` + ent + `,` + bad + `]}`},
		{"entry first", `{"entry":[` + ent + `],"type":"batch","resourceType":"Bundle"}`},
		{"no entries", `{"resourceType":"Bundle","type":"batch"}`},
		{"empty entries", `{"resourceType":"Bundle","type":"batch","entry":[]}`},
		{"null entries", `{"resourceType":"Bundle","type":"batch","entry":null}`},
		{"entry not an array", `{"resourceType":"Bundle","type":"batch","entry":{}}`},
		{"entry repeated", `{"resourceType":"Bundle","type":"batch","entry":[` + ent + `],"entry":[` + bad + `]}`},
		{"type repeated", `{"resourceType":"Bundle","type":"batch","type":"transaction","entry":[` + ent + `]}`},
		{"duplicate fullUrl", `{"resourceType":"Bundle","type":"batch","entry":[` + ent + `,` + ent + `]}`},
		{"not a Bundle", `{"resourceType":"Patient","type":"batch","entry":[` + ent + `]}`},
		{"collection", `{"resourceType":"Bundle","type":"collection","entry":[` + ent + `]}`},
		{"unknown element", `{"resourceType":"Bundle","type":"batch","oops":1,"entry":[` + ent + `]}`},
		{"entry not an object", `{"resourceType":"Bundle","type":"batch","entry":[1,` + ent + `]}`},
		{"array", `[` + ent + `]`},
		{"truncated", `{"resourceType":"Bundle","type":"batch","entry":[` + ent},
		{"syntax error in an entry", `{"resourceType":"Bundle","type":"batch","entry":[{"request":}]}`},
		{"data after", `{"resourceType":"Bundle","type":"batch"} {}`},
		{"garbage after", `{"resourceType":"Bundle","type":"batch"} ]`},
		{"empty", ``},
	} {
		t.Run(tc.name, func(t *testing.T) { checkSameAsPlain(t, s, []byte(tc.body)) })
	}
	// The regular case does take the overlapped path.
	work := make(chan *entry, 2)
	body := `{"entry":[` + ent + `,` + bad + `],"type":"transaction","resourceType":"Bundle"}`
	if _, es, ok := streamEnvelope([]byte(body), work); !ok || len(es) != 2 || len(work) != 2 {
		t.Fatalf("streamEnvelope of a regular Bundle: ok %t, %d entries, %d sent to parse", ok, len(es), len(work))
	}
}

// repoShared returns ../shared next to the directory holding go.mod.
func repoShared(t testing.TB) string {
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return filepath.Join(dir, "..", "shared")
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatal("no go.mod above the test")
		}
		dir = parent
	}
}

// FuzzParseBundleSame: for any body, overlapping decoding and parsing
// changes nothing in the outcome.
func FuzzParseBundleSame(f *testing.F) {
	files, _ := filepath.Glob(filepath.Join(repoShared(f), "testdata", "fhir", "*", "*.json"))
	for _, p := range files {
		if b, err := os.ReadFile(p); err == nil && len(b) <= 512<<10 {
			f.Add(b)
		}
	}
	f.Add([]byte(`{"resourceType":"Bundle","type":"batch","entry":[{"request":{"method":"GET","url":"Patient"}}]}`))
	s := newTestStore(f)
	f.Fuzz(func(t *testing.T, body []byte) {
		if len(body) > 512<<10 {
			return
		}
		checkSameAsPlain(t, s, body)
	})
}
