package fhir_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/google/fhir/go/fhirversion"
	"github.com/google/fhir/go/jsonformat"

	"github.com/consilium/consilium/deid"
	"github.com/consilium/consilium/fhir"
	"github.com/consilium/consilium/internal/testenv"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/")

var testSecret = bytes.Repeat([]byte{0x5a}, 32)

func sharedDir(t testing.TB) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			break
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatal("go.mod not found")
		}
		dir = parent
	}
	shared := filepath.Join(dir, "..", "shared")
	if _, err := os.Stat(filepath.Join(shared, "testdata", "fhir")); err != nil {
		testenv.Missing(t, "../shared/testdata", "the shared test corpus must sit next to the repository")
	}
	return shared
}

func fhirFiles(t testing.TB, sub string) []string {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(sharedDir(t), "testdata", "fhir", sub, "*"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no files in %s: %v", sub, err)
	}
	sort.Strings(files)
	return files
}

// cliKey is the CLI's patient key rule.
func cliKey(p fhir.DeidPatient) (string, error) {
	switch {
	case p.MRN != "":
		return p.MRN, nil
	case p.ID != "":
		return p.ID, nil
	}
	return p.FullURL, nil
}

func keyed(t testing.TB) *deid.Keyed {
	t.Helper()
	k, err := deid.NewKeyed(testSecret, deid.KeyedOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func newDeid(t testing.TB, profile string, src deid.Source, opts ...func(*fhir.DeidOptions)) *fhir.Deidentifier {
	t.Helper()
	p, err := deid.ParseFHIRProfile(profile)
	if err != nil {
		t.Fatal(err)
	}
	o := fhir.DeidOptions{Profile: p, Source: src, PatientKey: cliKey,
		Now: func() time.Time { return time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC) }}
	for _, f := range opts {
		f(&o)
	}
	d, err := fhir.NewDeidentifier(o)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func validR4(t *testing.T, b []byte) error {
	t.Helper()
	um, err := jsonformat.NewUnmarshaller("UTC", fhirversion.R4)
	if err != nil {
		t.Fatal(err)
	}
	_, err = um.Unmarshal(b)
	return err
}

// TestGolden de-identifies the HL7 examples and the Synthea bundles under
// both profiles, compares with testdata/golden (go test -update rewrites
// them), and checks that every output the R4 parser of google/fhir reads
// when it reads the input.
func TestGolden(t *testing.T) {
	files := append(fhirFiles(t, "hl7-examples"), fhirFiles(t, "synthea")...)
	for _, profile := range []string{"shifted", "safe-harbor"} {
		d := newDeid(t, profile, keyed(t))
		for _, f := range files {
			name := filepath.Base(f)
			t.Run(profile+"/"+name, func(t *testing.T) {
				in, err := os.ReadFile(f)
				if err != nil {
					t.Fatal(err)
				}
				out, rep, err := d.Deidentify(context.Background(), in)
				if err != nil {
					t.Fatal(err)
				}
				if out != nil && validR4(t, in) == nil {
					if err := validR4(t, out); err != nil {
						t.Errorf("output is not valid R4: %v", err)
					}
				}
				repJSON, err := json.MarshalIndent(rep, "", "  ")
				if err != nil {
					t.Fatal(err)
				}
				golden(t, filepath.Join("testdata", "golden", profile, name), out)
				golden(t, filepath.Join("testdata", "golden", profile, strings.TrimSuffix(name, ".json")+".report.json"), repJSON)
			})
		}
	}
}

func golden(t *testing.T, path string, got []byte) {
	t.Helper()
	if *update {
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test -update)", err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("%s differs from the golden file (run go test -update and review the diff)", path)
	}
}

// identifying collects, from a Synthea bundle, what must not survive:
// names, identifier values, phone numbers, e-mail addresses, address
// lines and exact birth dates, of patients and of everyone else.
func identifying(t *testing.T, in []byte) []string {
	var root any
	if err := json.Unmarshal(in, &root); err != nil {
		t.Fatal(err)
	}
	set := map[string]bool{}
	var walk func(key string, v any)
	walk = func(key string, v any) {
		switch v := v.(type) {
		case map[string]any:
			for k, x := range v {
				switch k {
				case "family", "line", "city":
					collect(set, x)
				case "given", "prefix":
					collect(set, x)
				case "birthDate":
					collect(set, x)
				}
				if key == "identifier" && k == "value" {
					collect(set, x)
				}
				if key == "telecom" && k == "value" {
					collect(set, x)
				}
				walk(k, x)
			}
		case []any:
			for _, x := range v {
				walk(key, x)
			}
		}
	}
	walk("", root)
	var out []string
	for s := range set {
		out = append(out, s)
	}
	sort.Strings(out)
	return out
}

func collect(set map[string]bool, v any) {
	switch v := v.(type) {
	case string:
		// Titles such as "Mr." say nothing on their own.
		if len(v) >= 4 || (len(v) >= 3 && !strings.HasSuffix(v, ".")) {
			set[v] = true
		}
	case []any:
		for _, x := range v {
			collect(set, x)
		}
	}
}

// TestSyntheaNoLeak scans every de-identified Synthea bundle (and the
// bulk Patient export) for each original name, identifier value, phone,
// e-mail, address line and exact birth date.
func TestSyntheaNoLeak(t *testing.T) {
	files := append(fhirFiles(t, "synthea"), filepath.Join(sharedDir(t), "testdata", "fhir", "ndjson", "Patient.000.ndjson"))
	total := 0
	for _, profile := range []string{"shifted", "safe-harbor", "shifted,keep-free-text"} {
		d := newDeid(t, profile, keyed(t))
		for _, f := range files {
			t.Run(profile+"/"+filepath.Base(f), func(t *testing.T) {
				in, err := os.ReadFile(f)
				if err != nil {
					t.Fatal(err)
				}
				var out []byte
				var ids []string
				if strings.HasSuffix(f, ".ndjson") {
					var b bytes.Buffer
					if _, err := d.DeidentifyNDJSON(context.Background(), &b, bytes.NewReader(in)); err != nil {
						t.Fatal(err)
					}
					out = b.Bytes()
					for _, line := range bytes.Split(in, []byte("\n")) {
						if len(bytes.TrimSpace(line)) > 0 {
							ids = append(ids, identifying(t, line)...)
						}
					}
				} else {
					out, _, err = d.Deidentify(context.Background(), in)
					if err != nil {
						t.Fatal(err)
					}
					ids = identifying(t, in)
				}
				if len(ids) < 10 {
					t.Fatalf("only %d identifying values found in the input", len(ids))
				}
				total += len(ids)
				for _, v := range ids {
					// A short number (an NPI such as "300") is looked for
					// as a whole JSON string: as a substring it turns up in
					// any pseudonymous UUID.
					needle := v
					if len(v) < 6 && strings.Trim(v, "0123456789") == "" {
						needle = `"` + v + `"`
					}
					if bytes.Contains(out, []byte(needle)) {
						t.Errorf("%q survives", v)
					}
				}
			})
		}
	}
	t.Logf("%d identifying values checked", total)
}

func TestShiftedAndSafeHarborDates(t *testing.T) {
	src := keyed(t)
	in := []byte(`{"resourceType":"Bundle","type":"collection","entry":[
	 {"fullUrl":"urn:uuid:11111111-1111-1111-1111-111111111111","resource":{"resourceType":"Patient","id":"p1",
	  "identifier":[{"type":{"coding":[{"system":"http://terminology.hl7.org/CodeSystem/v2-0203","code":"MR"}]},"system":"urn:mrn","value":"MRN-77"}],
	  "birthDate":"1930-05-06","address":[{"line":["1 Main St"],"city":"Boston","state":"MA","postalCode":"02124","country":"US"},{"postalCode":"03601","country":"US"}]}},
	 {"resource":{"resourceType":"Observation","id":"o1","status":"final","code":{"text":"weight","coding":[{"system":"http://loinc.org","code":"29463-7"}]},
	  "subject":{"reference":"urn:uuid:11111111-1111-1111-1111-111111111111","display":"John Doe"},
	  "effectiveDateTime":"2020-02-03T10:11:12+01:00","issued":"2020-02","note":[{"text":"Doe said hi","time":"2020-02-03"}]}},
	 {"resource":{"resourceType":"Condition","id":"c1","subject":{"reference":"Patient/p1"},"onsetAge":{"value":93,"unit":"a","system":"http://unitsofmeasure.org","code":"a"},
	  "code":{"text":"free text"}}}]}`)
	p, _ := src.Patient(context.Background(), "MRN-77")
	shift := func(d string) string {
		tm, _ := time.Parse("2006-01-02", d)
		return tm.AddDate(0, 0, p.OffsetDays).Format("2006-01-02")
	}
	tests := []struct {
		profile string
		want    []string
		absent  []string
	}{
		{"shifted", []string{
			`"birthDate": "` + shift("1930-05-06") + `"`,
			`"effectiveDateTime": "` + shift("2020-02-03") + `T10:11:12+01:00"`,
			`"issued": "2020"`,
			`"id": "` + p.Pseudonym + `"`,
			`"value": "` + p.Pseudonym + `"`,
			`"comparator": ">="`,
		}, []string{"02124", "Boston", "Main St", "John Doe", "Doe said", "MRN-77", "free text", "1930-05-06"}},
		{"safe-harbor", []string{
			`"birthDate"`, // dropped below: 1930 is 90+ years before 2026
			`"effectiveDateTime": "2020"`,
			`"postalCode": "021"`,
			`"postalCode": "000"`,
			`"comparator": ">="`,
		}, []string{"02124", "Boston", "1930", "2020-02-03", "John Doe", "Doe said", "MRN-77"}},
	}
	for _, tt := range tests {
		t.Run(tt.profile, func(t *testing.T) {
			out, _, err := newDeid(t, tt.profile, src).Deidentify(context.Background(), in)
			if err != nil {
				t.Fatal(err)
			}
			s := string(out)
			for _, w := range tt.want {
				if tt.profile == "safe-harbor" && w == `"birthDate"` {
					if strings.Contains(s, w) {
						t.Errorf("birth date of a 90+ patient kept")
					}
					continue
				}
				if !strings.Contains(s, w) {
					t.Errorf("want %s in\n%s", w, s)
				}
			}
			for _, a := range tt.absent {
				if strings.Contains(s, a) {
					t.Errorf("%q survives", a)
				}
			}
			// References resolve within the bundle.
			var b struct {
				Entry []struct {
					FullURL  string         `json:"fullUrl"`
					Resource map[string]any `json:"resource"`
				} `json:"entry"`
			}
			if err := json.Unmarshal(out, &b); err != nil {
				t.Fatal(err)
			}
			subj := b.Entry[1].Resource["subject"].(map[string]any)["reference"]
			if subj != b.Entry[0].FullURL {
				t.Errorf("subject %v does not point at the patient entry %v", subj, b.Entry[0].FullURL)
			}
			if ref := b.Entry[2].Resource["subject"].(map[string]any)["reference"]; ref != "Patient/"+p.Pseudonym {
				t.Errorf("Condition.subject = %v", ref)
			}
		})
	}
}

func TestSensitiveExclusion(t *testing.T) {
	in := []byte(`{"resourceType":"Bundle","type":"collection","entry":[
	 {"resource":{"resourceType":"Patient","id":"p1"}},
	 {"resource":{"resourceType":"Condition","id":"c1","subject":{"reference":"Patient/p1"},"meta":{"security":[{"system":"http://terminology.hl7.org/CodeSystem/v3-ActCode","code":"PSY"}]}}},
	 {"resource":{"resourceType":"Condition","id":"c2","subject":{"reference":"Patient/p1"},"meta":{"security":[{"code":"SUD"}]}}},
	 {"resource":{"resourceType":"Observation","id":"o1","status":"final","code":{"coding":[{"code":"x"}]},"subject":{"reference":"Patient/p1"},
	  "derivedFrom":[{"reference":"Condition/c1"}],"hasMember":[{"reference":"Observation/o2"}]}},
	 {"resource":{"resourceType":"RelatedPerson","id":"r1","patient":{"reference":"Patient/p1"},"name":[{"family":"Mum"}]}}]}`)
	d := newDeid(t, "shifted", keyed(t), func(o *fhir.DeidOptions) { o.SensitiveLabels = []string{"SUD"} })
	out, rep, err := d.Deidentify(context.Background(), in)
	if err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(string(out), `"resourceType": "Condition"`); n != 0 {
		t.Errorf("%d sensitive conditions kept", n)
	}
	if strings.Contains(string(out), "RelatedPerson") || strings.Contains(string(out), "Mum") {
		t.Error("related person kept")
	}
	if strings.Contains(string(out), "derivedFrom") {
		t.Error("a reference to an excluded resource survives")
	}
	if !strings.Contains(string(out), `"hasMember"`) {
		t.Error("a reference outside the bundle was dropped")
	}
	want := map[string]int{"Condition/sensitive label PSY": 1, "Condition/sensitive label SUD": 1, "RelatedPerson/relatives and household members": 1}
	for _, e := range rep.Excluded {
		k := e.ResourceType + "/" + e.Reason
		if want[k] != e.Count {
			t.Errorf("excluded %s: %d", k, e.Count)
		}
		delete(want, k)
	}
	if len(want) > 0 || rep.ExcludedCount() != 3 {
		t.Errorf("missing exclusions %v", want)
	}
}

// TestImagingStudyUIDs checks that ImagingStudy UIDs are remapped as
// DICOM de-identification remaps them.
func TestImagingStudyUIDs(t *testing.T) {
	src := keyed(t)
	in, err := os.ReadFile(filepath.Join(sharedDir(t), "testdata", "fhir", "hl7-examples", "imagingstudy-example.json"))
	if err != nil {
		t.Fatal(err)
	}
	out, _, err := newDeid(t, "shifted", src).Deidentify(context.Background(), in)
	if err != nil {
		t.Fatal(err)
	}
	var orig, got struct {
		Identifier []struct{ System, Value string }
		Series     []struct {
			UID      string
			Instance []struct{ UID string }
		}
	}
	if err := json.Unmarshal(in, &orig); err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(out, &got); err != nil {
		t.Fatal(err)
	}
	if got.Series[0].UID != src.UID(orig.Series[0].UID) || got.Series[0].Instance[0].UID != src.UID(orig.Series[0].Instance[0].UID) {
		t.Errorf("series/instance UIDs not remapped as DICOM does: %+v", got.Series)
	}
	for i, id := range orig.Identifier {
		if id.System == "urn:dicom:uid" && got.Identifier[i].Value != "urn:oid:"+src.UID(strings.TrimPrefix(id.Value, "urn:oid:")) {
			t.Errorf("study UID identifier = %q", got.Identifier[i].Value)
		}
	}
}

func TestNDJSON(t *testing.T) {
	f := filepath.Join(sharedDir(t), "testdata", "fhir", "ndjson", "AllergyIntolerance.000.ndjson")
	in, err := os.ReadFile(f)
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	rep, err := newDeid(t, "shifted", keyed(t)).DeidentifyNDJSON(context.Background(), &out, bytes.NewReader(in))
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	if len(lines) != 11 || rep.Resources != 11 {
		t.Fatalf("%d lines, %d resources", len(lines), rep.Resources)
	}
	for _, l := range lines {
		if err := validR4(t, []byte(l)); err != nil {
			t.Errorf("line not valid R4: %v", err)
		}
	}
}

func TestInvalidInput(t *testing.T) {
	d := newDeid(t, "shifted", keyed(t))
	for _, f := range fhirFiles(t, "invalid") {
		t.Run(filepath.Base(f), func(t *testing.T) {
			in, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			out, _, err := d.Deidentify(context.Background(), in)
			if err != nil {
				if !errors.Is(err, fhir.ErrNotFHIR) {
					t.Errorf("err = %v, want ErrNotFHIR", err)
				}
				return
			}
			// Valid JSON with FHIR defects: de-identified all the same.
			if !json.Valid(out) {
				t.Error("output is not JSON")
			}
		})
	}
	if _, _, err := d.Deidentify(context.Background(), []byte(`{"a":1}`)); !errors.Is(err, fhir.ErrNotFHIR) {
		t.Errorf("no resourceType: %v", err)
	}
}

func TestSurrogateSource(t *testing.T) {
	// Safe Harbor with a recording random source: same input, same output
	// (the mapping is consistent), and nothing derived from the data.
	st := newMemStore()
	src, err := deid.NewSurrogate(st, testSecret, deid.SurrogateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	in, err := os.ReadFile(fhirFiles(t, "synthea")[0])
	if err != nil {
		t.Fatal(err)
	}
	d := newDeid(t, "safe-harbor", src)
	a, _, err := d.Deidentify(context.Background(), in)
	if err != nil {
		t.Fatal(err)
	}
	puts := st.puts.Load()
	b, _, err := d.Deidentify(context.Background(), in)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(a, b) {
		t.Error("surrogate output not consistent between runs")
	}
	if n := st.puts.Load(); n != puts {
		t.Errorf("second run wrote %d objects", n-puts)
	}
	if puts > 8 {
		t.Errorf("a bundle cost %d store writes; want a handful (batching)", puts)
	}
	keyedOut, _, _ := newDeid(t, "safe-harbor", keyed(t)).Deidentify(context.Background(), in)
	if regexp.MustCompile(`"id": "([0-9a-f-]{32,36})"`).FindString(string(a)) == regexp.MustCompile(`"id": "([0-9a-f-]{32,36})"`).FindString(string(keyedOut)) {
		t.Error("surrogate ids equal keyed ids")
	}
}

func ExampleDeidentifier_Deidentify() {
	src, _ := deid.NewKeyed(bytes.Repeat([]byte{7}, 32), deid.KeyedOptions{})
	profile, _ := deid.ParseFHIRProfile("safe-harbor")
	d, _ := fhir.NewDeidentifier(fhir.DeidOptions{
		Profile: profile, Source: src,
		PatientKey: func(p fhir.DeidPatient) (string, error) { return "ACME|" + p.ID, nil },
	})
	out, rep, _ := d.Deidentify(context.Background(), []byte(`{"resourceType":"Patient","id":"42","name":[{"family":"Doe"}],"birthDate":"1980-03-04"}`))
	fmt.Println(strings.Contains(string(out), "Doe"), strings.Contains(string(out), `"birthDate": "1980"`), rep.Removed())
	// Output: false true 1
}
