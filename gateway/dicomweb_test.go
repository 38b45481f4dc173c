package gateway_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"io"
	"mime"
	"mime/multipart"
	"net/http"
	"net/textproto"
	"net/url"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/consilium/consilium/gateway"
	"github.com/consilium/consilium/gateway/gatewaytest"
	"github.com/consilium/consilium/internal/devenv"
	"github.com/consilium/consilium/internal/miniotest"
	"github.com/consilium/consilium/internal/testenv"
	"github.com/consilium/consilium/storage"
)

func TestMain(m *testing.M) { os.Exit(miniotest.Main(m)) }

// corpusRoot finds ../shared/testdata/dicom next to the module.
func corpusRoot(t testing.TB) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			break
		}
		dir = filepath.Dir(dir)
	}
	root := filepath.Join(dir, "..", "shared", "testdata", "dicom")
	if _, err := os.Stat(root); err != nil {
		testenv.Missing(t, "../shared/testdata", "the shared test corpus must sit next to the repository")
	}
	return root
}

type corpusFile struct {
	rel  string
	data []byte
}

func loadCorpus(t testing.TB) []corpusFile {
	t.Helper()
	root := corpusRoot(t)
	var out []corpusFile
	err := filepath.WalkDir(root, func(p string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := os.ReadFile(p)
		rel, _ := filepath.Rel(root, p)
		out = append(out, corpusFile{filepath.ToSlash(rel), b})
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].rel < out[j].rel })
	return out
}

// refusedByDICOMweb are the corpus files outside invalid/ that STOW-RS
// refuses, with the Failure Reason: parser fragments without any key UID,
// and a bare dataset that is not a Part 10 file.
var refusedByDICOMweb = map[string]int{
	"charset/chrSQEncoding1.dcm":                    0xA900,
	"charset/empty_charset_LEI.dcm":                 0xA900,
	"edge-cases/ExplicitVRBigEndianUndefLen.dcm":    0xA900,
	"edge-cases/ExplicitVRLittleEndianUndefLen.dcm": 0xA900,
	"edge-cases/ImplicitVRLittleEndianUndefLen.dcm": 0xA900,
	"edge-cases/UN_sequence.dcm":                    0xA900,
	"edge-cases/nested_priv_SQ.dcm":                 0xA900,
	"edge-cases/priv_SQ.dcm":                        0xA900,
	"modality/rt/rtstruct.dcm":                      0xC000,
}

// stowBody streams parts as a multipart/related body.
func stowBody(parts ...io.Reader) (io.Reader, string) {
	pr, pw := io.Pipe()
	mw := multipart.NewWriter(pw)
	go func() {
		for _, p := range parts {
			h := textproto.MIMEHeader{}
			h.Set("Content-Type", "application/dicom")
			w, err := mw.CreatePart(h)
			if err == nil {
				_, err = io.Copy(w, p)
			}
			if err != nil {
				pw.CloseWithError(err)
				return
			}
		}
		pw.CloseWithError(mw.Close())
	}()
	return pr, fmt.Sprintf(`multipart/related; type="application/dicom"; boundary=%s`, mw.Boundary())
}

// stowItem is one item of a STOW-RS answer's sequences.
type stowItem struct {
	SOPInstanceUID string
	Outcome        string
	Reason         int
	Warning        int
	Part           int
	RetrieveURL    string
	Text           string
}

type stowAnswer struct {
	Status     int
	StudyURL   string
	Referenced []stowItem
	Failed     []stowItem
	byPart     map[int]stowItem
}

func str(ds map[string]json.RawMessage, key string) string {
	var a struct{ Value []any }
	_ = json.Unmarshal(ds[key], &a)
	if len(a.Value) == 0 {
		return ""
	}
	return fmt.Sprint(a.Value[0])
}

func num(ds map[string]json.RawMessage, key string) int {
	var n int
	fmt.Sscan(str(ds, key), &n)
	return n
}

