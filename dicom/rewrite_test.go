package dicom_test

import (
	"bytes"
	"context"
	"encoding/csv"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"unicode"

	sdicom "github.com/suyashkumar/dicom"

	"github.com/consilium/consilium/deid"
	"github.com/consilium/consilium/dicom"
	"github.com/consilium/consilium/internal/testenv"
)

const allOptions = "basic,clean-descriptors,clean-structured-content,retain-device-id,retain-institution-id,retain-long-modified-dates,retain-patient-chars,retain-safe-private"

// TestRewriteCorpus de-identifies every valid corpus file under the Basic
// Profile and under every option at once, and checks each output: it
// parses (our reader, dcmtk's dcmdump, and suyashkumar/dicom when that
// parses the input), dciodvfy finds no error it did not find in the input,
// the pixel data bytes are those of the input, no identifying value of the
// input survives, the File Meta and the de-identification attributes are
// right, and instances of one study share one new Study Instance UID.
func TestRewriteCorpus(t *testing.T) {
	valid, _ := corpus(t)
	dcmdump := testenv.LookPath(t, "dcmdump", "apt-get install dcmtk")
	dciodvfy := testenv.LookPath(t, "dciodvfy", "apt-get install dicom3tools")
	table := loadProfileCSV(t)
	checked := 0
	for _, profile := range []string{"basic", allOptions} {
		t.Run(profile, func(t *testing.T) {
			src := keyedSource(t)
			d := newDeidentifier(t, profile, src)
			studies := map[string]map[string]bool{} // original → new Study UIDs
			newStudies := map[string]string{}
			for _, p := range valid {
				t.Run(rel(t, p), func(t *testing.T) {
					in, err := os.ReadFile(p)
					if err != nil {
						t.Fatal(err)
					}
					// The Basic run reads from a seekable source (pixel data
					// copied by range), the other through a plain reader
					// (pixel data streamed): both paths are checked.
					var input io.Reader = bytes.NewReader(in)
					if profile != "basic" {
						input = struct{ io.Reader }{bytes.NewReader(in)}
					}
					var out bytes.Buffer
					rep, err := d.Rewrite(context.Background(), &out, input, testKey)
					if err != nil {
						t.Fatalf("Rewrite: %v", err)
					}
					dir := t.TempDir()
					inPath, outPath := p, filepath.Join(dir, "out.dcm")
					if err := os.WriteFile(outPath, out.Bytes(), 0o644); err != nil {
						t.Fatal(err)
					}
					outSum := checkReadable(t, out.Bytes())
					checkDcmdump(t, dcmdump, outPath)
					checkSuyashkumar(t, in, out.Bytes())
					checkDciodvfy(t, dciodvfy, inPath, outPath, inSummary(t, in))
					checkPixels(t, dcmdump, in, out.Bytes(), inPath, outPath, rep)
					leaks, n := findLeaks(t, table, profile, in, out.Bytes())
					for _, l := range leaks {
						t.Error(l)
					}
					checked += n
					t.Logf("%d identifying values checked", n)
					checkMarkings(t, d.Profile(), src, out.Bytes(), outSum, rep)

					if orig := studyOf(t, in); orig != "" {
						if studies[orig] == nil {
							studies[orig] = map[string]bool{}
						}
						studies[orig][outSum.StudyInstanceUID] = true
						if prev, ok := newStudies[outSum.StudyInstanceUID]; ok && prev != orig {
							t.Errorf("two studies map to one new Study UID")
						}
						newStudies[outSum.StudyInstanceUID] = orig
					}
				})
			}
			shared := 0
			for orig, news := range studies {
				if len(news) != 1 {
					t.Errorf("study %s got %d new Study UIDs", orig, len(news))
				}
			}
			for _, p := range valid {
				if strings.Contains(p, "MR_small") {
					shared++
				}
			}
			if shared < 5 {
				t.Errorf("expected the MR_small transfer syntax variants (one study) in the corpus")
			}
		})
	}
	if checked < 500 {
		t.Errorf("only %d identifying values were checked across the corpus: the leak check is not biting", checked)
	}
	t.Logf("%d identifying values checked", checked)
}

func inSummary(t *testing.T, in []byte) dicom.Summary {
	rd, err := dicom.NewReader(bytes.NewReader(in), dicom.ReaderOptions{AllowNoMeta: true})
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := rd.Next(); err != nil {
			break
		}
	}
	return rd.Summary()
}

func studyOf(t *testing.T, in []byte) string { return inSummary(t, in).StudyInstanceUID }

