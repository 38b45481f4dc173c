package dicom_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/consilium/consilium/dicom"
	"github.com/consilium/consilium/internal/testenv"
)

// readFileHeader returns the elements of an instance and its summary, Pixel
// Data without its value.
func readFileHeader(t *testing.T, path string) ([]*dicom.Element, dicom.Summary) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	rd, err := dicom.NewReader(f, dicom.ReaderOptions{AllowNoMeta: true})
	if err != nil {
		t.Fatal(err)
	}
	var elems []*dicom.Element
	for {
		e, err := rd.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		elems = append(elems, e)
	}
	return elems, rd.Summary()
}

// pydicomJSON runs pydicom's Dataset.to_json_dict on the files.
func pydicomJSON(t *testing.T, files []string) map[string]map[string]json.RawMessage {
	t.Helper()
	const python = "/usr/bin/python3"
	if _, err := os.Stat(python); err != nil {
		testenv.Missing(t, python, "apt-get install python3-pydicom")
	}
	if err := exec.Command(python, "-c", "import pydicom").Run(); err != nil {
		testenv.Missing(t, "python3-pydicom", "apt-get install python3-pydicom")
	}
	var stdout, stderr bytes.Buffer
	cmd := exec.Command(python, append([]string{filepath.Join("testdata", "to_json.py")}, files...)...)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("pydicom: %v\n%s", err, stderr.String())
	}
	var out map[string]map[string]json.RawMessage
	if err := json.Unmarshal(stdout.Bytes(), &out); err != nil {
		t.Fatal(err)
	}
	return out
}

// TestEncodeJSONMatchesPydicom compares the text attributes (every
// character set of the corpus, person names with their three component
// groups, sequences) with pydicom's DICOM JSON of the same files.
func TestEncodeJSONMatchesPydicom(t *testing.T) {
	valid, _ := corpus(t)
	want := pydicomJSON(t, valid)
	compared := 0
	textVRs := map[string]bool{"PN": true, "LO": true, "SH": true, "ST": true, "LT": true, "UT": true, "CS": true, "UI": true, "DA": true, "TM": true, "UC": true, "AE": true}
	for _, p := range valid {
		name := strings.TrimPrefix(p, filepath.Join(sharedDir(t), "testdata", "dicom")+"/")
		t.Run(name, func(t *testing.T) {
			elems, sum := readFileHeader(t, p)
			got := dicom.EncodeJSON(elems, dicom.JSONOptions{CharacterSet: sum.SpecificCharacterSet})
			for key, raw := range want[p] {
				var w struct {
					VR    string            `json:"vr"`
					Value []json.RawMessage `json:"Value"`
				}
				if err := json.Unmarshal(raw, &w); err != nil {
					t.Fatal(err)
				}
				if !textVRs[w.VR] || strings.HasPrefix(key, "0002") {
					continue
				}
				g, ok := got[key]
				if !ok {
					t.Errorf("%s missing", key)
					continue
				}
				gb, _ := json.Marshal(g.Value)
				var gv, wv any
				_ = json.Unmarshal(gb, &gv)
				wb, _ := json.Marshal(w.Value)
				_ = json.Unmarshal(wb, &wv)
				if len(w.Value) == 0 {
					wv = nil
				}
				if !reflect.DeepEqual(normalizeJSON(gv), normalizeJSON(wv)) {
					t.Errorf("%s (%s): got %s, pydicom %s", key, w.VR, gb, wb)
				}
				compared++
			}
		})
	}
	if compared < 500 {
		t.Errorf("only %d attributes compared", compared)
	}
}

// normalizeJSON makes pydicom's and our encodings of empty values and
// empty person names comparable (pydicom writes "" where F.2 allows
// null or leaving the value out).
func normalizeJSON(v any) any {
	switch v := v.(type) {
	case []any:
		out := make([]any, 0, len(v))
		empty := true
		for _, x := range v {
			n := normalizeJSON(x)
			if n != nil {
				empty = false
			}
			out = append(out, n)
		}
		if empty {
			return nil
		}
		return out
	case map[string]any:
		out := map[string]any{}
		for k, x := range v {
			if n := normalizeJSON(x); n != nil {
				out[k] = n
			}
		}
		if len(out) == 0 {
			return nil
		}
		return out
	case string:
		if v == "" {
			return nil
		}
		return v
	}
	return v
}

