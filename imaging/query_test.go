package imaging_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/url"
	"sort"
	"strings"
	"testing"

	"github.com/consilium/consilium/dicom"
	"github.com/consilium/consilium/imaging"
)

// corpusLoaded is an archive holding the whole corpus, for queries.
func corpusLoaded(t *testing.T) *imaging.Archive {
	t.Helper()
	a := newArchive(t, fsStore(t), names(t))
	var data [][]byte
	for _, f := range corpusFiles(t) {
		data = append(data, readCorpus(t, f))
	}
	ingest(t, a, imaging.IngestOptions{}, data...)
	return a
}

const dxStudy = "1.2.826.0.1.3680043.8.498.54401662452014863547255413372440461885"

// values returns attribute t of each match as JSON.
func values(t *testing.T, res imaging.SearchResult, tag dicom.Tag) []string {
	t.Helper()
	var out []string
	for _, m := range res.Matches {
		a := m[dicom.JSONKey(tag)]
		if a == nil {
			out = append(out, "<absent>")
			continue
		}
		b, _ := json.Marshal(a.Value)
		out = append(out, string(b))
	}
	sort.Strings(out)
	return out
}

func search(t *testing.T, a *imaging.Archive, level imaging.Level, study, raw string) (imaging.SearchResult, []string) {
	t.Helper()
	params, err := url.ParseQuery(raw)
	if err != nil {
		t.Fatal(err)
	}
	q, warnings, err := imaging.ParseQuery(level, params)
	if err != nil {
		t.Fatal(err)
	}
	q.StudyUID = study
	q.BaseURL = "https://gw/dicomweb"
	res, err := a.Search(context.Background(), "st-marys", q)
	if err != nil {
		t.Fatal(err)
	}
	return res, warnings
}