// checkReadable reads the output strictly (it must now have a preamble and
// File Meta) and returns its summary.
func checkReadable(t *testing.T, out []byte) dicom.Summary {
	t.Helper()
	rd, err := dicom.NewReader(bytes.NewReader(out), dicom.ReaderOptions{})
	if err != nil {
		t.Fatalf("output: %v", err)
	}
	for {
		_, err := rd.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("output: %v", err)
		}
	}
	return rd.Summary()
}

func checkDcmdump(t *testing.T, dcmdump, path string) {
	t.Helper()
	out, err := exec.Command(dcmdump, "-q", path).CombinedOutput()
	if err != nil || bytes.Contains(out, []byte("E: ")) {
		t.Errorf("dcmdump refuses the output: %v\n%s", err, out)
	}
}

func checkSuyashkumar(t *testing.T, in, out []byte) {
	t.Helper()
	if _, err := sdicom.Parse(bytes.NewReader(in), int64(len(in)), nil); err != nil {
		return // the library cannot read the input either
	}
	if _, err := sdicom.Parse(bytes.NewReader(out), int64(len(out)), nil); err != nil {
		t.Errorf("suyashkumar/dicom cannot parse the output: %v", err)
	}
}

var dciodvfyValue = regexp.MustCompile(`= ?<[^>]*>|\[[0-9]+\]|[0-9]+(\.[0-9]+){2,}|UID [0-9.]+$`)

// dciodvfyErrors returns dciodvfy's error lines with values, item numbers
// and UIDs removed, so that input and output compare.
func dciodvfyErrors(t *testing.T, dciodvfy, path string) map[string]bool {
	t.Helper()
	out, _ := exec.Command(dciodvfy, path).CombinedOutput() // exits non-zero on errors
	errs := map[string]bool{}
	for _, line := range strings.Split(string(out), "\n") {
		if strings.HasPrefix(line, "Error") {
			errs[dciodvfyValue.ReplaceAllString(line, "")] = true
		}
	}
	return errs
}

func checkDciodvfy(t *testing.T, dciodvfy, in, out string, inSum dicom.Summary) {
	t.Helper()
	before := dciodvfyErrors(t, dciodvfy, in)
	for e := range before {
		if strings.Contains(e, "Tags out of order") {
			// dciodvfy gave up on the input (nested_priv_SQ.dcm has
			// elements in the illegal group 0001): it cannot tell which
			// errors were there before.
			t.Logf("dciodvfy could not read the input: %s", e)
			return
		}
	}
	for e := range dciodvfyErrors(t, dciodvfy, out) {
		if !before[e] && !(inSum.SOPInstanceUID == "" && strings.Contains(e, "but missing SOP")) {
			// A fragment without SOP Class/Instance UID (a bare test
			// dataset) gets a File Meta, which then names UIDs the dataset
			// lacks: expected, and only for such inputs.
			t.Errorf("dciodvfy reports a new error: %s", e)
		}
	}
}

// checkPixels compares the pixel data bytes of input and output twice:
// the byte ranges of the files, and the values dcmdump extracts (+W).
func checkPixels(t *testing.T, dcmdump string, in, out []byte, inPath, outPath string, rep *dicom.Report) {
	t.Helper()
	is, ie, ok := pixelRange(t, in)
	if !ok {
		if rep.PixelBytes != 0 {
			t.Errorf("report says %d pixel bytes, the input has none", rep.PixelBytes)
		}
		return
	}
	os_, oe, ok := pixelRange(t, out)
	if !ok {
		t.Fatal("the output lost its pixel data")
	}
	inPix, outPix := datasetBytes(t, in)[is:ie], datasetBytes(t, out)[os_:oe]
	if !bytes.Equal(inPix, outPix) {
		t.Fatalf("pixel data differs (%d vs %d bytes)", len(inPix), len(outPix))
	}
	if rep.PixelBytes != int64(len(inPix)) {
		t.Errorf("report says %d pixel bytes, want %d", rep.PixelBytes, len(inPix))
	}
	a, b := dcmdumpPixels(t, dcmdump, inPath), dcmdumpPixels(t, dcmdump, outPath)
	if len(a) == 0 || len(a) != len(b) {
		t.Fatalf("dcmdump extracts %d pixel values from the input, %d from the output", len(a), len(b))
	}
	for i := range a {
		if !bytes.Equal(a[i], b[i]) {
			t.Errorf("dcmdump: pixel value %d differs", i)
		}
	}
}

