package packet

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/consilium/consilium/dicom"
	"github.com/consilium/consilium/internal/testenv"
)

func TestMatcher(t *testing.T) {
	ids := Identifiers{
		Names:      []string{"Mr. Buster Hoeger", "DOE^JANE^Q", "Li Bo", "José Ñúñez"},
		IDs:        []string{"999-59-2277", "1CT1", "ab"},
		Phones:     []string{"555-866-2259"},
		Emails:     []string{"buster@example.org"},
		Addresses:  []string{"535  Howe Neck\tApt 38"},
		BirthDates: []string{"1988-03-16"},
		Other:      []string{"O'Hara & Sons"},
	}
	m := newMatcher(ids)
	// "Q", "ab", and the words of "Li Bo" (searched as a whole).
	if m.skipped != 4 {
		t.Errorf("skipped %d values, want 4", m.skipped)
	}
	cases := []struct {
		text string
		want []string // kinds found
	}{
		{"nothing to see", nil},
		{"patient BUSTER was seen", []string{KindName}},
		{"hoeger,", []string{KindName}},
		{"Busters and Hoegerville", nil},           // not whole words
		{"DOE^JANE", []string{KindName, KindName}}, // two words
		{"Mr. and Dr. and Q", nil},                 // titles and short words
		{"seen by li bo today", []string{KindName}},
		{"Li, Bo", nil},
		{"Nunez José", []string{KindName}},
		{"\xd1\xfa\xf1ez in ISO 8859-1", []string{KindName}},
		{"ssn 999-59-2277.", []string{KindID}},
		{"ssn 999592277", []string{KindID}},
		{"x1CT1x 1CT10 11CT1", nil},
		{"id=1ct1;", []string{KindID}},
		{"ab ab ab", nil},
		{"call +1 555 866 2259", []string{KindPhone}},
		{"call 555 8662 259", nil},
		{"call +15558662259", []string{KindPhone}},
		{"call (555) 866-2259!", []string{KindPhone}},
		{"call 555.866.2259!", []string{KindPhone}},
		{"mail BUSTER@EXAMPLE.ORG", []string{KindEmail, KindName}},
		{"lives at 535 Howe Neck Apt 38, Amherst", []string{KindAddress}},
		{`born "1988-03-16T00:00:00"`, []string{KindBirthDate}},
		{"DA 19880316", []string{KindBirthDate}},
		{"DT 19880316101500", []string{KindBirthDate}},
		{"uid 2.25.1198803161", nil}, // inside a number
		{"03/16/1988 and 16.03.1988", []string{KindBirthDate, KindBirthDate}},
		{"O&#39;Hara &amp; Sons", []string{KindOther}},
		{`"O'Hara & Sons"`, []string{KindOther}},
	}
	for _, c := range cases {
		t.Run(c.text, func(t *testing.T) {
			// Whole, and one byte at a time: matches across writes.
			for _, step := range []int{len(c.text) + 1, 1, 3} {
				var got []string
				sc := m.newScanner(func(n *needle, at int64) { got = append(got, n.kind) })
				for i := 0; i < len(c.text); i += step {
					sc.Write([]byte(c.text[i:min(i+step, len(c.text))]))
				}
				sc.Close()
				if fmt.Sprint(dedupe(got)) != fmt.Sprint(dedupe(c.want)) {
					t.Errorf("step %d: found %v, want %v", step, got, c.want)
				}
			}
		})
	}
}

// dedupe sorts kinds and drops duplicates (a value found in two forms).
func dedupe(k []string) []string {
	k = slices.Sorted(slices.Values(k))
	seen := map[string]bool{}
	var out []string
	for _, s := range k {
		if !seen[s] {
			seen[s] = true
			out = append(out, s)
		}
	}
	return out
}

func TestScannerOffsetsAcrossWrites(t *testing.T) {
	m := newMatcher(Identifiers{IDs: []string{"MRN-00012345"}})
	text := strings.Repeat("x ", 50_000) + "MRN-00012345 " + strings.Repeat("y ", 70_000) + "mrn-00012345"
	for _, step := range []int{1 << 20, 4096, 7, 1} {
		var at []int64
		sc := m.newScanner(func(n *needle, off int64) { at = append(at, off) })
		for i := 0; i < len(text); i += step {
			sc.Write([]byte(text[i:min(i+step, len(text))]))
		}
		sc.Close()
		want := []int64{100_000, int64(len(text) - 12)}
		if fmt.Sprint(at) != fmt.Sprint(want) {
			t.Errorf("step %d: at %v, want %v", step, at, want)
		}
		if len(sc.buf) > 0 {
			t.Errorf("buffer kept %d bytes after Close", len(sc.buf))
		}
	}
	// The buffer stays small whatever is written.
	sc := m.newScanner(func(*needle, int64) {})
	for i := 0; i < 1000; i++ {
		sc.Write(bytes.Repeat([]byte("z"), 4096))
		if len(sc.buf) > m.maxLen+1 {
			t.Fatalf("buffer grew to %d", len(sc.buf))
		}
	}
}

