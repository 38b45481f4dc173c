package audit

import (
	"os/exec"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/consilium/consilium/internal/testenv"
)

func TestCanonicalJSON(t *testing.T) {
	tests := []struct {
		name, in, want string
	}{
		{"sorted members, no space", `{ "b": 1, "a": [true, null, "x"] }`, `{"a":[true,null,"x"],"b":1}`},
		{"nested", `{"z":{"y":2,"x":{"b":"","a":-3}}}`, `{"z":{"x":{"a":-3,"b":""},"y":2}}`},
		{"escapes", `"\u0001\b\t\n\f\r\"\\/\u00e9\u2028<>&"`, "\"\\u0001\\b\\t\\n\\f\\r\\\"\\\\/é\u2028<>&\""},
		{"UTF-16 order", `{"\ud83d\ude00":1,"\uffff":2}`, "{\"\U0001F600\":1,\"\uffff\":2}"},
		{"largest integer", `9007199254740991`, `9007199254740991`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := canonicalJSON([]byte(tt.in))
			if err != nil || string(got) != tt.want {
				t.Errorf("canonicalJSON(%s) = %s, %v; want %s", tt.in, got, err, tt.want)
			}
		})
	}
	for _, bad := range []string{`{"a":1,"a":2}`, `1.5`, `1e3`, `9007199254740992`, "\"\xff\"", `{"a":1} x`, `{`, strings.Repeat("[", 40) + strings.Repeat("]", 40)} {
		if out, err := canonicalJSON([]byte(bad)); err == nil {
			t.Errorf("canonicalJSON(%q) = %s, want an error", bad, out)
		}
	}
}

// TestEntryHashMatchesPython recomputes entry hashes with the Python
// one-liner of the package documentation, an implementation that shares
// nothing with this package.
func TestEntryHashMatchesPython(t *testing.T) {
	py := testenv.LookPath(t, "/usr/bin/python3", "apt-get install python3")
	e := Entry{
		Time: mustTime(t, "2026-01-02T03:04:05.123456789Z"), Source: "gw-1", RequestID: "r1",
		Actor: Actor{ID: "dr-garcia", Org: "dr-garcia", Role: "specialist", Country: "ES"}, Action: "case.packet.download",
		Method: "GET", Target: Target{Case: "c-1", Patient: "p-9"},
		Decision: &Decision{Allow: true, Reasons: []string{"consentimiento activo — «radiología»", `quote " and \ slash`, "tab\there"}, PolicyVersion: "v2"},
		Outcome:  200,
	}
	line, err := e.seal(7, GenesisHash)
	if err != nil {
		t.Fatal(err)
	}
	script := `import json, hashlib, sys
line = sys.stdin.buffer.read()
e = json.loads(line); claimed = e.pop("hash")
canon = json.dumps(e, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
print(hashlib.sha256(canon.encode()).hexdigest(), claimed)`
	cmd := exec.Command(py, "-c", script)
	cmd.Stdin = strings.NewReader(string(line))
	out, err := cmd.Output()
	if err != nil {
		t.Fatal(err)
	}
	f := strings.Fields(string(out))
	if len(f) != 2 || f[0] != e.Hash || f[1] != e.Hash {
		t.Fatalf("python says %q, Go hashed %s", out, e.Hash)
	}
	got, claimed, err := EntryHash(line)
	if err != nil || got != e.Hash || claimed != e.Hash {
		t.Fatalf("EntryHash = %s %s %v, want %s", got, claimed, err, e.Hash)
	}
}

func FuzzCanonicalJSON(f *testing.F) {
	for _, s := range []string{`{"b":1,"a":[true,null,"x"]}`, `"\u00e9"`, `[1,-2,{"c":{}}]`, `{"a":1,"a":2}`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		if len(data) > 1<<16 {
			return
		}
		out, err := canonicalJSON(data)
		if err != nil {
			return
		}
		// Canonical output is valid UTF-8 and a fixed point.
		again, err := canonicalJSON(out)
		if err != nil || string(again) != string(out) || !utf8.Valid(out) {
			t.Fatalf("not a fixed point: %q -> %q -> %q (%v)", data, out, again, err)
		}
	})
}

// FuzzEntryHash feeds arbitrary lines, as a tampered segment holds, to
// the parsing verification does: errors, never panics.
func FuzzEntryHash(f *testing.F) {
	e := Entry{Time: mustTime(f, "2026-01-02T03:04:05Z"), Source: "gw", Action: "a", Outcome: 200}
	line, _ := e.seal(1, GenesisHash)
	f.Add(line)
	f.Add([]byte(`{"hash":1}`))
	f.Add([]byte(`[]`))
	f.Fuzz(func(t *testing.T, line []byte) {
		if len(line) > maxEntryBytes {
			return
		}
		EntryHash(line)
		decodeEntry(line)
		parseCheckpoint(newPub(t), line)
	})
}