func parseItems(raw json.RawMessage) []stowItem {
	var a struct{ Value []map[string]json.RawMessage }
	_ = json.Unmarshal(raw, &a)
	var out []stowItem
	for _, it := range a.Value {
		out = append(out, stowItem{
			SOPInstanceUID: str(it, "00081155"), Outcome: str(it, "00091001"), Reason: num(it, "00081197"),
			Warning: num(it, "00081196"), Part: num(it, "00091003"), RetrieveURL: str(it, "00081190"), Text: str(it, "00091002"),
		})
	}
	return out
}

// stow sends instances in one STOW-RS request.
func stow(t testing.TB, c *http.Client, base, path string, parts ...io.Reader) stowAnswer {
	t.Helper()
	body, ct := stowBody(parts...)
	resp, err := c.Post(base+path, ct, body)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if got := resp.Header.Get("Content-Type"); got != "application/dicom+json" {
		t.Fatalf("content type %q", got)
	}
	var ds map[string]json.RawMessage
	if err := json.NewDecoder(resp.Body).Decode(&ds); err != nil {
		t.Fatal(err)
	}
	a := stowAnswer{Status: resp.StatusCode, StudyURL: str(ds, "00081190"),
		Referenced: parseItems(ds["00081199"]), Failed: parseItems(ds["00081198"]), byPart: map[int]stowItem{}}
	for _, it := range append(append([]stowItem{}, a.Referenced...), a.Failed...) {
		a.byPart[it.Part] = it
	}
	return a
}

// wadoParts retrieves a WADO-RS resource and returns its parts.
func wadoParts(t testing.TB, c *http.Client, u string) (int, [][]byte) {
	t.Helper()
	resp, err := c.Get(u)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		io.Copy(io.Discard, resp.Body)
		return resp.StatusCode, nil
	}
	mt, params, err := mime.ParseMediaType(resp.Header.Get("Content-Type"))
	if err != nil || mt != "multipart/related" || params["type"] != "application/dicom" {
		t.Fatalf("content type %q", resp.Header.Get("Content-Type"))
	}
	mr := multipart.NewReader(resp.Body, params["boundary"])
	var parts [][]byte
	for {
		p, err := mr.NextPart()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if !strings.HasPrefix(p.Header.Get("Content-Type"), "application/dicom; transfer-syntax=") {
			t.Fatalf("part content type %q", p.Header.Get("Content-Type"))
		}
		b, err := io.ReadAll(p)
		if err != nil {
			t.Fatal(err)
		}
		parts = append(parts, b)
	}
	return resp.StatusCode, parts
}