func TestScanDICOM(t *testing.T) {
	f := scanTestdata(t, "dicom/modality/ct/CT_small.dcm")
	m := newMatcher(Identifiers{Names: []string{"CompressedSamples^CT1"}, IDs: []string{"1CT1", "ABCD1234", "1234abcd"}})
	s, err := m.scanDICOM("x.dcm", bytes.NewReader(f), int64(len(f)), false, nil)
	if err != nil {
		t.Fatal(err)
	}
	where := map[string]bool{}
	for _, h := range s.hits {
		where[h.Where] = true
	}
	// Patient's Name and ID, and the nested Patient IDs of the Other
	// Patient IDs Sequence.
	for _, w := range []string{"(0010,0010)", "(0010,0020)", "(0010,1002)[1].(0010,0020)", "(0010,1002)[2].(0010,0020)"} {
		if !where[w] {
			t.Errorf("no hit at %s (hits %+v)", w, s.hits)
		}
	}
	if s.meta.TransferSyntaxUID == "" || dicom.Find(s.header, dicom.NewTag(0x0008, 0x0018)) == nil {
		t.Error("no File Meta or header")
	}

	// What follows Pixel Data is scanned too, although Pixel Data is
	// skipped: here Data Set Trailing Padding holding the Patient ID.
	trailed := append(bytes.Clone(f), 0xFC, 0xFF, 0xFC, 0xFF, 'O', 'B', 0, 0, 4, 0, 0, 0, '1', 'C', 'T', '1')
	for _, pixels := range []bool{false, true} {
		s, err = m.scanDICOM("x.dcm", bytes.NewReader(trailed), int64(len(trailed)), pixels, nil)
		if err != nil {
			t.Fatal(err)
		}
		found := false
		for _, h := range s.hits {
			found = found || h.Where == "after (7FE0,0010)" || h.Where == "(FFFC,FFFC)"
		}
		if !found {
			t.Errorf("pixels=%v: trailing padding not scanned: %+v", pixels, s.hits)
		}
	}
	// A Pixel Data length past the end of the file is an error.
	if _, err := m.scanDICOM("x.dcm", bytes.NewReader(f[:len(f)-300]), int64(len(f)-300), false, nil); err == nil {
		t.Error("truncated pixel data accepted")
	}
}

func scanTestdata(t *testing.T, rel string) []byte {
	t.Helper()
	dir, _ := os.Getwd()
	for ; ; dir = filepath.Dir(dir) {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			break
		}
		if filepath.Dir(dir) == dir {
			t.Fatal("go.mod not found")
		}
	}
	p := filepath.Join(dir, "..", "shared", "testdata", filepath.FromSlash(rel))
	b, err := os.ReadFile(p)
	if err != nil {
		testenv.Missing(t, p, "the shared test corpus must sit next to the repository")
	}
	return b
}

func TestRenderSummary(t *testing.T) {
	study := scanTestdata(t, "fhir/hl7-examples/imagingstudy-example.json")
	bundle := []byte(`{"resourceType":"Bundle","entry":[{"resource":` + string(study) + `},
	 {"resource":{"resourceType":"Condition","code":{"text":"<b>nodule</b> & \"mass\""},"onsetDateTime":"2020-01-02T03:04:05Z"}},
	 {"resource":{"resourceType":"Observation","code":{"coding":[{"display":"Body weight"}]},"valueQuantity":{"value":71.23456789,"unit":"kg"},"effectiveDateTime":"2019-01-01"}},
	 {"resource":{"resourceType":"Patient","gender":"female","birthDate":"1970"}}]}`)
	html, err := renderSummary(Case{ID: "c<1>", Question: "q'\"", Specialty: "onco"}, time.Unix(0, 0), bundle, true)
	if err != nil {
		t.Fatal(err)
	}
	s := string(html)
	for _, want := range []string{
		"Imaging study", "CT", "&lt;b&gt;nodule&lt;/b&gt; &amp; &#34;mass&#34;", "2020-01-02 03:04", "71.2346 kg",
		"c&lt;1&gt;", "q&#39;&#34;", "cut to the year", "female", "1 condition · 1 observation · 1 imaging study",
	} {
		if !strings.Contains(s, want) {
			t.Errorf("summary lacks %q", want)
		}
	}
	if strings.Contains(s, "<b>") {
		t.Error("markup from the bundle is not escaped")
	}
	if _, err := renderSummary(Case{}, time.Now(), []byte("{"), false); err == nil {
		t.Error("a broken bundle rendered")
	}
}
