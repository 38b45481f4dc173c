package gateway_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"aead.dev/minisign"
	"filippo.io/age"

	"github.com/consilium/consilium/gateway/gatewaytest"
	"github.com/consilium/consilium/packet"
)

// apiCall sends a JSON request and decodes a JSON answer into out (when
// not nil); it returns the status and the raw body.
func apiCall(t testing.TB, c *http.Client, method, url string, body any, out any) (int, []byte) {
	t.Helper()
	var r io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			t.Fatal(err)
		}
		r = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, url, r)
	if err != nil {
		t.Fatal(err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if out != nil && resp.StatusCode < 300 {
		if err := json.Unmarshal(raw, out); err != nil {
			t.Fatalf("%s %s: %v: %s", method, url, err, raw)
		}
	}
	return resp.StatusCode, raw
}

type caseJSON struct {
	ID       string   `json:"id"`
	Status   string   `json:"status"`
	Patient  string   `json:"patient"`
	Assigned []string `json:"assigned"`
	Released []string `json:"released"`
	Opinions int      `json:"opinions"`
	Timeline []struct {
		Status string `json:"status"`
		By     string `json:"by"`
	} `json:"timeline"`
}

// consentJSON is a Consent of patient permitting second-opinion sharing
// to the US and Spain.
func consentJSON(id, patient, status string) []byte {
	return []byte(`{"resourceType":"Consent","id":"` + id + `","status":"` + status + `",
	"scope":{"coding":[{"system":"http://terminology.hl7.org/CodeSystem/consentscope","code":"patient-privacy"}]},
	"category":[{"coding":[{"system":"http://loinc.org","code":"59284-0"}]}],
	"patient":{"reference":"Patient/` + patient + `"},
	"policyRule":{"coding":[{"system":"http://terminology.hl7.org/CodeSystem/v3-ActCode","code":"OPTIN"}]},
	"provision":{"type":"permit","period":{"start":"2020-01-01","end":"2099-12-31"},
	  "purpose":[{"system":"https://consilium.health/fhir/CodeSystem/purpose","code":"second-opinion"}],
	  "extension":[{"url":"https://consilium.health/fhir/StructureDefinition/recipient-country","valueCode":"US"},
	    {"url":"https://consilium.health/fhir/StructureDefinition/recipient-country","valueCode":"ES"}]}}`)
}

// TestCaseWorkflow walks one case through the API on the filesystem
// store: create, assign, release, packet (built, then stored and resumed),
// opinion, re-identified read; and the refusals on the way.
func TestCaseWorkflow(t *testing.T) {
	g := gatewaytest.Start(t, nil, gatewaytest.Config{})
	hosp := g.Client(t, "st-marys")
	f := newFHIRClient(t, g, "st-marys")
	keys := postSynthea(t, f, filepath.Join(fhirTestdata(t), "synthea", "Liz_Conn_27c911c6-f045-4ffa-af5d-6eba57ac94b2.json"))
	var patient string
	for _, k := range keys {
		if strings.HasPrefix(k, "Patient/") {
			patient = strings.TrimPrefix(k, "Patient/")
		}
	}
	f.do(http.MethodPut, "/Consent/c1", "application/fhir+json", consentJSON("c1", patient, "active")).want(t, http.StatusCreated)
	st := stow(t, hosp, g.URL, "/dicomweb/studies", bytes.NewReader(corpusBytes(t, "modality/ct/CT_small.dcm")))
	if st.Status != http.StatusOK {
		t.Fatalf("stow: %+v", st)
	}
	study := st.StudyURL[strings.LastIndex(st.StudyURL, "/")+1:]

	var c caseJSON
	status, body := apiCall(t, hosp, "POST", g.URL+"/cases", map[string]any{
		"patient": "Patient/" + patient, "question": "Is the nodule malignant?", "specialty": "oncology",
		"languages": []string{"en"}, "studies": []string{study}, "deadline": time.Now().Add(72 * time.Hour),
	}, &c)
	if status != http.StatusCreated || c.Status != "draft" || c.Patient != "Patient/"+patient {
		t.Fatalf("create: %d %s", status, body)
	}
	cu := g.URL + "/cases/" + c.ID

	// Refusals before the case is assigned or released.
	cm := g.Client(t, "cm-ana")
	okafor, garcia := g.Client(t, "dr-okafor"), g.Client(t, "dr-garcia")
	for _, tc := range []struct {
		name   string
		c      *http.Client
		method string
		url    string
		body   any
		want   int
	}{
		{"other hospital reads", g.Client(t, "city-general"), "GET", cu, nil, 404},
		{"other hospital packet", g.Client(t, "city-general"), "GET", cu + "/packet", nil, 404},
		{"release before assign", cm, "POST", cu + "/release", nil, 409},
		{"hospital assigns", hosp, "POST", cu + "/assign", map[string]any{"specialists": []string{"dr-okafor"}}, 403},
		{"unknown specialist", cm, "POST", cu + "/assign", map[string]any{"specialists": []string{"dr-nobody"}}, 422},
		{"bad body", cm, "POST", cu + "/assign", map[string]any{"specialist": "dr-okafor"}, 400},
		{"unknown case", cm, "GET", g.URL + "/cases/c-0000000000000000", nil, 404},
		{"specialist creates", okafor, "POST", g.URL + "/cases", map[string]any{"patient": "Patient/" + patient, "question": "q", "specialty": "oncology"}, 403},
		{"unknown patient", hosp, "POST", g.URL + "/cases", map[string]any{"patient": "Patient/nope", "question": "q", "specialty": "oncology"}, 422},
	} {
		if status, body := apiCall(t, tc.c, tc.method, tc.url, tc.body, nil); status != tc.want {
			t.Errorf("%s: %d, want %d: %s", tc.name, status, tc.want, body)
		}
	}

	status, body = apiCall(t, cm, "POST", cu+"/assign", map[string]any{"specialists": []string{"dr-okafor", "dr-garcia"}}, &c)
	if status != 200 || c.Status != "assigned" || len(c.Assigned) != 2 {
		t.Fatalf("assign: %d %s", status, body)
	}
	if status, body := apiCall(t, okafor, "GET", cu+"/packet", nil, nil); status != http.StatusConflict {
		t.Errorf("packet before release: %d %s", status, body)
	}
	status, body = apiCall(t, cm, "POST", cu+"/release", nil, &c)
	if status != 200 || c.Status != "released" || len(c.Released) != 2 {
		t.Fatalf("release: %d %s", status, body)
	}

	// The first download builds and streams; the second is the stored
	// copy, and a range of it resumes with the same bytes.
	first, hdr := download(t, okafor, cu+"/packet", nil)
	if hdr.Get("X-Consilium-Packet-Status") != "building" || hdr.Get("ETag") == "" {
		t.Errorf("first download headers: %v", hdr)
	}
	second, hdr2 := download(t, okafor, cu+"/packet", nil)
	if !bytes.Equal(first, second) || hdr2.Get("ETag") != hdr.Get("ETag") || hdr2.Get("X-Consilium-Packet-Status") != "stored" {
		t.Fatalf("stored copy differs: %d vs %d bytes, %v", len(first), len(second), hdr2)
	}
	tail, hdr3 := download(t, okafor, cu+"/packet", http.Header{"Range": {"bytes=100-"}, "If-Range": {hdr.Get("ETag")}})
	if !bytes.Equal(tail, first[100:]) || hdr3.Get("Content-Range") == "" {
		t.Fatalf("range: %d bytes, %v", len(tail), hdr3)
	}
	m := openPacket(t, g, "dr-okafor", first)
	if m.Case.ID != c.ID || m.Case.Patient == "" || m.Case.Patient == patient {
		t.Fatalf("manifest case: %+v", m.Case)
	}
	// Each specialist's packet is encrypted to it alone.
	garciaPacket, _ := download(t, garcia, cu+"/packet", nil)
	if _, err := packet.Open(bytes.NewReader(garciaPacket), ageIdentity(t, g, "dr-okafor"), gatewayPub(t, g)); err == nil {
		t.Error("dr-okafor's identity opens dr-garcia's packet")
	}

	// Opinions.
	report := func(subject string) map[string]any {
		return map[string]any{
			"resourceType": "DiagnosticReport", "status": "final",
			"code":       map[string]any{"text": "Second opinion"},
			"subject":    map[string]any{"reference": "Patient/" + subject},
			"conclusion": "Benign; no treatment needed.",
		}
	}
	if status, body := apiCall(t, okafor, "POST", cu+"/opinions", report("someone-else"), nil); status != 422 {
		t.Errorf("opinion about another patient: %d %s", status, body)
	}
	req, _ := json.Marshal(report(m.Case.Patient))
	resp, err := okafor.Post(cu+"/opinions", "application/fhir+json", bytes.NewReader(req))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("opinion: %d", resp.StatusCode)
	}
	var bundle struct {
		Entry []struct {
			Resource struct {
				Subject struct {
					Reference string `json:"reference"`
				} `json:"subject"`
				Performer []struct {
					Display string `json:"display"`
				} `json:"performer"`
			} `json:"resource"`
		} `json:"entry"`
	}
	status, body = apiCall(t, hosp, "GET", cu+"/opinions", nil, &bundle)
	if status != 200 || len(bundle.Entry) != 1 || bundle.Entry[0].Resource.Subject.Reference != "Patient/"+patient ||
		bundle.Entry[0].Resource.Performer[0].Display != "dr-okafor" {
		t.Fatalf("opinions: %d %s", status, body)
	}
	apiCall(t, hosp, "GET", cu, nil, &c)
	if c.Status != "opinion-received" || c.Opinions != 1 {
		t.Errorf("case after the opinion: %+v", c)
	}

	// Unassigning after the release ends dr-garcia's access at once, its
	// stored packet included; assigning it again needs another release.
	if status, body := apiCall(t, cm, "POST", cu+"/assign", map[string]any{"specialists": []string{"dr-okafor"}}, &c); status != 200 || len(c.Released) != 1 {
		t.Fatalf("unassign after release: %d %s", status, body)
	}
	if status, body := apiCall(t, garcia, "GET", cu+"/packet", nil, nil); status != http.StatusForbidden {
		t.Errorf("unassigned specialist's packet: %d %s", status, body)
	}
	apiCall(t, cm, "POST", cu+"/assign", map[string]any{"specialists": []string{"dr-okafor", "dr-garcia"}}, &c)
	if status, body := apiCall(t, garcia, "GET", cu+"/packet", nil, nil); status != http.StatusConflict {
		t.Errorf("re-assigned specialist before the next release: %d %s", status, body)
	}
	if status, body := apiCall(t, cm, "POST", cu+"/release", nil, &c); status != 200 || c.Status != "opinion-received" || len(c.Released) != 2 {
		t.Fatalf("release again: %d %s", status, body)
	}
	download(t, garcia, cu+"/packet", nil)

	// Revoking the consent refuses the stored packet at once.
	f.do(http.MethodPut, "/Consent/c1", "application/fhir+json", consentJSON("c1", patient, "inactive")).want(t, http.StatusOK)
	if status, body := apiCall(t, okafor, "GET", cu+"/packet", nil, nil); status != http.StatusForbidden || !strings.Contains(string(body), "reasons") {
		t.Errorf("packet after revocation: %d %s", status, body)
	}
	// Closing ends the case; it cannot be reopened.
	if status, body := apiCall(t, cm, "POST", cu+"/close", nil, &c); status != 200 || c.Status != "closed" {
		t.Errorf("close: %d %s", status, body)
	}
	if status, _ := apiCall(t, cm, "POST", cu+"/assign", map[string]any{"specialists": []string{"dr-okafor"}}, nil); status != http.StatusConflict {
		t.Errorf("assign after close: %d", status)
	}
}