// TestDICOMwebCorpus is the definition of done for the corpus: everything
// in one STOW-RS request, invalid files refused with a Failure Reason
// while their siblings are stored, and every stored instance retrieved by
// WADO-RS byte for byte; files that share a SOP Instance UID with another
// (the same instance in another transfer syntax) are stored by replacing
// and retrieved byte for byte too.
func TestDICOMwebCorpus(t *testing.T) {
	g := gatewaytest.Start(t, nil, gatewaytest.Config{})
	c := g.Client(t, "st-marys")
	files := loadCorpus(t)
	var readers []io.Reader
	for _, f := range files {
		readers = append(readers, bytes.NewReader(f.data))
	}
	ans := stow(t, c, g.URL, "/dicomweb/studies", readers...)
	if ans.Status != http.StatusAccepted {
		t.Fatalf("status %d, want 202 (some stored, some failed)", ans.Status)
	}
	stored := map[string]string{} // SOP Instance UID -> file
	var later []corpusFile
	for i, f := range files {
		it, ok := ans.byPart[i+1]
		if !ok {
			t.Fatalf("%s: part %d missing from the answer", f.rel, i+1)
		}
		switch {
		case strings.HasPrefix(f.rel, "invalid/"):
			if it.Outcome != "FAILED" || it.Reason == 0 || it.Text == "" {
				t.Errorf("%s: %+v, want refused with a reason", f.rel, it)
			}
		case refusedByDICOMweb[f.rel] != 0:
			if it.Outcome != "FAILED" || it.Reason != refusedByDICOMweb[f.rel] {
				t.Errorf("%s: %+v, want failure %04X", f.rel, it, refusedByDICOMweb[f.rel])
			}
		case stored[it.SOPInstanceUID] != "":
			if it.Reason != 0x0111 {
				t.Errorf("%s (same SOP Instance UID as %s): %+v, want 0111", f.rel, stored[it.SOPInstanceUID], it)
			}
			later = append(later, f)
		default:
			if it.Outcome != "STORED" || it.RetrieveURL == "" {
				t.Errorf("%s: %+v", f.rel, it)
				continue
			}
			stored[it.SOPInstanceUID] = f.rel
			status, parts := wadoParts(t, c, it.RetrieveURL)
			if status != http.StatusOK || len(parts) != 1 || !bytes.Equal(parts[0], f.data) {
				t.Errorf("%s: WADO-RS status %d, %d parts, identical=%v", f.rel, status, len(parts), len(parts) == 1 && bytes.Equal(parts[0], f.data))
			}
		}
	}
	if len(stored) < 30 || len(later) == 0 {
		t.Fatalf("%d stored, %d sharing a SOP Instance UID", len(stored), len(later))
	}
	for _, f := range later {
		ans := stow(t, c, g.URL, "/dicomweb/studies?replace=true", bytes.NewReader(f.data))
		if ans.Status != http.StatusOK || len(ans.Referenced) != 1 || ans.Referenced[0].Outcome != "REPLACED" {
			t.Fatalf("%s: replace: %+v", f.rel, ans)
		}
		if _, parts := wadoParts(t, c, ans.Referenced[0].RetrieveURL); len(parts) != 1 || !bytes.Equal(parts[0], f.data) {
			t.Fatalf("%s: retrieved after replacing differs", f.rel)
		}
	}
}

const (
	ctRel   = "modality/ct/CT_small.dcm"
	ctSOP   = "1.3.6.1.4.1.5962.1.1.1.1.1.20040119072730.12322"
	ctStudy = "1.3.6.1.4.1.5962.1.2.1.20040119072730.12322"
	mrRel   = "modality/mr/MR_small.dcm"
	mrStudy = "1.3.6.1.4.1.5962.1.2.4.20040826185059.5457"
)

func corpusBytes(t testing.TB, rel string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(corpusRoot(t), filepath.FromSlash(rel)))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestSTOWStatuses(t *testing.T) {
	g := gatewaytest.Start(t, nil, gatewaytest.Config{})
	c := g.Client(t, "st-marys")
	ct, mr := corpusBytes(t, ctRel), corpusBytes(t, mrRel)
	other := bytes.Clone(ct)
	other[len(other)-1] ^= 1
	bad := corpusBytes(t, "invalid/no_meta.dcm")
	tests := []struct {
		name     string
		path     string
		parts    [][]byte
		status   int
		outcomes string
		reasons  string
	}{
		{"all stored", "/dicomweb/studies", [][]byte{ct}, 200, "STORED", "0"},
		{"stored again: unchanged", "/dicomweb/studies", [][]byte{ct}, 200, "UNCHANGED", "0"},
		{"all failed", "/dicomweb/studies", [][]byte{bad}, 409, "FAILED", "49152"},
		{"different bytes refused", "/dicomweb/studies", [][]byte{other}, 409, "FAILED", "273"},
		{"replaced", "/dicomweb/studies?replace=true", [][]byte{other}, 200, "REPLACED", "0"},
		{"some failed", "/dicomweb/studies", [][]byte{bad, mr}, 202, "FAILED STORED", "49152 0"},
		{"other study than addressed", "/dicomweb/studies/" + mrStudy, [][]byte{ct, mr}, 202, "FAILED UNCHANGED", "43264 0"},
		{"warning", "/dicomweb/studies", [][]byte{corpusBytes(t, "modality/rt/rtplan.dcm")}, 202, "STORED", "0"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var rs []io.Reader
			for _, p := range tc.parts {
				rs = append(rs, bytes.NewReader(p))
			}
			ans := stow(t, c, g.URL, tc.path, rs...)
			var outcomes, reasons []string
			for i := range tc.parts {
				it := ans.byPart[i+1]
				outcomes = append(outcomes, it.Outcome)
				reasons = append(reasons, fmt.Sprint(it.Reason))
			}
			if ans.Status != tc.status || strings.Join(outcomes, " ") != tc.outcomes || strings.Join(reasons, " ") != tc.reasons {
				t.Fatalf("status %d %v %v, want %d %s %s", ans.Status, outcomes, reasons, tc.status, tc.outcomes, tc.reasons)
			}
			if tc.name == "warning" && (ans.Referenced[0].Warning != 0xB007 || ans.Referenced[0].Text == "") {
				t.Fatalf("warning %+v", ans.Referenced[0])
			}
		})
	}
}