func TestEncodeJSONValues(t *testing.T) {
	tests := []struct {
		name string
		elem *dicom.Element
		want string
	}{
		{"multi-valued CS", &dicom.Element{Tag: 0x00080008, VR: "CS", Value: []byte(`ORIGINAL\PRIMARY `)}, `{"vr":"CS","Value":["ORIGINAL","PRIMARY"]}`},
		{"empty among values", &dicom.Element{Tag: 0x00080008, VR: "CS", Value: []byte(`A\\B`)}, `{"vr":"CS","Value":["A",null,"B"]}`},
		{"empty", &dicom.Element{Tag: 0x00100020, VR: "LO", Value: nil}, `{"vr":"LO"}`},
		{"DS numbers", &dicom.Element{Tag: 0x00280030, VR: "DS", Value: []byte(`0.5\ 1.25e1`)}, `{"vr":"DS","Value":[0.5,12.5]}`},
		{"IS invalid", &dicom.Element{Tag: 0x00200013, VR: "IS", Value: []byte(`+7\x`)}, `{"vr":"IS","Value":[7,null]}`},
		{"US", &dicom.Element{Tag: 0x00280010, VR: "US", Value: []byte{0x00, 0x02, 0x01, 0x00}}, `{"vr":"US","Value":[512,1]}`},
		{"FD NaN", &dicom.Element{Tag: 0x00186028, VR: "FD", Value: []byte{0, 0, 0, 0, 0, 0, 0xf8, 0x7f}}, `{"vr":"FD","Value":["NaN"]}`},
		{"AT", &dicom.Element{Tag: 0x00209165, VR: "AT", Value: []byte{0x20, 0x00, 0x32, 0x00}}, `{"vr":"AT","Value":["00200032"]}`},
		{"OB inline", &dicom.Element{Tag: 0x00091010, VR: "OB", Value: []byte{1, 2, 3}}, `{"vr":"OB","InlineBinary":"AQID"}`},
		{"PN groups", &dicom.Element{Tag: 0x00100010, VR: "PN", Value: []byte("Doe^John==Phon ")}, `{"vr":"PN","Value":[{"Alphabetic":"Doe^John","Phonetic":"Phon"}]}`},
		{"UT keeps inner backslash", &dicom.Element{Tag: 0x00400280, VR: "UT", Value: []byte(`a\b `)}, `{"vr":"UT","Value":["a\\b"]}`},
		{"pixel data by URI", &dicom.Element{Tag: 0x7FE00010, VR: "OW", Length: 8}, `{"vr":"OW","BulkDataURI":"bulk/7FE00010"}`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ds := dicom.EncodeJSON([]*dicom.Element{tc.elem}, dicom.JSONOptions{
				BulkDataURI: func(t dicom.Tag) string { return "bulk/" + dicom.JSONKey(t) },
			})
			got, err := json.Marshal(ds[dicom.JSONKey(tc.elem.Tag)])
			if err != nil {
				t.Fatal(err)
			}
			if string(got) != tc.want {
				t.Fatalf("got %s, want %s", got, tc.want)
			}
		})
	}
}

func TestTextDecoder(t *testing.T) {
	tests := []struct {
		charset string
		in      string
		want    string
	}{
		{"", "Buc^J\xe9r\xf4me", "Buc^Jérôme"},
		{"ISO_IR 100", "Buc^J\xe9r\xf4me", "Buc^Jérôme"},
		{"ISO-IR 100", "\xe9", "é"},
		{"ISO_IR 192", "Wang^XiaoDong=王^小東", "Wang^XiaoDong=王^小東"},
		{"ISO_IR 144", "\xbb\xee\xda\xe1\xd5\xdc\xd1\xe3\xe0\xd3", "Люксембург"},
		{`\ISO 2022 IR 149`, "Hong^Gildong=\x1b$)C\xfb\xf3^\x1b$)C\xd1\xce\xd4\xd7", "Hong^Gildong=洪^吉洞"},
		{`ISO 2022 IR 6\ISO 2022 IR 87`, "Yamada^Tarou=\x1b$B;3ED\x1b(B^\x1b$BB@O:\x1b(B", "Yamada^Tarou=山田^太郎"},
		{"ISO_IR 192", "bad \xff", "bad \uFFFD"},
	}
	for _, tc := range tests {
		t.Run(tc.charset+" "+tc.want, func(t *testing.T) {
			if got := dicom.NewTextDecoder(tc.charset).Decode([]byte(tc.in)); got != tc.want {
				t.Fatalf("got %q, want %q", got, tc.want)
			}
		})
	}
}

// FuzzEncodeJSON: whatever a Reader accepts encodes to valid JSON (no NaN
// or invalid UTF-8 reaches encoding/json), and Check never panics.
func FuzzEncodeJSON(f *testing.F) {
	addCorpusSeeds(f)
	f.Fuzz(func(t *testing.T, b []byte) {
		if len(b) > fuzzMaxInput {
			return
		}
		_, err := dicom.Check(bytes.NewReader(b), dicom.CheckOptions{Reader: fuzzOpts})
		if err != nil && !errors.Is(err, dicom.ErrInvalid) {
			t.Fatalf("Check: error is not a ParseError: %v", err)
		}
		rd, err := dicom.NewReader(bytes.NewReader(b), fuzzOpts)
		if err != nil {
			return
		}
		var elems []*dicom.Element
		for {
			e, err := rd.Next()
			if err != nil {
				break
			}
			elems = append(elems, e)
		}
		ds := dicom.EncodeJSON(elems, dicom.JSONOptions{CharacterSet: rd.Summary().SpecificCharacterSet})
		out, err := json.Marshal(ds)
		if err != nil {
			t.Fatalf("marshal: %v", err)
		}
		if !json.Valid(out) {
			t.Fatal("invalid JSON")
		}
	})
}