func download(t testing.TB, c *http.Client, url string, h http.Header) ([]byte, http.Header) {
	t.Helper()
	req, err := http.NewRequest("GET", url, nil)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range h {
		req.Header[k] = v
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != 200 && resp.StatusCode != 206 {
		t.Fatalf("GET %s: %d %s", url, resp.StatusCode, b)
	}
	return b, resp.Header
}

func ageIdentity(t testing.TB, g *gatewaytest.Gateway, id string) age.Identity {
	t.Helper()
	data, err := os.ReadFile(g.Layout.AgeIdentity(id))
	if err != nil {
		t.Fatal(err)
	}
	ids, err := age.ParseIdentities(bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	return ids[0]
}

func gatewayPub(t testing.TB, g *gatewaytest.Gateway) minisign.PublicKey {
	t.Helper()
	data, err := os.ReadFile(g.Layout.SigningPub())
	if err != nil {
		t.Fatal(err)
	}
	var pub minisign.PublicKey
	if err := pub.UnmarshalText(data); err != nil {
		t.Fatal(err)
	}
	return pub
}

func openPacket(t testing.TB, g *gatewaytest.Gateway, id string, b []byte) *packet.Manifest {
	t.Helper()
	rd, err := packet.Open(bytes.NewReader(b), ageIdentity(t, g, id), gatewayPub(t, g))
	if err != nil {
		t.Fatal(err)
	}
	m, err := rd.Verify(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return m
}