// errorAnswer checks a DICOMweb error answer: status, DICOM JSON body
// with Error Comment, Warning header.
func errorAnswer(t *testing.T, resp *http.Response, status int) string {
	t.Helper()
	defer resp.Body.Close()
	if resp.StatusCode != status {
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("status %d, want %d: %s", resp.StatusCode, status, b)
	}
	if resp.Header.Get("Content-Type") != "application/dicom+json" || !strings.HasPrefix(resp.Header.Get("Warning"), "299 ") {
		t.Fatalf("headers %v", resp.Header)
	}
	var ds map[string]json.RawMessage
	if err := json.NewDecoder(resp.Body).Decode(&ds); err != nil {
		t.Fatal(err)
	}
	msg := str(ds, "00000902")
	if msg == "" || str(ds, "00091010") == "" {
		t.Fatalf("error body %v", ds)
	}
	return msg
}

func TestSTOWBadRequests(t *testing.T) {
	g := gatewaytest.Start(t, nil, gatewaytest.Config{})
	c := g.Client(t, "st-marys")
	post := func(path, ct, accept string, body io.Reader) *http.Response {
		req, _ := http.NewRequest(http.MethodPost, g.URL+path, body)
		req.Header.Set("Content-Type", ct)
		if accept != "" {
			req.Header.Set("Accept", accept)
		}
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		return resp
	}
	ct := corpusBytes(t, ctRel)
	t.Run("not multipart", func(t *testing.T) {
		errorAnswer(t, post("/dicomweb/studies", "application/dicom", "", bytes.NewReader(ct)), 415)
	})
	t.Run("metadata and bulk data", func(t *testing.T) {
		errorAnswer(t, post("/dicomweb/studies", `multipart/related; type="application/dicom+json"; boundary=x`, "", strings.NewReader("")), 415)
	})
	t.Run("no boundary", func(t *testing.T) {
		errorAnswer(t, post("/dicomweb/studies", `multipart/related; type="application/dicom"`, "", strings.NewReader("")), 400)
	})
	t.Run("XML answer", func(t *testing.T) {
		body, ctype := stowBody(bytes.NewReader(ct))
		errorAnswer(t, post("/dicomweb/studies", ctype, "application/dicom+xml", body), 406)
	})
	t.Run("empty", func(t *testing.T) {
		body, ctype := stowBody()
		errorAnswer(t, post("/dicomweb/studies", ctype, "", body), 400)
	})
	t.Run("cut off", func(t *testing.T) {
		body, ctype := stowBody(bytes.NewReader(ct))
		b, _ := io.ReadAll(body)
		errorAnswer(t, post("/dicomweb/studies", ctype, "", bytes.NewReader(b[:len(b)/2])), 400)
	})
	t.Run("bad replace", func(t *testing.T) {
		body, ctype := stowBody(bytes.NewReader(ct))
		errorAnswer(t, post("/dicomweb/studies?replace=yes", ctype, "", body), 400)
	})
	t.Run("part of another type", func(t *testing.T) {
		var buf bytes.Buffer
		mw := multipart.NewWriter(&buf)
		h := textproto.MIMEHeader{}
		h.Set("Content-Type", "text/plain")
		w, _ := mw.CreatePart(h)
		w.Write([]byte("hello"))
		mw.Close()
		resp := post("/dicomweb/studies", `multipart/related; type="application/dicom"; boundary=`+mw.Boundary(), "", &buf)
		defer resp.Body.Close()
		if resp.StatusCode != 409 {
			t.Fatalf("status %d", resp.StatusCode)
		}
	})
	// Nothing of these is visible.
	resp, err := c.Get(g.URL + "/dicomweb/studies")
	if err != nil {
		t.Fatal(err)
	}
	var matches []any
	json.NewDecoder(resp.Body).Decode(&matches)
	resp.Body.Close()
	if len(matches) != 0 {
		t.Fatalf("%d studies visible", len(matches))
	}
}

