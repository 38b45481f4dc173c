package policy

import (
	"encoding/json"
	"errors"
	"flag"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/consilium/consilium/internal/testenv"
)

var update = flag.Bool("update", false, "rewrite golden files in testdata")

// sharedTestdata returns ../shared/testdata next to the repository root.
func sharedTestdata(t testing.TB) string {
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
			t.Fatal("go.mod not found above the test directory")
		}
		dir = parent
	}
	td := filepath.Join(dir, "..", "shared", "testdata")
	if _, err := os.Stat(td); err != nil {
		testenv.Missing(t, "shared test data ("+td+")", "check out the shared folder next to the repository")
	}
	return td
}

// TestConsentFromFHIRGolden normalises every consent fixture and compares it
// with its golden file (go test -run Golden -update rewrites them).
func TestConsentFromFHIRGolden(t *testing.T) {
	paths, err := filepath.Glob(filepath.Join("testdata", "consents", "*.json"))
	if err != nil {
		t.Fatal(err)
	}
	paths = append(paths, filepath.Join(sharedTestdata(t), "fhir", "hl7-examples", "consent-example.json"))
	for _, p := range paths {
		if strings.HasSuffix(p, ".golden.json") {
			continue
		}
		name := strings.TrimSuffix(filepath.Base(p), ".json")
		t.Run(name, func(t *testing.T) {
			raw, err := os.ReadFile(p)
			if err != nil {
				t.Fatal(err)
			}
			c, err := ConsentFromFHIR(raw)
			if err != nil {
				t.Fatal(err)
			}
			got, err := json.MarshalIndent(c, "", "  ")
			if err != nil {
				t.Fatal(err)
			}
			golden := filepath.Join("testdata", "consents", name+".golden.json")
			if *update {
				if err := os.WriteFile(golden, append(got, '\n'), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("%v (run with -update to create)", err)
			}
			if strings.TrimSpace(string(want)) != string(got) {
				t.Errorf("normalised consent differs from %s:\n%s", golden, got)
			}
		})
	}
}

func TestConsentFromFHIR(t *testing.T) {
	hl7, err := os.ReadFile(filepath.Join(sharedTestdata(t), "fhir", "hl7-examples", "consent-example.json"))
	if err != nil {
		t.Fatal(err)
	}
	c, err := ConsentFromFHIR(hl7)
	if err != nil {
		t.Fatal(err)
	}
	want := Consent{
		ID: "consent-example-basic", Status: "active", Scope: "patient-privacy", Decision: "permit",
		Start: "1964-01-01T00:00:00Z", End: "2016-01-02T00:00:00Z",
		Purposes: []string{}, RecipientCountries: []string{}, ExcludeLabels: []string{}, Uninterpreted: []string{},
	}
	if !reflect.DeepEqual(c, want) {
		t.Errorf("HL7 example consent:\n got %+v\nwant %+v", c, want)
	}
	if strings.Contains(mustJSON(t, c), "Heuvel") {
		t.Error("the normalised consent carries the patient's name from the narrative")
	}
}

func TestConsentFromFHIRRejects(t *testing.T) {
	tests := []struct {
		name string
		raw  string
	}{
		{"not json", `{"resourceType": "Consent",`},
		{"other resource", `{"resourceType": "Patient", "id": "x"}`},
		{"no id", `{"resourceType": "Consent", "status": "active"}`},
		{"trailing data", `{"resourceType": "Consent", "id": "x"} {}`},
		{"wrong types", `{"resourceType": "Consent", "id": "x", "provision": {"purpose": "TREAT"}}`},
		{"too large", `{"resourceType": "Consent", "id": "x", "text": {"div": "` + strings.Repeat("a", MaxConsentSize) + `"}}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ConsentFromFHIR([]byte(tt.raw))
			if !errors.Is(err, ErrInvalidConsent) {
				t.Errorf("err = %v, want ErrInvalidConsent", err)
			}
		})
	}
}

func TestConsentFromFHIRConventions(t *testing.T) {
	tests := []struct {
		name      string
		provision string
		check     func(t *testing.T, c Consent)
	}{
		{"year end is exclusive", `{"period": {"start": "2024", "end": "2025"}}`, func(t *testing.T, c Consent) {
			if c.Start != "2024-01-01T00:00:00Z" || c.End != "2026-01-01T00:00:00Z" {
				t.Errorf("period %s to %s", c.Start, c.End)
			}
		}},
		{"month end", `{"period": {"end": "2024-02"}}`, func(t *testing.T, c Consent) {
			if c.End != "2024-03-01T00:00:00Z" {
				t.Errorf("end %s", c.End)
			}
		}},
		{"date-time in UTC", `{"period": {"start": "2024-05-01T10:00:00+02:00"}}`, func(t *testing.T, c Consent) {
			if c.Start != "2024-05-01T08:00:00Z" {
				t.Errorf("start %s", c.Start)
			}
		}},
		{"bad date is uninterpreted", `{"period": {"end": "31/12/2025"}}`, func(t *testing.T, c Consent) {
			if !reflect.DeepEqual(c.Uninterpreted, []string{"provision.period.end"}) {
				t.Errorf("uninterpreted %v", c.Uninterpreted)
			}
		}},
		{"bad country is uninterpreted", `{"extension": [{"url": "` + RecipientCountryExtension + `", "valueCode": "usa"}]}`, func(t *testing.T, c Consent) {
			if len(c.RecipientCountries) != 0 || len(c.Uninterpreted) != 1 {
				t.Errorf("countries %v uninterpreted %v", c.RecipientCountries, c.Uninterpreted)
			}
		}},
		{"disclose action accepted", `{"action": [{"coding": [{"system": "` + ConsentActionSystem + `", "code": "disclose"}]}]}`, func(t *testing.T, c Consent) {
			if len(c.Uninterpreted) != 0 {
				t.Errorf("uninterpreted %v", c.Uninterpreted)
			}
		}},
		{"access-only action uninterpreted", `{"action": [{"coding": [{"system": "` + ConsentActionSystem + `", "code": "access"}]}]}`, func(t *testing.T, c Consent) {
			if !reflect.DeepEqual(c.Uninterpreted, []string{"provision.action"}) {
				t.Errorf("uninterpreted %v", c.Uninterpreted)
			}
		}},
		{"nested permit ignored", `{"provision": [{"type": "permit", "actor": []}]}`, func(t *testing.T, c Consent) {
			if len(c.Uninterpreted) != 0 {
				t.Errorf("uninterpreted %v", c.Uninterpreted)
			}
		}},
		{"type overrides policyRule", `{"type": "deny"}`, func(t *testing.T, c Consent) {
			if c.Decision != "deny" {
				t.Errorf("decision %q", c.Decision)
			}
		}},
		{"labels sorted and unique", `{"provision": [{"type": "deny", "securityLabel": [{"code": "PSY"}, {"code": "ETH"}]}, {"type": "deny", "securityLabel": [{"code": "PSY"}], "provision": [{"type": "deny", "securityLabel": [{"code": "HIV"}]}]}]}`, func(t *testing.T, c Consent) {
			if !reflect.DeepEqual(c.ExcludeLabels, []string{"ETH", "HIV", "PSY"}) {
				t.Errorf("labels %v", c.ExcludeLabels)
			}
		}},
		{"modifier extension uninterpreted", `{"modifierExtension": [{"url": "x"}]}`, func(t *testing.T, c Consent) {
			if !reflect.DeepEqual(c.Uninterpreted, []string{"provision.modifierExtension"}) {
				t.Errorf("uninterpreted %v", c.Uninterpreted)
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			raw := `{"resourceType": "Consent", "id": "c", "status": "active", "policyRule": {"coding": [{"system": "` + ActCodeSystem + `", "code": "OPTIN"}]}, "provision": ` + tt.provision + `}`
			c, err := ConsentFromFHIR([]byte(raw))
			if err != nil {
				t.Fatal(err)
			}
			tt.check(t, c)
		})
	}
}

func TestConsentFromFHIRDeepNesting(t *testing.T) {
	nested := `{"type": "deny", "securityLabel": [{"code": "PSY"}]}`
	for range 40 {
		nested = `{"type": "permit", "provision": [` + nested + `]}`
	}
	c, err := ConsentFromFHIR([]byte(`{"resourceType": "Consent", "id": "c", "status": "active", "provision": ` + nested + `}`))
	if err != nil {
		t.Fatal(err)
	}
	if len(c.Uninterpreted) == 0 || !strings.Contains(c.Uninterpreted[0], "nested too deep") {
		t.Errorf("uninterpreted %v", c.Uninterpreted)
	}
}

// FuzzConsentFromFHIR: outside input must give a consent or an error, never
// a panic, and a consent the policy input accepts.
func FuzzConsentFromFHIR(f *testing.F) {
	for _, dir := range []string{
		filepath.Join("testdata", "consents"),
		filepath.Join(sharedTestdata(f), "fhir", "hl7-examples"),
		filepath.Join(sharedTestdata(f), "fhir", "invalid"),
	} {
		paths, _ := filepath.Glob(filepath.Join(dir, "*.json"))
		for _, p := range paths {
			if st, err := os.Stat(p); err == nil && st.Size() < 64<<10 {
				raw, _ := os.ReadFile(p)
				f.Add(raw)
			}
		}
	}
	f.Fuzz(func(t *testing.T, raw []byte) {
		c, err := ConsentFromFHIR(raw)
		if err != nil {
			if !errors.Is(err, ErrInvalidConsent) {
				t.Fatalf("error %v does not match ErrInvalidConsent", err)
			}
			return
		}
		if _, err := c.normalize(); err != nil {
			t.Fatalf("ConsentFromFHIR produced a consent the input refuses: %v", err)
		}
	})
}

func mustJSON(t testing.TB, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
