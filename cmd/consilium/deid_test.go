package main

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/consilium/consilium/deid"
	"github.com/consilium/consilium/dicom"
	"github.com/consilium/consilium/internal/testenv"
)

func shared(t *testing.T, parts ...string) string {
	t.Helper()
	p := filepath.Join(append([]string{"..", "..", "..", "shared", "testdata"}, parts...)...)
	if _, err := os.Stat(p); err != nil {
		testenv.Missing(t, "../shared/testdata", "the shared test corpus must sit next to the repository")
	}
	return p
}

func secretFile(t *testing.T, n int) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "secret")
	if err := os.WriteFile(p, bytes.Repeat([]byte{9}, n), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestDeidDICOM(t *testing.T) {
	secret := secretFile(t, 32)
	out := t.TempDir()
	ts := shared(t, "dicom", "transfer-syntax")
	code, stdout, stderr := runCLI(t, nil, "deid", "dicom", "--profile", "basic,retain-long-modified-dates", "--secret-file", secret, "--out", out,
		filepath.Join(ts, "MR_small_implicit.dcm"), filepath.Join(ts, "MR_small_bigendian.dcm"), shared(t, "dicom", "modality", "us"))
	if code != 0 {
		t.Fatalf("exit %d\n%s\n%s", code, stdout, stderr)
	}
	if !strings.Contains(stdout, "5 de-identified, 2 may show burned-in text") {
		t.Errorf("summary:\n%s", stdout)
	}
	files, _ := filepath.Glob(filepath.Join(out, "*"))
	if len(files) != 5 {
		t.Fatalf("%d outputs: %v", len(files), files)
	}
	studies := map[string]bool{}
	for _, f := range files {
		if !regexp.MustCompile(`^2\.25\.[0-9]+(-[0-9]+)?\.dcm$`).MatchString(filepath.Base(f)) {
			t.Errorf("output name %q", filepath.Base(f))
		}
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		s, err := dicom.Inspect(bytes.NewReader(b), dicom.ReaderOptions{})
		if err != nil {
			t.Errorf("%s: %v", f, err)
			continue
		}
		if s.Modality == "MR" {
			studies[s.StudyInstanceUID] = true
			if s.PatientID == "" || bytes.Contains(b, []byte("CompressedSamples")) {
				t.Errorf("identifiers left in %s", f)
			}
		}
	}
	if len(studies) != 1 {
		t.Errorf("the two MR encodings of one study got %d Study UIDs", len(studies))
	}

	// Same secret, same pseudonyms: a second run names its files alike.
	again := t.TempDir()
	if code, stdout, _ := runCLI(t, nil, "deid", "dicom", "--profile", "basic,retain-long-modified-dates", "--secret-file", secret, "--out", again, filepath.Join(ts, "MR_small_implicit.dcm")); code != 0 {
		t.Fatal(stdout)
	}
	second, _ := filepath.Glob(filepath.Join(again, "*"))
	if len(second) != 1 {
		t.Fatalf("%v", second)
	}
	// MR_small_implicit and MR_small_bigendian hold the same instance:
	// one of them got a "-2" suffix in the first run.
	if _, err := os.Stat(filepath.Join(out, filepath.Base(second[0]))); err != nil {
		t.Errorf("second run is not deterministic: %v", err)
	}
	if !strings.Contains(stdout, "another input holds the same SOP Instance UID") {
		t.Errorf("duplicate instance not reported:\n%s", stdout)
	}
}

func TestDeidDICOMFailures(t *testing.T) {
	secret := secretFile(t, 32)
	code, stdout, _ := runCLI(t, map[string]string{"CONSILIUM_DEID_SECRET_FILE": secret}, "deid", "dicom", "--profile", "basic", "--out", t.TempDir(),
		shared(t, "dicom", "invalid", "MR_truncated.dcm"), shared(t, "dicom", "modality", "mr", "MR_small.dcm"))
	if code != 1 || !strings.Contains(stdout, "FAIL") || !strings.Contains(stdout, "truncated") || !strings.Contains(stdout, "1 de-identified") {
		t.Errorf("exit %d\n%s", code, stdout)
	}
	tests := []struct {
		name string
		args []string
		want int
	}{
		{"no kind", []string{"deid"}, 2},
		{"bad kind", []string{"deid", "hl7", "--secret-file", secret, "--out", "x", "y"}, 2},
		{"bad profile", []string{"deid", "dicom", "--profile", "basic,nope", "--secret-file", secret, "--out", t.TempDir(), "x"}, 2},
		{"no secret", []string{"deid", "dicom", "--profile", "basic", "--out", t.TempDir(), "x"}, 2},
		{"no inputs", []string{"deid", "dicom", "--profile", "basic", "--secret-file", secret, "--out", t.TempDir()}, 2},
		{"short secret", []string{"deid", "dicom", "--profile", "basic", "--secret-file", secretFile(t, 8), "--out", t.TempDir(), shared(t, "dicom", "modality", "mr", "MR_small.dcm")}, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if code, _, stderr := runCLI(t, nil, tt.args...); code != tt.want {
				t.Errorf("exit %d, want %d: %s", code, tt.want, stderr)
			}
		})
	}
}

