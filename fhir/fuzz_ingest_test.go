package fhir_test

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"

	"github.com/consilium/consilium/fhir"
	"github.com/consilium/consilium/storage"
)

// fuzzSeeds adds the corpus files (and each NDJSON file's first lines) of
// at most max bytes.
func fuzzSeeds(f *testing.F, max int) {
	files, err := filepath.Glob(filepath.Join(sharedDir(f), "testdata", "fhir", "*", "*"))
	if err != nil {
		f.Fatal(err)
	}
	for _, p := range files {
		b, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		if len(b) > max {
			lines := bytes.SplitN(b, []byte("\n"), 4)
			if len(lines) < 4 {
				continue
			}
			b = bytes.Join(lines[:3], []byte("\n"))
			if len(b) > max {
				continue
			}
		}
		f.Add(b)
	}
	f.Add([]byte(`{"resourceType":"Bundle","type":"transaction","entry":[{"fullUrl":"urn:uuid:a","resource":{"resourceType":"Patient"},"request":{"method":"POST","url":"Patient"}},{"resource":{"resourceType":"Observation","status":"final","code":{"text":"x"},"subject":{"reference":"urn:uuid:a"}},"request":{"method":"POST","url":"Observation","ifNoneExist":"identifier=a|b"}},{"request":{"method":"DELETE","url":"Patient?_id=a"}},{"request":{"method":"GET","url":"Observation?patient=a"}}]}`))
}

// fuzzStore is an unencrypted filesystem store: the fuzzers are about
// parsing and planning, not encryption.
func fuzzStore(f *testing.F) *fhir.Store {
	fs, err := storage.NewFilesystem(f.TempDir())
	if err != nil {
		f.Fatal(err)
	}
	st, err := fhir.NewStore(fs, fhir.StoreOptions{Names: func(kind, v string) string { return "x" + kind }, MaxLineBytes: 64 << 10})
	if err != nil {
		f.Fatal(err)
	}
	return st
}

// FuzzProcessBundle: any body is processed or refused with one of the
// package's error kinds, never a panic; what a success reports as stored
// reads back as JSON.
func FuzzProcessBundle(f *testing.F) {
	fuzzSeeds(f, 512<<10)
	st := fuzzStore(f)
	auth := &allow{}
	f.Fuzz(func(t *testing.T, b []byte) {
		if len(b) > 1<<20 {
			return
		}
		ctx := context.Background()
		res, err := st.ProcessBundle(ctx, "fuzz", b, writeOpts(auth))
		if err != nil {
			if fhir.KindOf(err) == nil {
				t.Fatalf("error of no kind: %v", err)
			}
			return
		}
		for _, e := range res.Entries {
			if e.Err != nil || e.VersionID == 0 || e.Status == 204 {
				continue
			}
			v, err := st.VRead(ctx, "fuzz", e.Type, e.ID, e.VersionID)
			if err != nil {
				t.Fatalf("%s/%s/_history/%d reported stored: %v", e.Type, e.ID, e.VersionID, err)
			}
			body, err := st.Body(ctx, v)
			if err != nil || !json.Valid(body) {
				t.Fatalf("stored body: %v %q", err, body)
			}
		}
		out := res.AppendJSON(nil)
		if !json.Valid(out) {
			t.Fatalf("response is not JSON: %s", out)
		}
	})
}

// FuzzLoadNDJSON: any stream is loaded line by line or refused, never a
// panic; each line's outcome is reported.
func FuzzLoadNDJSON(f *testing.F) {
	fuzzSeeds(f, 256<<10)
	st := fuzzStore(f)
	auth := &allow{}
	f.Fuzz(func(t *testing.T, b []byte) {
		if len(b) > 1<<20 {
			return
		}
		res, err := st.LoadNDJSON(context.Background(), "fuzz", bytes.NewReader(b), writeOpts(auth))
		if err != nil {
			if fhir.KindOf(err) == nil {
				t.Fatalf("error of no kind: %v", err)
			}
			return
		}
		lines := 0
		for _, l := range bytes.Split(b, []byte("\n")) {
			if len(bytes.TrimSpace(l)) > 0 {
				lines++
			}
		}
		if len(res.Entries) != lines {
			t.Fatalf("%d outcomes for %d lines", len(res.Entries), lines)
		}
		if !json.Valid(res.AppendJSON(nil)) {
			t.Fatal("response is not JSON")
		}
	})
}

// FuzzParse: the parser refuses or accepts, never panics, and what it
// accepts it accepts again once stored and read back.
func FuzzParse(f *testing.F) {
	fuzzSeeds(f, 256<<10)
	st := fuzzStore(f)
	auth := &allow{}
	f.Fuzz(func(t *testing.T, b []byte) {
		if len(b) > 1<<20 {
			return
		}
		res, err := st.Parser().Parse(b)
		if err != nil {
			if fhir.KindOf(err) == nil {
				t.Fatalf("error of no kind: %v", err)
			}
			return
		}
		ctx := context.Background()
		if !fhir.KnownType(res.Type) {
			t.Fatalf("accepted unknown type %q", res.Type)
		}
		if res.Type == "Bundle" {
			return // documents are stored at /fhir/Bundle like any resource, but keep the fuzzer fast
		}
		out, err := st.Create(ctx, "fuzz", res.Type, b, "", writeOpts(auth))
		if err != nil {
			t.Fatalf("a parsed resource was not stored: %v", err)
		}
		v, err := st.Read(ctx, "fuzz", out.Type, out.ID)
		if err != nil {
			t.Fatal(err)
		}
		body, err := st.Body(ctx, v)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := st.Parser().Parse(body); err != nil {
			t.Fatalf("stored form does not parse: %v\n%s", err, body)
		}
		if eq, err := st.Parser().Equal(withoutMeta(t, b, out.ID), withoutMeta(t, body, out.ID)); err != nil || !eq {
			t.Fatalf("stored form differs (%v):\n%s\n%s", err, b, body)
		}
	})
}

// withoutMeta drops id and the server's meta for comparisons.
func withoutMeta(t *testing.T, b []byte, id string) []byte {
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	m["id"] = id
	if meta, ok := m["meta"].(map[string]any); ok {
		delete(meta, "versionId")
		delete(meta, "lastUpdated")
		if len(meta) == 0 {
			delete(m, "meta")
		}
	}
	out, _ := json.Marshal(m)
	return out
}