func getJSON(t *testing.T, c *http.Client, u string) (int, []map[string]json.RawMessage, http.Header) {
	t.Helper()
	resp, err := c.Get(u)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out []map[string]json.RawMessage
	if resp.StatusCode == http.StatusOK {
		if ct := resp.Header.Get("Content-Type"); ct != "application/dicom+json" {
			t.Fatalf("content type %q", ct)
		}
		if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
			t.Fatal(err)
		}
	}
	return resp.StatusCode, out, resp.Header
}

// TestDICOMwebScopedByOrganisation: a hospital sees only its own studies;
// another hospital gets 404 (never a hint that the study exists), and
// roles without DICOM access are refused.
func TestDICOMwebScopedByOrganisation(t *testing.T) {
	g := gatewaytest.Start(t, nil, gatewaytest.Config{})
	own := g.Client(t, "st-marys")
	if a := stow(t, own, g.URL, "/dicomweb/studies", bytes.NewReader(corpusBytes(t, ctRel))); a.Status != 200 {
		t.Fatalf("status %d", a.Status)
	}
	study := g.URL + "/dicomweb/studies/" + ctStudy
	if status, parts := wadoParts(t, own, study); status != 200 || len(parts) != 1 {
		t.Fatalf("own study: %d %d", status, len(parts))
	}
	others := map[string]int{}
	for _, p := range devenvPrincipals() {
		if p.id != "st-marys" {
			others[p.id] = 0
		}
	}
	for id := range others {
		t.Run(id, func(t *testing.T) {
			c := g.Client(t, id)
			for _, u := range []string{study, study + "/metadata", study + "/series", study + "/series/x/instances/" + ctSOP} {
				resp, err := c.Get(u)
				if err != nil {
					t.Fatal(err)
				}
				msg := errorAnswer(t, resp, 404)
				if strings.Contains(msg, "polic") {
					t.Fatalf("404 mentions the policy: %q", msg)
				}
			}
			status, matches, _ := getJSON(t, c, g.URL+"/dicomweb/studies")
			if status == 200 && len(matches) != 0 {
				t.Fatalf("sees %d studies", len(matches))
			}
			body, ct := stowBody(bytes.NewReader(corpusBytes(t, mrRel)))
			resp, err := c.Post(g.URL+"/dicomweb/studies", ct, body)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if p := principal(id); p.role == "hospital" {
				if resp.StatusCode != 200 || status != 200 {
					t.Fatalf("hospital: STOW %d, QIDO %d", resp.StatusCode, status)
				}
			} else if resp.StatusCode != 403 || status != 403 {
				t.Fatalf("%s: STOW %d, QIDO %d, want 403", p.role, resp.StatusCode, status)
			}
		})
	}
}

type principalInfo struct{ id, role string }

func devenvPrincipals() []principalInfo {
	var out []principalInfo
	for _, p := range devenv.Principals() {
		out = append(out, principalInfo{p.ID, string(p.Role)})
	}
	return out
}