func TestSearchStudies(t *testing.T) {
	a := corpusLoaded(t)
	all, _ := search(t, a, imaging.StudyLevel, "", "")
	if len(all.Matches) < 15 {
		t.Fatalf("%d studies", len(all.Matches))
	}
	tests := []struct {
		query string
		tag   dicom.Tag
		want  []string
	}{
		{"PatientID=1CT1", 0x00100020, []string{`["1CT1"]`}},
		{"00100020=1CT1", 0x00100020, []string{`["1CT1"]`}},
		{"StudyDate=20040119", 0x00080020, []string{`["20040119"]`}},
		{"StudyDate=20200101-20201231", 0x00080020, []string{`["20200125"]`}},
		{"AccessionNumber=16387a", 0x0020000D, []string{`["` + dxStudy + `"]`}},
		{"StudyInstanceUID=" + ctStudy + "," + dxStudy, 0x0020000D, []string{`["` + dxStudy + `"]`, `["` + ctStudy + `"]`}},
		{"StudyInstanceUID=" + ctStudy + `\` + dxStudy, 0x0020000D, []string{`["` + dxStudy + `"]`, `["` + ctStudy + `"]`}},
		{"PatientName=dog*", 0x00100010, []string{`[{"Alphabetic":"Dog^AVeryGood"}]`}},
		{"PatientName=山田*", 0x00100020, []string{`["H32EXAMPLE"]`}},
		{"PatientID=1CT?", 0x00100020, []string{`["1CT1"]`}},
		{"ModalitiesInStudy=DX", 0x00080061, []string{`["DX"]`}},
		{"ModalitiesInStudy=DX,ECG&PatientID=*", 0x00080061, []string{`["DX"]`, `["ECG"]`}},
		{"PatientID=nobody", 0x00100020, nil},
	}
	for _, tc := range tests {
		t.Run(tc.query, func(t *testing.T) {
			res, _ := search(t, a, imaging.StudyLevel, "", tc.query)
			if got := values(t, res, tc.tag); strings.Join(got, " ") != strings.Join(tc.want, " ") {
				t.Fatalf("got %v, want %v", got, tc.want)
			}
		})
	}
	// Every study answer carries the attributes PS3.18 requires.
	for _, m := range all.Matches {
		for _, tag := range []dicom.Tag{0x00080020, 0x00080030, 0x00080050, 0x00080056, 0x00080061, 0x00080090, 0x00081190,
			0x00100010, 0x00100020, 0x00100030, 0x00100040, 0x0020000D, 0x00200010, 0x00201206, 0x00201208} {
			if m[dicom.JSONKey(tag)] == nil {
				t.Fatalf("%s missing from a study answer", dicom.JSONKey(tag))
			}
		}
	}
	// Ranges from one side.
	before, _ := search(t, a, imaging.StudyLevel, "", "StudyDate=-20040120")
	after, _ := search(t, a, imaging.StudyLevel, "", "StudyDate=20040120-")
	dated, _ := search(t, a, imaging.StudyLevel, "", "StudyDate=19000101-29991231")
	if len(before.Matches) == 0 || len(after.Matches) == 0 || len(before.Matches)+len(after.Matches) != len(dated.Matches) {
		t.Fatalf("%d before, %d after, %d dated", len(before.Matches), len(after.Matches), len(dated.Matches))
	}
}

func TestSearchPaging(t *testing.T) {
	a := corpusLoaded(t)
	all, _ := search(t, a, imaging.StudyLevel, "", "")
	var paged []string
	for off := 0; off < len(all.Matches); off += 4 {
		res, _ := search(t, a, imaging.StudyLevel, "", "limit=4&offset="+itoa(off))
		if len(res.Matches) > 4 {
			t.Fatalf("%d matches for limit 4", len(res.Matches))
		}
		paged = append(paged, values(t, res, 0x0020000D)...)
	}
	sort.Strings(paged)
	if strings.Join(paged, " ") != strings.Join(values(t, all, 0x0020000D), " ") {
		t.Fatal("pages do not add up to the whole")
	}
	res, _ := search(t, a, imaging.StudyLevel, "", "limit=1")
	if !res.Truncated {
		t.Fatal("limit=1 not truncated")
	}
}

func itoa(n int) string {
	b, _ := json.Marshal(n)
	return string(b)
}

func TestSearchSeriesAndInstances(t *testing.T) {
	a := corpusLoaded(t)
	series, _ := search(t, a, imaging.SeriesLevel, ctStudy, "")
	if got := values(t, series, 0x00080060); strings.Join(got, ",") != `["CT"]` {
		t.Fatalf("series modalities %v", got)
	}
	if got := values(t, series, 0x00201209); strings.Join(got, ",") != `[1]` {
		t.Fatalf("series instances %v", got)
	}
	insts, _ := search(t, a, imaging.InstanceLevel, ctStudy, "SOPInstanceUID="+ctSOP)
	if got := values(t, insts, 0x00280010); strings.Join(got, ",") != `[128]` {
		t.Fatalf("rows %v", got)
	}
	u := insts.Matches[0][dicom.JSONKey(0x00081190)].Value[0]
	if !strings.HasPrefix(u.(string), "https://gw/dicomweb/studies/"+ctStudy+"/series/") || !strings.HasSuffix(u.(string), "/instances/"+ctSOP) {
		t.Fatalf("retrieve URL %v", u)
	}
	none, _ := search(t, a, imaging.InstanceLevel, ctStudy, "SOPInstanceUID=1.2.3")
	if len(none.Matches) != 0 {
		t.Fatal("matched an unknown SOP Instance UID")
	}
	q := imaging.Query{Level: imaging.SeriesLevel, StudyUID: "1.2.3", Limit: 10}
	if _, err := a.Search(context.Background(), "st-marys", q); !errors.Is(err, imaging.ErrNotFound) {
		t.Fatalf("unknown study: %v", err)
	}
}

func TestParseQuery(t *testing.T) {
	tests := []struct {
		query    string
		err      bool
		warnings int
	}{
		{"PatientID=1&limit=10&offset=2&fuzzymatching=true&includefield=all", false, 0},
		{"includefield=PatientAge", false, 1},
		{"PatientAge=030Y", false, 1},
		{"NotAKeyword=1", true, 0},
		{"includefield=NotAKeyword", true, 0},
		{"limit=x", true, 0},
		{"offset=-1", true, 0},
		{"limit=100000", false, 1},
	}
	for _, tc := range tests {
		t.Run(tc.query, func(t *testing.T) {
			params, _ := url.ParseQuery(tc.query)
			_, warnings, err := imaging.ParseQuery(imaging.StudyLevel, params)
			if (err != nil) != tc.err || (err != nil && !errors.Is(err, imaging.ErrBadQuery)) {
				t.Fatalf("err = %v", err)
			}
			if len(warnings) != tc.warnings {
				t.Fatalf("warnings %q", warnings)
			}
		})
	}
}

func TestMetadataAndBulkData(t *testing.T) {
	a := corpusLoaded(t)
	ctx := context.Background()
	st, err := a.Study(ctx, "st-marys", ctStudy)
	if err != nil {
		t.Fatal(err)
	}
	ins, _ := st.Instances("", ctSOP)
	md, err := a.Metadata(ctx, ins[0], func(t dicom.Tag) string { return "bulk/" + dicom.JSONKey(t) })
	if err != nil {
		t.Fatal(err)
	}
	if got := md[dicom.JSONKey(0x7FE00010)]; got == nil || got.BulkDataURI != "bulk/7FE00010" {
		t.Fatalf("pixel data %+v", got)
	}
	if got := md["00020010"]; got == nil || got.Value[0] != "1.2.840.10008.1.2.1" {
		t.Fatalf("transfer syntax %+v", got)
	}
	if got := md["00100020"]; got == nil || got.Value[0] != "1CT1" {
		t.Fatalf("patient id %+v", got)
	}
	rc, err := a.BulkData(ctx, ins[0], 0x7FE00010)
	if err != nil {
		t.Fatal(err)
	}
	pix, _ := io.ReadAll(rc)
	rc.Close()
	if len(pix) != 128*128*2 {
		t.Fatalf("%d bytes of pixel data", len(pix))
	}
	whole := readCorpus(t, ctFile)
	// CT_small has Data Set Trailing Padding after its Pixel Data.
	end := len(whole) - 126 - 12
	if string(whole[end-len(pix):end]) != string(pix) {
		t.Fatal("pixel data differ from the file's")
	}
	if md[dicom.JSONKey(0xFFFCFFFC)] != nil {
		t.Fatal("trailing padding in the metadata")
	}
	if _, err := a.BulkData(ctx, ins[0], 0x60003000); !errors.Is(err, imaging.ErrNotFound) {
		t.Fatalf("absent element: %v", err)
	}
}