func TestDeidFHIR(t *testing.T) {
	secret := secretFile(t, 32)
	out := filepath.Join(t.TempDir(), "patient.json")
	code, stdout, stderr := runCLI(t, nil, "deid", "fhir", "--profile", "safe-harbor", "--secret-file", secret, "--out", out,
		shared(t, "fhir", "hl7-examples", "patient-example.json"))
	if code != 0 {
		t.Fatalf("exit %d\n%s\n%s", code, stdout, stderr)
	}
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range []string{"Chalmers", "Peter", "12345", "1974-12-25", "534 Erewhon"} {
		if bytes.Contains(b, []byte(v)) {
			t.Errorf("%q survives", v)
		}
	}

	dir := t.TempDir()
	code, stdout, _ = runCLI(t, nil, "deid", "fhir", "--secret-file", secret, "--out", dir,
		shared(t, "fhir", "hl7-examples", "consent-example.json"), shared(t, "fhir", "invalid", "json-comma-bad-1.json"), shared(t, "fhir", "synthea"))
	if code != 1 || !strings.Contains(stdout, "EXCLUDED") || !strings.Contains(stdout, "FAIL") {
		t.Errorf("exit %d\n%s", code, stdout)
	}
	files, _ := filepath.Glob(filepath.Join(dir, "*.json"))
	if len(files) != 7 {
		t.Errorf("%d outputs", len(files))
	}
	for _, f := range files {
		if strings.Contains(f, "Mejia") || strings.Contains(f, "Gustavo") {
			t.Errorf("output name shows a name: %s", f)
		}
	}
}

// TestDeidSamePatient runs the CLI on a DICOM instance and on a FHIR
// Patient whose MRN is the DICOM Patient ID: one pseudonym.
func TestDeidSamePatient(t *testing.T) {
	secret := secretFile(t, 32)
	dout := t.TempDir()
	if code, stdout, _ := runCLI(t, nil, "deid", "dicom", "--profile", "basic", "--secret-file", secret, "--out", dout, shared(t, "dicom", "modality", "ct", "CT_small.dcm")); code != 0 {
		t.Fatal(stdout)
	}
	files, _ := filepath.Glob(filepath.Join(dout, "*.dcm"))
	b, err := os.ReadFile(files[0])
	if err != nil {
		t.Fatal(err)
	}
	s, err := dicom.Inspect(bytes.NewReader(b), dicom.ReaderOptions{})
	if err != nil {
		t.Fatal(err)
	}
	in := filepath.Join(t.TempDir(), "p.json")
	os.WriteFile(in, []byte(`{"resourceType":"Patient","id":"x","identifier":[{"type":{"coding":[{"system":"http://terminology.hl7.org/CodeSystem/v2-0203","code":"MR"}]},"value":"1CT1"}]}`), 0o600)
	fout := filepath.Join(t.TempDir(), "o.json")
	if code, stdout, _ := runCLI(t, nil, "deid", "fhir", "--secret-file", secret, "--out", fout, in); code != 0 {
		t.Fatal(stdout)
	}
	fb, _ := os.ReadFile(fout)
	if !bytes.Contains(fb, []byte(`"id": "`+s.PatientID+`"`)) {
		t.Errorf("FHIR id differs from DICOM Patient ID %s:\n%s", s.PatientID, fb)
	}
}

// TestMemoSource checks that the memo gives the source's answers, with
// repeated and duplicated UIDs, across patients, and after it forgets.
func TestMemoSource(t *testing.T) {
	ctx := context.Background()
	k, err := deid.NewKeyed(bytes.Repeat([]byte{7}, 32), deid.KeyedOptions{})
	if err != nil {
		t.Fatal(err)
	}
	m := newMemoSource(k)
	for i := range memoMax + 500 {
		key := "patient-" + strconv.Itoa(i%3)
		originals := []string{"1.2.3", "1.2.3." + strconv.Itoa(i), "1.2.3", "1.2.4." + strconv.Itoa(i%7)}
		got, err := m.UIDs(ctx, key, originals)
		if err != nil {
			t.Fatal(err)
		}
		want, _ := k.UIDs(ctx, key, originals)
		if !slices.Equal(got, want) {
			t.Fatalf("UIDs(%s, %v) = %v, want %v", key, originals, got, want)
		}
		gotP, err := m.Patient(ctx, key)
		wantP, _ := k.Patient(ctx, key)
		if err != nil || gotP != wantP {
			t.Fatalf("Patient(%s) = %v, %v, want %v", key, gotP, err, wantP)
		}
	}
	if len(m.uids) > memoMax {
		t.Errorf("memo holds %d UIDs, more than %d", len(m.uids), memoMax)
	}
	if _, err := m.Patient(ctx, ""); !errors.Is(err, deid.ErrNoPatientKey) {
		t.Errorf("empty key: %v", err)
	}
	if _, err := m.UIDs(ctx, "", []string{"1.2.5"}); !errors.Is(err, deid.ErrNoPatientKey) {
		t.Errorf("UIDs with an empty key: %v", err)
	}
}