func principal(id string) principalInfo {
	for _, p := range devenvPrincipals() {
		if p.id == id {
			return p
		}
	}
	return principalInfo{}
}

func TestQIDO(t *testing.T) {
	g := gatewaytest.Start(t, nil, gatewaytest.Config{})
	c := g.Client(t, "st-marys")
	var rs []io.Reader
	for _, f := range loadCorpus(t) {
		rs = append(rs, bytes.NewReader(f.data))
	}
	stow(t, c, g.URL, "/dicomweb/studies", rs...)
	tests := []struct {
		query string
		n     int
	}{
		{"PatientID=1CT1", 1},
		{"StudyDate=20040101-20041231&ModalitiesInStudy=CT", 1},
		{"ModalitiesInStudy=MR", 2},
		{"AccessionNumber=16387a", 1},
		{"StudyInstanceUID=" + ctStudy + "," + mrStudy, 2},
		{"PatientName=compressedsamples^*&includefield=StudyDescription", 4},
		{"limit=3", 3},
		{"limit=3&offset=1000", 0},
	}
	for _, tc := range tests {
		t.Run(tc.query, func(t *testing.T) {
			status, m, _ := getJSON(t, c, g.URL+"/dicomweb/studies?"+tc.query)
			if status != 200 || len(m) != tc.n {
				t.Fatalf("status %d, %d matches, want %d", status, len(m), tc.n)
			}
		})
	}
	_, m, _ := getJSON(t, c, g.URL+"/dicomweb/studies?PatientID=1CT1")
	if got := str(m[0], "00081190"); got != g.URL+"/dicomweb/studies/"+ctStudy {
		t.Fatalf("retrieve URL %q", got)
	}
	_, series, _ := getJSON(t, c, g.URL+"/dicomweb/studies/"+ctStudy+"/series")
	if len(series) != 1 || str(series[0], "00080060") != "CT" {
		t.Fatalf("series %v", series)
	}
	se := str(series[0], "0020000E")
	_, insts, _ := getJSON(t, c, g.URL+"/dicomweb/studies/"+ctStudy+"/series/"+se+"/instances")
	if len(insts) != 1 || str(insts[0], "00080018") != ctSOP {
		t.Fatalf("instances %v", insts)
	}
	_, _, h := getJSON(t, c, g.URL+"/dicomweb/studies?PatientAge=030Y")
	if !strings.Contains(h.Get("Warning"), "PatientAge") {
		t.Fatalf("no warning for an unsupported attribute: %v", h)
	}
	resp, err := c.Get(g.URL + "/dicomweb/studies?NoSuchKeyword=1")
	if err != nil {
		t.Fatal(err)
	}
	errorAnswer(t, resp, 400)
	resp, err = c.Get(g.URL + "/dicomweb/studies/1.2.3/series")
	if err != nil {
		t.Fatal(err)
	}
	errorAnswer(t, resp, 404)
}

