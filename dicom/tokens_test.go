package dicom

import (
	"bytes"
	"cmp"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// refIdentifyingTokens is the first, map-based implementation of
// identifyingTokens, kept as the reference for the faster one.
func refIdentifyingTokens(elems []*Element, cols []int) *tokens {
	strong, weak := map[string]bool{}, map[string]bool{}
	add := func(set map[string]bool, s string) {
		s = string(asciiLower([]byte(strings.TrimSpace(s))))
		if len(s) >= 3 {
			set[s] = true
		}
	}
	var walk func([]*Element)
	walk = func(elems []*Element) {
		for _, e := range elems {
			for _, it := range e.Items {
				walk(it.Elements)
			}
			if e.Tag.IsPrivate() {
				continue
			}
			r, listed := ruleFor(e.Tag)
			vr := effectiveVR(e)
			if !listed && vr != "PN" {
				continue
			}
			if listed {
				switch r.resolve(cols) {
				case ActionK, ActionC, ActionNone:
					if e.Tag != tagPatientName && e.Tag != tagPatientID {
						continue
					}
				}
			}
			switch vr {
			case "PN":
				for _, part := range strings.FieldsFunc(e.String(), func(r rune) bool { return strings.ContainsRune("^= ,.", r) }) {
					add(strong, part)
				}
			case "LO", "SH", "ST", "LT", "UT", "UC", "AE":
				for _, v := range e.Strings() {
					add(strong, v)
					for _, w := range strings.FieldsFunc(v, func(r rune) bool { return strings.ContainsRune(` ,;:/()-_"'`, r) }) {
						if len(w) >= 4 {
							add(weak, w)
						}
					}
				}
			case "DA":
				for _, d := range e.Strings() {
					if t, err := time.Parse("20060102", d); err == nil {
						for _, l := range []string{"20060102", "2006-01-02", "2006/01/02", "2006.01.02", "02/01/2006", "01/02/2006", "02.01.2006", "02-01-2006"} {
							add(strong, t.Format(l))
						}
					}
				}
			}
		}
	}
	walk(elems)
	list := func(set map[string]bool) [][]byte {
		out := make([][]byte, 0, len(set))
		for s := range set {
			out = append(out, []byte(s))
		}
		slices.SortFunc(out, func(a, b []byte) int { return cmp.Or(cmp.Compare(len(b), len(a)), bytes.Compare(a, b)) })
		return out
	}
	return &tokens{strong: list(strong), weak: list(weak)}
}

func sameTokens(t *testing.T, what string, got, want *tokens) {
	t.Helper()
	eq := func(a, b [][]byte) bool { return slices.EqualFunc(a, b, bytes.Equal) }
	if !eq(got.strong, want.strong) || !eq(got.weak, want.weak) {
		t.Errorf("%s: tokens differ\ngot  %q / %q\nwant %q / %q", what, got.strong, got.weak, want.strong, want.weak)
	}
}

// TestIdentifyingTokens checks identifyingTokens against the reference on
// every header of the shared corpus and on random values.
func TestIdentifyingTokens(t *testing.T) {
	cols := [][]int{nil, {colCleanDescriptors}, {colFullDates, colPatientChars}}
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	root := filepath.Join(dir, "..", "..", "shared", "testdata", "dicom")
	n := 0
	err = filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		f, err := os.Open(p)
		if err != nil {
			return err
		}
		defer f.Close()
		rd, err := NewReader(f, ReaderOptions{AllowNoMeta: true})
		if err != nil {
			return nil // invalid inputs
		}
		header, _, err := readHeader(rd)
		if err != nil {
			return nil
		}
		for _, c := range cols {
			sameTokens(t, p, identifyingTokens(header, c, nil), refIdentifyingTokens(header, c))
			// With reused memory, as Rewrite calls it.
			mem := getScratch()
			sameTokens(t, p, identifyingTokens(header, c, mem), refIdentifyingTokens(header, c))
			mem.release()
		}
		n++
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if n < 30 {
		t.Errorf("only %d corpus headers read", n)
	}

	rng := rand.New(rand.NewPCG(3, 4))
	pick := func(alphabet string, max int) []byte {
		b := make([]byte, rng.IntN(max+1))
		for i := range b {
			b[i] = alphabet[rng.IntN(len(alphabet))]
		}
		return b
	}
	text := "AbZ09 ^=,.;:/()-_\"'\\\x00\t\xc2\xa0\xe9"
	for i := range 5000 {
		elems := []*Element{
			{Tag: tagPatientName, VR: "PN", Value: pick(text, 30)},
			{Tag: tagReferringPhysicianName, VR: "PN", Value: pick(text, 30)},
			{Tag: 0x00080080, VR: "LO", Value: pick(text, 40)},
			{Tag: tagPatientID, VR: "LO", Value: pick(text, 20)},
			{Tag: tagPatientBirthDate, VR: "DA", Value: pick("0123456789\\ \x00", 20)},
			{Tag: tagStudyDate, VR: "DA", Value: []byte([]string{"20240229", "20230229", "20241131", "00000101", "99991231", "2024013", "20240100\\19610423 "}[i%7])},
			{Tag: 0x00081040, VR: "LO", Value: pick(text, 40)}, // Institutional Department Name
		}
		sameTokens(t, "random", identifyingTokens(elems, nil, nil), refIdentifyingTokens(elems, nil))
	}
}