var dumpedFile = regexp.MustCompile(`=(\S+\.raw)`)

// dcmdumpPixels returns the top-level Pixel Data value (or its fragments)
// as dcmdump writes them out.
func dcmdumpPixels(t *testing.T, dcmdump, path string) [][]byte {
	t.Helper()
	dir := t.TempDir()
	out, err := exec.Command(dcmdump, "-q", "+L", "+W", dir, path).CombinedOutput()
	if err != nil {
		t.Fatalf("dcmdump +W: %v\n%s", err, out)
	}
	var parts [][]byte
	in := false
	for _, line := range strings.Split(string(out), "\n") {
		if strings.HasPrefix(line, "(7fe0,0010)") {
			in = true
		} else if strings.HasPrefix(line, "(") && !strings.HasPrefix(line, "(fffe,e0dd)") {
			in = false
		}
		if m := dumpedFile.FindStringSubmatch(line); in && m != nil {
			b, err := os.ReadFile(m[1])
			if err != nil {
				t.Fatal(err)
			}
			parts = append(parts, b)
		}
	}
	return parts
}

// checkMarkings checks the File Meta and the attributes that say the
// instance was de-identified, and how.
func checkMarkings(t *testing.T, p deid.Profile, src deid.Source, out []byte, s dicom.Summary, rep *dicom.Report) {
	t.Helper()
	rd, err := dicom.NewReader(bytes.NewReader(out), dicom.ReaderOptions{})
	if err != nil {
		t.Fatal(err)
	}
	m := rd.Meta()
	if m.ImplementationClassUID != dicom.ImplementationClassUID || m.MediaStorageSOPInstanceUID != rep.SOPInstanceUID {
		t.Errorf("file meta not replaced: %+v", m)
	}
	var top []*dicom.Element
	for {
		e, err := rd.Next()
		if err != nil {
			break
		}
		top = append(top, e)
	}
	s = rd.Summary()
	if s.SOPInstanceUID != "" && s.SOPInstanceUID != m.MediaStorageSOPInstanceUID {
		t.Errorf("Media Storage SOP Instance UID is not the new SOP Instance UID")
	}
	if !deid.IsPseudonym(s.PatientID) || s.PatientName != s.PatientID || s.PatientID != rep.Pseudonym {
		t.Errorf("Patient ID %q / Patient's Name %q are not the pseudonym %q", s.PatientID, s.PatientName, rep.Pseudonym)
	}
	get := func(tag dicom.Tag) string {
		if e := dicom.Find(top, tag); e != nil {
			return e.String()
		}
		return ""
	}
	if get(dicom.NewTag(0x0012, 0x0062)) != "YES" {
		t.Error("Patient Identity Removed is not YES")
	}
	wantLTIM := "REMOVED"
	if p.Has(deid.RetainLongModifiedDates) {
		wantLTIM = "MODIFIED"
	}
	if got := get(dicom.NewTag(0x0028, 0x0303)); got != wantLTIM {
		t.Errorf("Longitudinal Temporal Information Modified = %q, want %q", got, wantLTIM)
	}
	seq := dicom.Find(top, dicom.NewTag(0x0012, 0x0064))
	if seq == nil {
		t.Fatal("no De-identification Method Code Sequence")
	}
	var codes []string
	for _, it := range seq.Items {
		codes = append(codes, dicom.Find(it.Elements, dicom.NewTag(0x0008, 0x0100)).String())
	}
	var want []string
	for _, c := range p.Codes() {
		want = append(want, c.Value)
	}
	if !slices.Equal(codes, want) {
		t.Errorf("method codes %v, want %v", codes, want)
	}
	if !strings.Contains(get(dicom.NewTag(0x0012, 0x0063)), "Annex E") {
		t.Error("no De-identification Method")
	}
}

// profileCSV is Table E.1-1 read straight from the reference CSV, so that
// the leak check does not trust the generated tables.
type profileCSV struct {
	rows    map[dicom.Tag]map[string]string
	private map[string]string
}