func TestWADOMetadataAndBulkData(t *testing.T) {
	g := gatewaytest.Start(t, nil, gatewaytest.Config{})
	c := g.Client(t, "st-marys")
	ct := corpusBytes(t, ctRel)
	ans := stow(t, c, g.URL, "/dicomweb/studies", bytes.NewReader(ct), bytes.NewReader(corpusBytes(t, mrRel)))
	if ans.Status != 200 {
		t.Fatal(ans.Status)
	}
	status, md, _ := getJSON(t, c, g.URL+"/dicomweb/studies/"+ctStudy+"/metadata")
	if status != 200 || len(md) != 1 {
		t.Fatalf("%d %d", status, len(md))
	}
	var pixel struct{ BulkDataURI string }
	json.Unmarshal(md[0]["7FE00010"], &pixel)
	if !strings.HasPrefix(pixel.BulkDataURI, g.URL+"/dicomweb/studies/"+ctStudy+"/series/") {
		t.Fatalf("BulkDataURI %q", pixel.BulkDataURI)
	}
	if str(md[0], "00100020") != "1CT1" || str(md[0], "00020010") != "1.2.840.10008.1.2.1" {
		t.Fatal("metadata values")
	}
	resp, err := c.Get(pixel.BulkDataURI)
	if err != nil {
		t.Fatal(err)
	}
	mt, params, _ := mime.ParseMediaType(resp.Header.Get("Content-Type"))
	if mt != "multipart/related" || params["type"] != "application/octet-stream" {
		t.Fatalf("bulk content type %q", resp.Header.Get("Content-Type"))
	}
	p, err := multipart.NewReader(resp.Body, params["boundary"]).NextPart()
	if err != nil {
		t.Fatal(err)
	}
	pix, _ := io.ReadAll(p)
	resp.Body.Close()
	if len(pix) != 128*128*2 || !bytes.Contains(ct, pix) {
		t.Fatalf("%d bytes of pixel data", len(pix))
	}
	// Single-part instance retrieval.
	req, _ := http.NewRequest(http.MethodGet, ans.Referenced[0].RetrieveURL, nil)
	req.Header.Set("Accept", "application/dicom")
	resp, err = c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !bytes.Equal(b, ct) {
		t.Fatalf("single part: %d, identical=%v", resp.StatusCode, bytes.Equal(b, ct))
	}
	// A transfer syntax the instance is not in: no transcoding.
	req, _ = http.NewRequest(http.MethodGet, ans.Referenced[0].RetrieveURL, nil)
	req.Header.Set("Accept", `multipart/related; type="application/dicom"; transfer-syntax=1.2.840.10008.1.2.4.50`)
	resp, err = c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	errorAnswer(t, resp, 406)
}

// TestTwoGatewaysShareStudies: a second gateway instance on the same
// MinIO bucket (and keyring) sees what the first stored.
func TestTwoGatewaysShareStudies(t *testing.T) {
	srv := miniotest.Start(t)
	m, err := storage.NewMinIO(context.Background(), storage.MinIOConfig{
		Endpoint: srv.Endpoint, AccessKey: srv.AccessKey, SecretKey: srv.SecretKey, Bucket: srv.Bucket, UseTLS: srv.UseTLS,
	})
	if err != nil {
		t.Fatal(err)
	}
	kr, err := storage.GenerateKeyring(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	store := storage.NewEncrypted(m, kr)
	dir := t.TempDir()
	cfg := gatewaytest.Config{Dir: dir, Options: gateway.Options{Names: kr.NameHash}}
	g1 := gatewaytest.Start(t, store, cfg)
	g2 := gatewaytest.Start(t, store, cfg)
	ct := corpusBytes(t, ctRel)
	if a := stow(t, g1.Client(t, "st-marys"), g1.URL, "/dicomweb/studies", bytes.NewReader(ct)); a.Status != 200 {
		t.Fatal(a.Status)
	}
	c2 := g2.Client(t, "st-marys")
	_, m2, _ := getJSON(t, c2, g2.URL+"/dicomweb/studies")
	if len(m2) != 1 || str(m2[0], "0020000D") != ctStudy {
		t.Fatalf("second gateway sees %v", m2)
	}
	if _, parts := wadoParts(t, c2, g2.URL+"/dicomweb/studies/"+ctStudy); len(parts) != 1 || !bytes.Equal(parts[0], ct) {
		t.Fatal("second gateway retrieves different bytes")
	}
	// And stores back into the same study: the first sees both.
	if a := stow(t, c2, g2.URL, "/dicomweb/studies", bytes.NewReader(ct)); a.Status != 200 || a.Referenced[0].Outcome != "UNCHANGED" {
		t.Fatalf("%+v", a)
	}
	q := url.Values{"PatientID": {"1CT1"}}
	if _, m1, _ := getJSON(t, g1.Client(t, "st-marys"), g1.URL+"/dicomweb/studies?"+q.Encode()); len(m1) != 1 {
		t.Fatalf("%d", len(m1))
	}
}
