package fhir_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/consilium/consilium/fhir"
)

// FuzzDeidentify: any input is de-identified or refused with ErrNotFHIR
// (or ErrNoDeidPatientKey), never a panic; what comes out is JSON that
// de-identifies again.
func FuzzDeidentify(f *testing.F) {
	files, err := filepath.Glob(filepath.Join(sharedDir(f), "testdata", "fhir", "*", "*"))
	if err != nil {
		f.Fatal(err)
	}
	for _, p := range files {
		b, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		if len(b) > 64<<10 {
			if i := bytes.IndexByte(b, '\n'); i > 0 && i < 64<<10 {
				b = b[:i] // first NDJSON line
			} else {
				continue
			}
		}
		f.Add(b)
	}
	f.Add([]byte(`{"resourceType":"Bundle","entry":[{"fullUrl":"urn:uuid:x","resource":{"resourceType":"Patient"}},{"resource":{"resourceType":"Observation","subject":{"reference":"urn:uuid:x"},"effectiveDateTime":"2020-01-01"}}]}`))
	shifted := newDeid(f, "shifted,keep-free-text", keyed(f))
	harbor := newDeid(f, "safe-harbor", keyed(f))
	f.Fuzz(func(t *testing.T, b []byte) {
		if len(b) > 1<<20 {
			return
		}
		for _, d := range []*fhir.Deidentifier{shifted, harbor} {
			out, _, err := d.Deidentify(context.Background(), b)
			if err != nil {
				if !errors.Is(err, fhir.ErrNotFHIR) && !errors.Is(err, fhir.ErrNoDeidPatientKey) {
					t.Fatalf("unexpected error: %v", err)
				}
				continue
			}
			if out == nil {
				continue // excluded
			}
			if !json.Valid(out) {
				t.Fatalf("output is not JSON: %s", out)
			}
			if _, _, err := d.Deidentify(context.Background(), out); err != nil && !errors.Is(err, fhir.ErrNoDeidPatientKey) {
				t.Fatalf("output does not de-identify again: %v", err)
			}
			var sink bytes.Buffer
			if _, err := d.DeidentifyNDJSON(context.Background(), &sink, bytes.NewReader(b)); err != nil &&
				!errors.Is(err, fhir.ErrNotFHIR) && !errors.Is(err, fhir.ErrNoDeidPatientKey) {
				t.Fatalf("NDJSON: %v", err)
			}
		}
	})
}