func loadProfileCSV(t *testing.T) *profileCSV {
	t.Helper()
	f, err := os.Open(filepath.Join(sharedDir(t), "reference", "dicom-confidentiality-profile.csv"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	r := csv.NewReader(f)
	r.Comment = '#'
	recs, err := r.ReadAll()
	if err != nil {
		t.Fatal(err)
	}
	p := &profileCSV{rows: map[dicom.Tag]map[string]string{}}
	for _, rec := range recs[1:] {
		row := map[string]string{}
		for i, h := range recs[0] {
			row[h] = rec[i]
		}
		if row["match"] != "exact" {
			continue
		}
		n, err := strconv.ParseUint(row["tag_hex"], 16, 32)
		if err != nil {
			t.Fatal(err)
		}
		p.rows[dicom.Tag(n)] = row
	}
	return p
}

var optionCSVColumn = map[deid.Option]string{
	deid.RetainSafePrivate: "rtn_safe_private", deid.RetainUIDs: "rtn_uids", deid.RetainDeviceID: "rtn_device_identity",
	deid.RetainInstitutionID: "rtn_institution_identity", deid.RetainPatientChars: "rtn_patient_characteristics",
	deid.RetainLongFullDates: "rtn_long_full_dates", deid.RetainLongModifiedDates: "rtn_long_modified_dates",
	deid.CleanDescriptors: "clean_descriptors", deid.CleanStructuredContent: "clean_structured_content",
}

// identifying reports whether the profile must not let e's value through
// unchanged.
func (p *profileCSV) identifying(e *dicom.Element, prof deid.Profile) bool {
	if e.Tag.IsPrivate() {
		return !prof.Has(deid.RetainSafePrivate)
	}
	if g := e.Tag.Group(); g >= 0x5000 && g <= 0x501E || g >= 0x6000 && g <= 0x601E && (e.Tag.Element() == 0x3000 || e.Tag.Element() == 0x4000) {
		return true
	}
	row, ok := p.rows[e.Tag]
	if !ok {
		return e.VR == "PN"
	}
	a := row["basic_profile"]
	for _, o := range prof.Options {
		switch row[optionCSVColumn[o]] {
		case "K":
			a = "K"
		case "C":
			if a != "K" {
				a = "C"
			}
		}
	}
	switch a {
	case "K":
		return false
	case "C": // cleaned text may legitimately keep non-identifying words; dates must change
		return e.VR == "DA" || e.VR == "DT"
	}
	return true
}

// findLeaks looks for every value of an identifying attribute of the
// input, at any depth, in the output: in its bytes (inflated, pixel data
// excluded), in every element our reader finds and, when it can parse the
// output, in every element suyashkumar/dicom finds. It returns what it
// found and how many values it looked for.
func findLeaks(t *testing.T, table *profileCSV, profile string, in, out []byte) (leaks []string, checked int) {
	t.Helper()
	prof, _ := deid.ParseDICOMProfile(profile)
	ident, kept := map[string]bool{}, []string{}
	// File Meta values (class and transfer syntax UIDs) are kept.
	if rd, err := dicom.NewReader(bytes.NewReader(in), dicom.ReaderOptions{AllowNoMeta: true}); err == nil {
		for _, e := range rd.Meta().Elements {
			if e.Tag != dicom.NewTag(0x0002, 0x0003) {
				kept = append(kept, textValues(e)...)
			}
		}
	}
	walk(t, in, func(e *dicom.Element) {
		vals := textValues(e)
		if table.identifying(e, prof) {
			for _, v := range vals {
				ident[v] = true
			}
		} else if !freeText(e.VR) {
			// Kept values may legitimately hold what an identifying
			// attribute holds too (a manufacturer, a code). Free text may
			// not: the de-identifier cleans it, so it is searched.
			kept = append(kept, vals...)
		}
	})
	// What the output may contain without leaking: kept values, and what
	// de-identification writes.
	kept = append(kept, "ANONYMIZED", "ANONYMOUS", "19000101000000", "urn:x-anonymized", "Consilium PS3.15 Annex E",
		"99CONSILIUM", "Anonymized", "CONSILIUM_1", "REMOVED", "MODIFIED", "YES", profile, "DCM")
	for _, c := range prof.Codes() {
		kept = append(kept, c.Value, c.Meaning)
	}
	var checks []string
	for v := range ident {
		if slices.ContainsFunc(kept, func(k string) bool { return strings.Contains(k, v) }) {
			continue
		}
		checks = append(checks, v)
	}
	if len(checks) == 0 {
		return nil, 0
	}
	hdr := headerBytes(t, out)
	outVals := map[string]bool{}
	walk(t, out, func(e *dicom.Element) {
		for _, v := range textValues(e) {
			outVals[v] = true
		}
	})
	if ds, err := sdicom.Parse(bytes.NewReader(out), int64(len(out)), nil, sdicom.SkipPixelData()); err == nil {
		for e := range ds.FlatIterator() {
			if ss, ok := e.Value.GetValue().([]string); ok {
				for _, s := range ss {
					outVals[strings.Trim(s, " \x00")] = true
				}
			}
		}
	}
	for _, v := range checks {
		short := isNumeric(v) && len(v) < 10
		if !short && bytes.Contains(hdr, []byte(v)) {
			leaks = append(leaks, fmt.Sprintf("identifying value %q survives in the output bytes", v))
		}
		for o := range outVals {
			if o == v || (!short && strings.Contains(o, v)) {
				leaks = append(leaks, fmt.Sprintf("identifying value %q survives in output value %q", v, o))
			}
		}
	}
	// The check must be able to fail: the input itself leaks.
	if inHdr := headerBytes(t, in); !slices.ContainsFunc(checks, func(v string) bool { return bytes.Contains(inHdr, []byte(v)) }) {
		t.Errorf("none of %d identifying values is found in the input: the check is broken", len(checks))
	}
	return leaks, len(checks)
}

func freeText(vr string) bool { return vr == "LT" || vr == "ST" || vr == "UT" || vr == "UC" }

func isNumeric(s string) bool {
	return strings.IndexFunc(s, func(r rune) bool { return !strings.ContainsRune("0123456789.+- ", r) }) < 0
}

// headerBytes is the output's dataset bytes without the pixel data value.
func headerBytes(t *testing.T, file []byte) []byte {
	ds := datasetBytes(t, file)
	if s, e, ok := pixelRange(t, file); ok {
		return append(bytes.Clone(ds[:s]), ds[e:]...)
	}
	return ds
}

// walk visits every element at every depth of a file.
func walk(t *testing.T, file []byte, fn func(*dicom.Element)) {
	t.Helper()
	rd, err := dicom.NewReader(bytes.NewReader(file), dicom.ReaderOptions{AllowNoMeta: true})
	if err != nil {
		t.Fatal(err)
	}
	var visit func([]*dicom.Element)
	visit = func(es []*dicom.Element) {
		for _, e := range es {
			fn(e)
			for _, it := range e.Items {
				visit(it.Elements)
			}
		}
	}
	for {
		e, err := rd.Next()
		if err == io.EOF {
			return
		}
		if err != nil {
			t.Fatal(err)
		}
		visit([]*dicom.Element{e})
	}
}

// textValues returns the text values of an element worth searching for
// (3 characters or more): whole values, and for person names each
// component.
func textValues(e *dicom.Element) []string {
	switch e.VR {
	case "AE", "AS", "CS", "DA", "DS", "DT", "IS", "LO", "LT", "PN", "SH", "ST", "TM", "UC", "UI", "UR", "UT":
	case "UN":
		if strings.IndexFunc(string(e.Value), func(r rune) bool { return !unicode.IsPrint(r) && r != 0 }) >= 0 {
			return nil
		}
	default:
		return nil
	}
	var out []string
	add := func(s string) {
		s = strings.Trim(s, " \x00")
		if len(s) >= 3 {
			out = append(out, s)
		}
	}
	for _, v := range strings.Split(string(e.Value), `\`) {
		add(v)
		if e.VR == "PN" {
			for _, c := range strings.FieldsFunc(v, func(r rune) bool { return r == '^' || r == '=' }) {
				add(c)
			}
		}
	}
	return out
}

// TestLeakCheckBites plants an identifying value in a de-identified output
// and expects the leak check to report it.
func TestLeakCheckBites(t *testing.T) {
	in, err := os.ReadFile(filepath.Join(sharedDir(t), "testdata", "dicom", "modality", "ct", "CT_small.dcm"))
	if err != nil {
		t.Fatal(err)
	}
	d := newDeidentifier(t, "basic", keyedSource(t))
	var out bytes.Buffer
	rep, err := d.Rewrite(context.Background(), &out, bytes.NewReader(in), testKey)
	if err != nil {
		t.Fatal(err)
	}
	table := loadProfileCSV(t)
	if leaks, n := findLeaks(t, table, "basic", in, out.Bytes()); len(leaks) > 0 || n < 20 {
		t.Fatalf("clean output: %d leaks, %d values checked", len(leaks), n)
	}
	// Put the patient's name back where the pseudonym is (same length).
	planted := bytes.Replace(out.Bytes(), []byte(rep.Pseudonym), []byte(fmt.Sprintf("%-32s", "CompressedSamples^CT1")), 1)
	leaks, _ := findLeaks(t, table, "basic", in, planted)
	if len(leaks) < 2 { // in the bytes, and in the element value
		t.Errorf("the leak check missed a planted name: %v", leaks)
	}
}
