package gateway_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/consilium/consilium/fhir"
	"github.com/consilium/consilium/gateway"
	"github.com/consilium/consilium/gateway/gatewaytest"
	"github.com/consilium/consilium/internal/testenv"
	"github.com/consilium/consilium/storage"
)

// fhirTestdata returns ../shared/testdata/fhir, next to the repository.
func fhirTestdata(t testing.TB) string {
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
	d := filepath.Join(dir, "..", "shared", "testdata", "fhir")
	if _, err := os.Stat(d); err != nil {
		testenv.Missing(t, "../shared/testdata", "the shared test corpus must sit next to the repository")
	}
	return d
}

func fhirGlob(t testing.TB, sub string) []string {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(fhirTestdata(t), sub, "*"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no files in %s: %v", sub, err)
	}
	return files
}

// fhirClient calls the FHIR API as one principal.
type fhirClient struct {
	t    testing.TB
	c    *http.Client
	base string
}

func newFHIRClient(t testing.TB, g *gatewaytest.Gateway, id string) fhirClient {
	return fhirClient{t: t, c: g.Client(t, id), base: g.URL + "/fhir"}
}

type fhirResponse struct {
	status int
	header http.Header
	body   []byte
}

// do sends a request; hdr are name, value pairs.
func (f fhirClient) do(method, path, ctype string, body []byte, hdr ...string) fhirResponse {
	f.t.Helper()
	var r io.Reader
	if body != nil {
		r = bytes.NewReader(body)
	}
	req, err := http.NewRequest(method, f.base+path, r)
	if err != nil {
		f.t.Fatal(err)
	}
	if ctype != "" {
		req.Header.Set("Content-Type", ctype)
	}
	req.Header.Set("Accept", "application/fhir+json")
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := f.c.Do(req)
	if err != nil {
		f.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		f.t.Fatal(err)
	}
	return fhirResponse{status: resp.StatusCode, header: resp.Header, body: b}
}

func (f fhirClient) get(path string, hdr ...string) fhirResponse {
	f.t.Helper()
	return f.do(http.MethodGet, path, "", nil, hdr...)
}

func (f fhirClient) post(path string, body []byte, hdr ...string) fhirResponse {
	f.t.Helper()
	return f.do(http.MethodPost, path, "application/fhir+json", body, hdr...)
}

// want fails unless the response has the status; error statuses must come
// with an OperationOutcome.
func (r fhirResponse) want(t testing.TB, status int) fhirResponse {
	t.Helper()
	if r.status != status {
		t.Fatalf("status %d, want %d: %s", r.status, status, truncate(r.body))
	}
	if status >= 400 {
		r.outcome(t)
	}
	return r
}

// outcome checks the body is an OperationOutcome and returns its issues.
func (r fhirResponse) outcome(t testing.TB) []map[string]any {
	t.Helper()
	if ct := r.header.Get("Content-Type"); !strings.HasPrefix(ct, "application/fhir+json") {
		t.Fatalf("error with Content-Type %q", ct)
	}
	var oo struct {
		ResourceType string           `json:"resourceType"`
		Issue        []map[string]any `json:"issue"`
	}
	if err := json.Unmarshal(r.body, &oo); err != nil || oo.ResourceType != "OperationOutcome" || len(oo.Issue) == 0 {
		t.Fatalf("not an OperationOutcome (%v): %s", err, truncate(r.body))
	}
	return oo.Issue
}

func (r fhirResponse) json(t testing.TB) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(r.body, &m); err != nil {
		t.Fatalf("response is not JSON: %v: %s", err, truncate(r.body))
	}
	return m
}

func truncate(b []byte) string {
	if len(b) > 2000 {
		return string(b[:2000]) + "…"
	}
	return string(b)
}

func readTestFile(t testing.TB, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// storeListing lists the store's objects, leaving out the policy engine's
// recorded decisions (they are written on a timer, whatever is stored).
func storeListing(t testing.TB, s storage.Store) []string {
	t.Helper()
	var out []string
	for info, err := range s.List(context.Background(), "") {
		if err != nil {
			t.Fatal(err)
		}
		if !strings.HasPrefix(info.Name, "policies/decisions/") {
			out = append(out, info.Name)
		}
	}
	return out
}

// sameFHIR compares two resources as parsed protos, ignoring id and the
// meta the server assigns; ids maps sent references to stored ones.
func sameFHIR(t testing.TB, sent, got []byte, ids map[string]string) {
	t.Helper()
	var want, have map[string]any
	if err := json.Unmarshal(sent, &want); err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(got, &have); err != nil {
		t.Fatal(err)
	}
	mapRefs(want, ids)
	want["id"] = have["id"]
	for _, m := range []map[string]any{want, have} {
		if meta, ok := m["meta"].(map[string]any); ok {
			delete(meta, "versionId")
			delete(meta, "lastUpdated")
			if len(meta) == 0 {
				delete(m, "meta")
			}
		}
	}
	wb, _ := json.Marshal(want)
	hb, _ := json.Marshal(have)
	p, err := fhir.NewParser()
	if err != nil {
		t.Fatal(err)
	}
	eq, err := p.Equal(wb, hb)
	if err != nil {
		t.Fatal(err)
	}
	if !eq {
		t.Fatalf("read back differs:\nsent %s\n got %s", truncate(wb), truncate(hb))
	}
}

func mapRefs(v any, ids map[string]string) {
	switch t := v.(type) {
	case map[string]any:
		for k, c := range t {
			if s, ok := c.(string); ok && k == "reference" {
				if n, ok := ids[s]; ok {
					t[k] = n
				}
				continue
			}
			mapRefs(c, ids)
		}
	case []any:
		for _, e := range t {
			mapRefs(e, ids)
		}
	}
}

// location returns Type/id of a Location header.
func location(t testing.TB, r fhirResponse) (typ, id string) {
	t.Helper()
	loc := r.header.Get("Location")
	i := strings.Index(loc, "/fhir/")
	if i < 0 {
		t.Fatalf("Location %q", loc)
	}
	parts := strings.Split(loc[i+len("/fhir/"):], "/")
	if len(parts) < 2 {
		t.Fatalf("Location %q", loc)
	}
	return parts[0], parts[1]
}

type txResponse struct {
	ResourceType string `json:"resourceType"`
	Type         string `json:"type"`
	Entry        []struct {
		Resource json.RawMessage `json:"resource"`
		Response struct {
			Status   string          `json:"status"`
			Location string          `json:"location"`
			Etag     string          `json:"etag"`
			Outcome  json.RawMessage `json:"outcome"`
		} `json:"response"`
	} `json:"entry"`
}

func decodeTx(t testing.TB, r fhirResponse) txResponse {
	t.Helper()
	var tx txResponse
	if err := json.Unmarshal(r.body, &tx); err != nil || tx.ResourceType != "Bundle" {
		t.Fatalf("not a Bundle (%v): %s", err, truncate(r.body))
	}
	return tx
}

type txEntry struct {
	FullURL  string          `json:"fullUrl"`
	Resource json.RawMessage `json:"resource"`
}

func bundleEntries(t testing.TB, raw []byte) []txEntry {
	t.Helper()
	var b struct {
		Entry []txEntry `json:"entry"`
	}
	if err := json.Unmarshal(raw, &b); err != nil {
		t.Fatal(err)
	}
	return b.Entry
}

// postSynthea posts a Synthea transaction Bundle and checks every entry
// reads back equal; it returns the stored Type/id of each entry.
func postSynthea(t testing.TB, f fhirClient, path string) []string {
	t.Helper()
	raw := readTestFile(t, path)
	tx := decodeTx(t, f.post("", raw).want(t, http.StatusOK))
	in := bundleEntries(t, raw)
	if tx.Type != "transaction-response" || len(tx.Entry) != len(in) {
		t.Fatalf("%s with %d entries for %d", tx.Type, len(tx.Entry), len(in))
	}
	ids := map[string]string{}
	keys := make([]string, len(in))
	for i, e := range tx.Entry {
		if e.Response.Status != "201 Created" || e.Response.Etag != `W/"1"` {
			t.Fatalf("entry %d: %+v", i, e.Response)
		}
		parts := strings.Split(e.Response.Location, "/")
		keys[i] = parts[0] + "/" + parts[1]
		ids[in[i].FullURL] = keys[i]
	}
	for i, e := range in {
		got := f.get("/"+keys[i]).want(t, http.StatusOK)
		sameFHIR(t, e.Resource, got.body, ids)
	}
	return keys
}

func TestFHIRValidFilesReadBackEqual(t *testing.T) {
	g := gatewaytest.Start(t, nil, gatewaytest.Config{})
	f := newFHIRClient(t, g, "st-marys")
	validFilesReadBack(t, f)
}

func validFilesReadBack(t *testing.T, f fhirClient) {
	t.Run("hl7-examples", func(t *testing.T) {
		for _, path := range fhirGlob(t, "hl7-examples") {
			t.Run(filepath.Base(path), func(t *testing.T) {
				raw := readTestFile(t, path)
				var head struct{ ResourceType string }
				if err := json.Unmarshal(raw, &head); err != nil {
					t.Fatal(err)
				}
				created := f.post("/"+head.ResourceType, raw).want(t, http.StatusCreated)
				typ, id := location(t, created)
				if typ != head.ResourceType || created.header.Get("ETag") != `W/"1"` {
					t.Fatalf("created %s/%s etag %s", typ, id, created.header.Get("ETag"))
				}
				sameFHIR(t, raw, created.body, nil)
				sameFHIR(t, raw, f.get("/"+typ+"/"+id).want(t, http.StatusOK).body, nil)
				// The same file under the id it carries, with PUT.
				var m map[string]any
				_ = json.Unmarshal(raw, &m)
				if sid, ok := m["id"].(string); ok {
					f.do(http.MethodPut, "/"+typ+"/"+sid, "application/fhir+json", raw).want(t, http.StatusCreated)
					sameFHIR(t, raw, f.get("/"+typ+"/"+sid).want(t, http.StatusOK).body, nil)
				}
			})
		}
	})
	t.Run("synthea", func(t *testing.T) {
		for _, path := range fhirGlob(t, "synthea") {
			t.Run(filepath.Base(path), func(t *testing.T) { postSynthea(t, f, path) })
		}
	})
	t.Run("ndjson", func(t *testing.T) {
		for _, path := range fhirGlob(t, "ndjson") {
			t.Run(filepath.Base(path), func(t *testing.T) {
				raw := readTestFile(t, path)
				res := f.do(http.MethodPost, "", "application/fhir+ndjson", raw).want(t, http.StatusOK)
				tx := decodeTx(t, res)
				lines := bytes.Split(bytes.TrimSpace(raw), []byte("\n"))
				if tx.Type != "batch-response" || len(tx.Entry) != len(lines) {
					t.Fatalf("%s with %d entries for %d lines", tx.Type, len(tx.Entry), len(lines))
				}
				for i, e := range tx.Entry {
					if e.Response.Status != "201 Created" {
						t.Fatalf("line %d: %+v", i+1, e.Response)
					}
					sameFHIR(t, lines[i], f.get("/"+strings.TrimSuffix(e.Response.Location, "/_history/1")).want(t, http.StatusOK).body, nil)
				}
			})
		}
	})
}

// invalidTargets are where an invalid file is sent: the base (as a
// Bundle) and, when its type can be read, its type's endpoint.
func invalidTargets(raw []byte) []string {
	targets := []string{""}
	var head struct{ ResourceType string }
	if json.Unmarshal(raw, &head) == nil && head.ResourceType != "" {
		targets = append(targets, "/"+head.ResourceType)
	}
	return targets
}

func TestFHIRInvalidFilesRefusedWithoutTrace(t *testing.T) {
	g := gatewaytest.Start(t, nil, gatewaytest.Config{})
	f := newFHIRClient(t, g, "st-marys")
	invalidFilesRefused(t, g, f)
}

func invalidFilesRefused(t *testing.T, g *gatewaytest.Gateway, f fhirClient) {
	for _, path := range fhirGlob(t, "invalid") {
		raw := readTestFile(t, path)
		for _, target := range invalidTargets(raw) {
			t.Run(filepath.Base(path)+target, func(t *testing.T) {
				before := storeListing(t, g.Store)
				r := f.post(target, raw)
				if r.status != http.StatusBadRequest && r.status != http.StatusUnprocessableEntity {
					t.Fatalf("status %d: %s", r.status, truncate(r.body))
				}
				issues := r.outcome(t)
				if issues[0]["severity"] != "error" {
					t.Fatalf("first issue %v", issues[0])
				}
				if after := storeListing(t, g.Store); !slices.Equal(before, after) {
					t.Fatalf("the refused file left objects: %v", diff(before, after))
				}
			})
		}
	}
	// The transaction example of the specification cannot succeed on a
	// fresh server (an If-Match on a resource that does not exist, an
	// operation call): refused as a whole, nothing stored; as a Bundle
	// resource it is stored and read back.
	t.Run("bundle-transaction.json", func(t *testing.T) {
		raw := readTestFile(t, filepath.Join(fhirTestdata(t), "hl7-examples", "bundle-transaction.json"))
		before := storeListing(t, g.Store)
		r := f.post("", raw)
		if r.status < 400 || r.status >= 500 {
			t.Fatalf("status %d: %s", r.status, truncate(r.body))
		}
		r.outcome(t)
		if after := storeListing(t, g.Store); !slices.Equal(before, after) {
			t.Fatalf("the refused transaction left objects: %v", diff(before, after))
		}
	})
}

func diff(before, after []string) []string {
	var out []string
	for _, a := range after {
		if !slices.Contains(before, a) {
			out = append(out, "+"+a)
		}
	}
	for _, b := range before {
		if !slices.Contains(after, b) {
			out = append(out, "-"+b)
		}
	}
	return out
}

func TestFHIRErrorsAreOperationOutcomes(t *testing.T) {
	g := gatewaytest.Start(t, nil, gatewaytest.Config{Gateway: gateway.Config{FHIR: gateway.FHIRConfig{MaxBodyBytes: 1 << 20, MaxLineBytes: 4096}}})
	f := newFHIRClient(t, g, "st-marys")
	patient := []byte(`{"resourceType":"Patient","active":true}`)
	big := []byte(`{"resourceType":"Patient","text":{"status":"generated","div":"<div xmlns=\"http://www.w3.org/1999/xhtml\">` + strings.Repeat("x", 2<<20) + `</div>"}}`)
	cases := []struct {
		name   string
		do     func() fhirResponse
		status int
		code   string
	}{
		{"malformed JSON", func() fhirResponse { return f.post("/Patient", []byte(`{"resourceType":`)) }, 400, "structure"},
		{"unknown element", func() fhirResponse { return f.post("/Patient", []byte(`{"resourceType":"Patient","colour":"blue"}`)) }, 422, "structure"},
		{"type mismatch", func() fhirResponse { return f.post("/Observation", patient) }, 422, "invalid"},
		{"too big", func() fhirResponse { return f.post("/Patient", big) }, 413, "too-long"},
		{"too big bundle", func() fhirResponse { return f.post("", big) }, 413, "too-long"},
		{"wrong media type", func() fhirResponse { return f.do(http.MethodPost, "/Patient", "text/plain", patient) }, 415, "not-supported"},
		{"xml asked", func() fhirResponse { return f.get("/Patient/x", "Accept", "application/fhir+xml") }, 406, "not-supported"},
		{"unknown type", func() fhirResponse { return f.get("/Unicorn/1") }, 404, "not-found"},
		{"no such resource", func() fhirResponse { return f.get("/Patient/nope") }, 404, "not-found"},
		{"unsupported search parameter", func() fhirResponse { return f.get("/Patient?name=peter") }, 400, "not-supported"},
		{"collection Bundle at the base", func() fhirResponse {
			return f.post("", []byte(`{"resourceType":"Bundle","type":"collection"}`))
		}, 400, "not-supported"},
		{"ndjson line too long", func() fhirResponse {
			r := f.do(http.MethodPost, "", "application/fhir+ndjson", append(big[:5000:5000], '\n'))
			return r
		}, 200, ""},
		{"no certificate", func() fhirResponse {
			a := fhirClient{t: t, c: g.AnonymousClient(t), base: g.URL + "/fhir"}
			return a.get("/metadata")
		}, 401, "login"},
		{"specialist writes", func() fhirResponse { return newFHIRClient(t, g, "dr-okafor").post("/Patient", patient) }, 403, "forbidden"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := c.do()
			if r.status != c.status {
				t.Fatalf("status %d, want %d: %s", r.status, c.status, truncate(r.body))
			}
			if c.code == "" {
				return
			}
			issues := r.outcome(t)
			if issues[0]["code"] != c.code {
				t.Fatalf("issue code %v, want %s: %s", issues[0]["code"], c.code, truncate(r.body))
			}
		})
	}
}

func TestFHIRMetadata(t *testing.T) {
	g := gatewaytest.Start(t, nil, gatewaytest.Config{})
	f := newFHIRClient(t, g, "st-marys")
	cs := f.get("/metadata").want(t, http.StatusOK).json(t)
	if cs["resourceType"] != "CapabilityStatement" || cs["fhirVersion"] != "4.0.1" {
		t.Fatalf("metadata: %v %v", cs["resourceType"], cs["fhirVersion"])
	}
	p, _ := fhir.NewParser()
	if _, err := p.Parse(f.get("/metadata").body); err != nil {
		t.Fatalf("the CapabilityStatement is not valid FHIR: %v", err)
	}
}

// TestFHIRScopedByOrganisation: another hospital cannot see, find or
// overwrite st-marys' records, and gets 404s, not 403s.
func TestFHIRScopedByOrganisation(t *testing.T) {
	g := gatewaytest.Start(t, nil, gatewaytest.Config{})
	scopedByOrganisation(t, g)
}

func scopedByOrganisation(t *testing.T, g *gatewaytest.Gateway) {
	stm := newFHIRClient(t, g, "st-marys")
	city := newFHIRClient(t, g, "city-general")
	keys := postSynthea(t, stm, fhirGlob(t, "synthea")[0])
	patient := keys[slices.IndexFunc(keys, func(k string) bool { return strings.HasPrefix(k, "Patient/") })]
	pid := strings.TrimPrefix(patient, "Patient/")
	for _, path := range []string{"/" + patient, "/" + keys[3], "/" + patient + "/_history/1", "/" + patient + "/_history", "/Patient/" + pid + "/$everything"} {
		stm.get(path).want(t, http.StatusOK)
		city.get(path).want(t, http.StatusNotFound)
		// Naming st-marys explicitly is refused by the policy: still 404.
		r := city.get(path, gateway.OrganizationHeader, "st-marys").want(t, http.StatusNotFound)
		if bytes.Contains(r.body, []byte("policy")) {
			t.Fatalf("the 404 tells about the policy: %s", r.body)
		}
	}
	search := city.get("/Observation?patient="+pid).want(t, http.StatusOK).json(t)
	if search["total"] != float64(0) || search["entry"] != nil {
		t.Fatalf("city-general found st-marys' observations: %v", search["total"])
	}
	city.get("/Observation?patient="+pid, gateway.OrganizationHeader, "st-marys").want(t, http.StatusForbidden)
	// Writing the same id in city-general creates city-general's own.
	city.do(http.MethodPut, "/"+patient, "application/fhir+json", []byte(`{"resourceType":"Patient","id":"`+pid+`"}`)).want(t, http.StatusCreated)
	got := stm.get("/"+patient).want(t, http.StatusOK)
	if got.header.Get("ETag") != `W/"1"` {
		t.Fatalf("st-marys' patient changed: %s", got.header.Get("ETag"))
	}
}

func TestFHIRVersioning(t *testing.T) {
	g := gatewaytest.Start(t, nil, gatewaytest.Config{})
	f := newFHIRClient(t, g, "st-marys")
	put := func(body string, hdr ...string) fhirResponse {
		return f.do(http.MethodPut, "/Patient/v1", "application/fhir+json", []byte(body), hdr...)
	}
	put(`{"resourceType":"Patient","id":"v1","gender":"female"}`).want(t, http.StatusCreated)
	r := put(`{"resourceType":"Patient","id":"v1","gender":"male"}`).want(t, http.StatusOK)
	if r.header.Get("ETag") != `W/"2"` || !strings.HasSuffix(r.header.Get("Location"), "/Patient/v1/_history/2") {
		t.Fatalf("second version: %v", r.header)
	}
	put(`{"resourceType":"Patient","id":"v1","gender":"other"}`, "If-Match", `W/"1"`).want(t, http.StatusPreconditionFailed)
	put(`{"resourceType":"Patient","id":"v1","gender":"other"}`, "If-Match", `W/"2"`).want(t, http.StatusOK)
	put(`{"resourceType":"Patient","id":"other"}`).want(t, http.StatusBadRequest)
	for vid, gender := range map[int]string{1: "female", 2: "male", 3: "other"} {
		v := f.get(fmt.Sprintf("/Patient/v1/_history/%d", vid)).want(t, http.StatusOK).json(t)
		meta := v["meta"].(map[string]any)
		if v["gender"] != gender || meta["versionId"] != fmt.Sprint(vid) {
			t.Fatalf("version %d: %v %v", vid, v["gender"], meta)
		}
	}
	f.get("/Patient/v1/_history/4").want(t, http.StatusNotFound)
	h := f.get("/Patient/v1/_history").want(t, http.StatusOK).json(t)
	if h["type"] != "history" || h["total"] != float64(3) {
		t.Fatalf("history: %v %v", h["type"], h["total"])
	}
	if r := f.get("/Patient/v1", "If-None-Match", `W/"3"`); r.status != http.StatusNotModified {
		t.Fatalf("If-None-Match: %d", r.status)
	}
	f.do(http.MethodDelete, "/Patient/v1", "", nil).want(t, http.StatusNoContent)
	f.get("/Patient/v1").want(t, http.StatusGone)
	f.get("/Patient/v1/_history/3").want(t, http.StatusOK)
	put(`{"resourceType":"Patient","id":"v1"}`).want(t, http.StatusCreated)
	if r := f.get("/Patient/v1").want(t, http.StatusOK); r.header.Get("ETag") != `W/"5"` {
		t.Fatalf("after re-creation: %s", r.header.Get("ETag"))
	}
}

// txBundle builds a transaction or batch Bundle from entries.
func txBundle(typ string, entries ...string) []byte {
	return []byte(`{"resourceType":"Bundle","type":"` + typ + `","entry":[` + strings.Join(entries, ",") + `]}`)
}

func TestFHIRTransactionAndBatch(t *testing.T) {
	g := gatewaytest.Start(t, nil, gatewaytest.Config{})
	f := newFHIRClient(t, g, "st-marys")
	good := `{"fullUrl":"urn:uuid:8c6b9a4e-0000-4000-8000-000000000001","resource":{"resourceType":"Patient","identifier":[{"system":"urn:mrn","value":"tx-1"}]},"request":{"method":"POST","url":"Patient"}}`
	obs := `{"resource":{"resourceType":"Observation","status":"final","code":{"text":"weight"},"subject":{"reference":"urn:uuid:8c6b9a4e-0000-4000-8000-000000000001"}},"request":{"method":"POST","url":"Observation"}}`
	bad := `{"resource":{"resourceType":"Observation","status":"not a code","code":{"text":"x"}},"request":{"method":"POST","url":"Observation"}}`

	t.Run("transaction is all or nothing", func(t *testing.T) {
		before := storeListing(t, g.Store)
		r := f.post("", txBundle("transaction", good, obs, bad)).want(t, http.StatusUnprocessableEntity)
		issues := r.outcome(t)
		if expr, _ := issues[0]["expression"].([]any); len(expr) == 0 || !strings.HasPrefix(expr[0].(string), "Bundle.entry[2].resource") {
			t.Fatalf("issue does not name entry 2: %v", issues[0])
		}
		if after := storeListing(t, g.Store); !slices.Equal(before, after) {
			t.Fatalf("objects left: %v", diff(before, after))
		}
	})
	t.Run("batch reports each entry", func(t *testing.T) {
		other := strings.Replace(good, "tx-1", "tx-2", 1)
		tx := decodeTx(t, f.post("", txBundle("batch", other, bad)).want(t, http.StatusOK))
		if tx.Type != "batch-response" || tx.Entry[0].Response.Status != "201 Created" || !strings.HasPrefix(tx.Entry[1].Response.Status, "422") || tx.Entry[1].Response.Outcome == nil {
			t.Fatalf("batch response: %+v", tx.Entry)
		}
		f.get("/"+strings.TrimSuffix(tx.Entry[0].Response.Location, "/_history/1")).want(t, http.StatusOK)
	})
	t.Run("urn:uuid references resolved", func(t *testing.T) {
		tx := decodeTx(t, f.post("", txBundle("transaction", good, obs)).want(t, http.StatusOK))
		pat := strings.TrimSuffix(tx.Entry[0].Response.Location, "/_history/1")
		o := f.get("/"+strings.TrimSuffix(tx.Entry[1].Response.Location, "/_history/1")).want(t, http.StatusOK).json(t)
		if ref := o["subject"].(map[string]any)["reference"]; ref != pat {
			t.Fatalf("subject %v, want %s", ref, pat)
		}
		s := f.get("/Observation?patient="+pat).want(t, http.StatusOK).json(t)
		if s["total"] != float64(1) {
			t.Fatalf("search by patient: %v", s["total"])
		}
	})
	t.Run("batch entries may not reference each other", func(t *testing.T) {
		other := strings.Replace(good, "tx-1", "tx-3", 1)
		tx := decodeTx(t, f.post("", txBundle("batch", other, obs)).want(t, http.StatusOK))
		if tx.Entry[0].Response.Status != "201 Created" || !strings.HasPrefix(tx.Entry[1].Response.Status, "422") {
			t.Fatalf("batch: %+v", tx.Entry)
		}
	})
	t.Run("ifNoneExist and conditional references", func(t *testing.T) {
		prac := `{"resourceType":"Practitioner","identifier":[{"system":"http://hl7.org/fhir/sid/us-npi","value":"9999912345"}]}`
		first := f.post("/Practitioner", []byte(prac), "If-None-Exist", "identifier=http://hl7.org/fhir/sid/us-npi|9999912345").want(t, http.StatusCreated)
		_, pid := location(t, first)
		again := f.post("/Practitioner", []byte(prac), "If-None-Exist", "identifier=http://hl7.org/fhir/sid/us-npi|9999912345").want(t, http.StatusOK)
		if _, id := location(t, again); id != pid {
			t.Fatalf("ifNoneExist created %s, want the match %s", id, pid)
		}
		cond := `{"resource":{"resourceType":"Observation","status":"final","code":{"text":"bp"},"performer":[{"reference":"Practitioner?identifier=http://hl7.org/fhir/sid/us-npi|9999912345"}]},"request":{"method":"POST","url":"Observation"}}`
		ine := `{"fullUrl":"urn:uuid:8c6b9a4e-0000-4000-8000-000000000009","resource":` + prac + `,"request":{"method":"POST","url":"Practitioner","ifNoneExist":"identifier=9999912345"}}`
		tx := decodeTx(t, f.post("", txBundle("transaction", cond, ine)).want(t, http.StatusOK))
		if tx.Entry[1].Response.Status != "200 OK" || !strings.Contains(tx.Entry[1].Response.Location, pid) {
			t.Fatalf("ifNoneExist in a transaction: %+v", tx.Entry[1].Response)
		}
		o := f.get("/"+strings.TrimSuffix(tx.Entry[0].Response.Location, "/_history/1")).want(t, http.StatusOK).json(t)
		if ref := o["performer"].([]any)[0].(map[string]any)["reference"]; ref != "Practitioner/"+pid {
			t.Fatalf("conditional reference became %v", ref)
		}
		none := strings.Replace(cond, "9999912345", "000", 1)
		f.post("", txBundle("transaction", none)).want(t, http.StatusPreconditionFailed)
		f.post("/Practitioner", []byte(prac)).want(t, http.StatusCreated)
		f.post("/Practitioner", []byte(prac), "If-None-Exist", "identifier=9999912345").want(t, http.StatusPreconditionFailed)
	})
	t.Run("conditional update and delete", func(t *testing.T) {
		put := `{"resource":{"resourceType":"Patient","identifier":[{"system":"urn:mrn","value":"cu-1"}],"gender":"female"},"request":{"method":"PUT","url":"Patient?identifier=urn:mrn|cu-1"}}`
		tx := decodeTx(t, f.post("", txBundle("transaction", put)).want(t, http.StatusOK))
		if tx.Entry[0].Response.Status != "201 Created" {
			t.Fatalf("conditional create: %+v", tx.Entry[0].Response)
		}
		tx2 := decodeTx(t, f.post("", txBundle("transaction", put)).want(t, http.StatusOK))
		if tx2.Entry[0].Response.Status != "200 OK" || tx2.Entry[0].Response.Etag != `W/"2"` {
			t.Fatalf("conditional update: %+v", tx2.Entry[0].Response)
		}
		del := `{"request":{"method":"DELETE","url":"Patient?identifier=urn:mrn|cu-1"}}`
		decodeTx(t, f.post("", txBundle("transaction", del)).want(t, http.StatusOK))
		f.get("/"+strings.TrimSuffix(tx.Entry[0].Response.Location, "/_history/1")).want(t, http.StatusGone)
		dup := `{"request":{"method":"DELETE","url":"Patient/a"}}`
		f.post("", txBundle("transaction", dup, dup)).want(t, http.StatusBadRequest)
	})
	t.Run("conditional update and delete over REST", func(t *testing.T) {
		body := []byte(`{"resourceType":"Patient","identifier":[{"system":"urn:mrn","value":"rest-1"}]}`)
		r := f.do(http.MethodPut, "/Patient?identifier=urn:mrn|rest-1", "application/fhir+json", body).want(t, http.StatusCreated)
		_, id := location(t, r)
		r = f.do(http.MethodPut, "/Patient?identifier=urn:mrn|rest-1", "application/fhir+json", body).want(t, http.StatusOK)
		if _, id2 := location(t, r); id2 != id || r.header.Get("ETag") != `W/"2"` {
			t.Fatalf("conditional update went to %s (%s), want %s", id2, r.header.Get("ETag"), id)
		}
		f.do(http.MethodPut, "/Patient?identifier=urn:mrn|rest-1", "application/fhir+json", []byte(`{"resourceType":"Patient","id":"other"}`)).want(t, http.StatusBadRequest)
		f.do(http.MethodPut, "/Patient", "application/fhir+json", body).want(t, http.StatusMethodNotAllowed)
		f.do(http.MethodDelete, "/Patient?identifier=urn:mrn|rest-1", "", nil).want(t, http.StatusNoContent)
		f.get("/Patient/"+id).want(t, http.StatusGone)
		f.do(http.MethodDelete, "/Patient?identifier=urn:mrn|rest-1", "", nil).want(t, http.StatusNoContent)
		f.do(http.MethodPut, "/Patient/twin-1", "application/fhir+json", []byte(`{"resourceType":"Patient","id":"twin-1","identifier":[{"value":"twin"}]}`)).want(t, http.StatusCreated)
		f.do(http.MethodPut, "/Patient/twin-2", "application/fhir+json", []byte(`{"resourceType":"Patient","id":"twin-2","identifier":[{"value":"twin"}]}`)).want(t, http.StatusCreated)
		f.do(http.MethodDelete, "/Patient?identifier=twin", "", nil).want(t, http.StatusPreconditionFailed)
	})
	t.Run("reads in a transaction see its writes", func(t *testing.T) {
		put := `{"resource":{"resourceType":"Patient","id":"rd-1"},"request":{"method":"PUT","url":"Patient/rd-1"}}`
		get := `{"request":{"method":"GET","url":"Patient/rd-1"}}`
		search := `{"request":{"method":"GET","url":"Patient?_id=rd-1"}}`
		tx := decodeTx(t, f.post("", txBundle("transaction", get, search, put)).want(t, http.StatusOK))
		if tx.Entry[0].Response.Status != "200 OK" || tx.Entry[0].Resource == nil || !bytes.Contains(tx.Entry[1].Resource, []byte(`"total":1`)) {
			t.Fatalf("reads: %+v", tx.Entry)
		}
		f.post("", txBundle("transaction", `{"request":{"method":"GET","url":"Patient/none"}}`, put)).want(t, http.StatusNotFound)
	})
}

func TestFHIRSearchPaging(t *testing.T) {
	g := gatewaytest.Start(t, nil, gatewaytest.Config{})
	f := newFHIRClient(t, g, "st-marys")
	f.do(http.MethodPut, "/Patient/pg", "application/fhir+json", []byte(`{"resourceType":"Patient","id":"pg"}`)).want(t, http.StatusCreated)
	var entries []string
	for i := range 7 {
		entries = append(entries, fmt.Sprintf(`{"resource":{"resourceType":"Observation","status":"final","code":{"text":"n%d"},"subject":{"reference":"Patient/pg"}},"request":{"method":"POST","url":"Observation"}}`, i))
	}
	f.post("", txBundle("transaction", entries...)).want(t, http.StatusOK)
	seen := map[string]bool{}
	next := "/Observation?patient=Patient/pg&_count=3"
	pages := 0
	for next != "" {
		page := f.get(next).want(t, http.StatusOK).json(t)
		pages++
		if page["total"] != float64(7) {
			t.Fatalf("total %v", page["total"])
		}
		for _, e := range page["entry"].([]any) {
			seen[e.(map[string]any)["fullUrl"].(string)] = true
		}
		next = ""
		for _, l := range page["link"].([]any) {
			if lm := l.(map[string]any); lm["relation"] == "next" {
				next = strings.TrimPrefix(lm["url"].(string), f.base)
			}
		}
	}
	if pages != 3 || len(seen) != 7 {
		t.Fatalf("%d pages, %d distinct entries", pages, len(seen))
	}
}

// TestFHIREverything: the patient's compartment, then what it references
// that belongs to no patient; nothing of another patient.
func TestFHIREverything(t *testing.T) {
	g := gatewaytest.Start(t, nil, gatewaytest.Config{})
	f := newFHIRClient(t, g, "st-marys")
	files := fhirGlob(t, "synthea")
	keys := postSynthea(t, f, files[0])
	postSynthea(t, f, files[1])
	pid := ""
	for _, k := range keys {
		if strings.HasPrefix(k, "Patient/") {
			pid = strings.TrimPrefix(k, "Patient/")
		}
	}
	ev := f.get("/Patient/"+pid+"/$everything").want(t, http.StatusOK).json(t)
	var got []string
	for _, e := range ev["entry"].([]any) {
		r := e.(map[string]any)["resource"].(map[string]any)
		got = append(got, r["resourceType"].(string)+"/"+r["id"].(string))
	}
	if got[0] != "Patient/"+pid {
		t.Fatalf("first entry %s", got[0])
	}
	slices.Sort(got)
	want := slices.Clone(keys)
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Fatalf("$everything:\n got %v\nwant %v", got, want)
	}
	// From Go: the same, and the patient's consents for policy inputs.
	vs, err := g.Server.FHIR().Everything(context.Background(), "st-marys", pid)
	if err != nil || len(vs) != len(keys) {
		t.Fatalf("Everything: %d versions, %v", len(vs), err)
	}
}

// TestFHIRConsents: consents are listed per patient for the policy, and
// compliance officers may read Consent resources (only those).
func TestFHIRConsents(t *testing.T) {
	g := gatewaytest.Start(t, nil, gatewaytest.Config{})
	f := newFHIRClient(t, g, "st-marys")
	co := newFHIRClient(t, g, "co-lee")
	f.do(http.MethodPut, "/Patient/c1", "application/fhir+json", []byte(`{"resourceType":"Patient","id":"c1"}`)).want(t, http.StatusCreated)
	consent := `{"resourceType":"Consent","id":"k1","status":"active","scope":{"coding":[{"system":"http://terminology.hl7.org/CodeSystem/consentscope","code":"patient-privacy"}]},"category":[{"coding":[{"system":"http://loinc.org","code":"59284-0"}]}],"patient":{"reference":"Patient/c1"},"policyRule":{"coding":[{"system":"http://terminology.hl7.org/CodeSystem/v3-ActCode","code":"OPTIN"}]}}`
	f.do(http.MethodPut, "/Consent/k1", "application/fhir+json", []byte(consent)).want(t, http.StatusCreated)
	f.do(http.MethodPut, "/Observation/o1", "application/fhir+json", []byte(`{"resourceType":"Observation","id":"o1","status":"final","code":{"text":"x"},"subject":{"reference":"Patient/c1"}}`)).want(t, http.StatusCreated)
	got, err := g.Server.FHIR().Consents(context.Background(), "st-marys", "c1")
	if err != nil || len(got) != 1 {
		t.Fatalf("Consents: %d, %v", len(got), err)
	}
	sameFHIR(t, []byte(consent), got[0], nil)
	org := []string{gateway.OrganizationHeader, "st-marys"}
	co.get("/Consent/k1", org...).want(t, http.StatusOK)
	if s := co.get("/Consent?patient=c1", org...).want(t, http.StatusOK).json(t); s["total"] != float64(1) {
		t.Fatalf("compliance consent search: %v", s["total"])
	}
	co.get("/Observation/o1", org...).want(t, http.StatusNotFound)
	co.get("/Patient/c1/$everything", org...).want(t, http.StatusNotFound)
	co.get("/Observation?patient=c1", org...).want(t, http.StatusForbidden)
	co.do(http.MethodPut, "/Consent/k1", "application/fhir+json", []byte(consent), org...).want(t, http.StatusForbidden)
}

// TestFHIRTwoInstancesLoseNoUpdate: two gateways on one store update one
// resource concurrently; every update gets its own version.
func TestFHIRTwoInstancesLoseNoUpdate(t *testing.T) {
	twoInstances(t, gatewaytest.NewStore(t))
}

func twoInstances(t *testing.T, store storage.Store) {
	kr := testKeyringNames(t)
	dir := t.TempDir()
	g1 := gatewaytest.Start(t, store, gatewaytest.Config{Dir: dir, Options: gateway.Options{Names: kr}})
	g2 := gatewaytest.Start(t, store, gatewaytest.Config{Dir: dir, Options: gateway.Options{Names: kr}})
	clients := []fhirClient{newFHIRClient(t, g1, "st-marys"), newFHIRClient(t, g2, "st-marys")}
	const per = 10
	var wg sync.WaitGroup
	errs := make(chan string, 2*per)
	for i, c := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range per {
				body := fmt.Sprintf(`{"resourceType":"Patient","id":"race","name":[{"family":"w%d-%d"}]}`, i, j)
				if r := c.do(http.MethodPut, "/Patient/race", "application/fhir+json", []byte(body)); r.status != 200 && r.status != 201 {
					errs <- fmt.Sprintf("status %d: %s", r.status, r.body)
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Error(e)
	}
	for _, c := range clients {
		if r := c.get("/Patient/race").want(t, http.StatusOK); r.header.Get("ETag") != fmt.Sprintf(`W/"%d"`, 2*per) {
			t.Fatalf("ETag %s after %d updates", r.header.Get("ETag"), 2*per)
		}
	}
	h := clients[0].get("/Patient/race/_history").want(t, http.StatusOK).json(t)
	names := map[string]bool{}
	for _, e := range h["entry"].([]any) {
		n := e.(map[string]any)["resource"].(map[string]any)["name"].([]any)[0].(map[string]any)["family"].(string)
		names[n] = true
	}
	if len(names) != 2*per {
		t.Fatalf("history holds %d distinct updates, want %d", len(names), 2*per)
	}
}

func testKeyringNames(t testing.TB) func(kind, value string) string {
	t.Helper()
	kr, err := storage.GenerateKeyring(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return kr.NameHash
}

// TestFHIRDisconnectMidUploadLeavesNothing: a client that goes away in the
// middle of a body leaves no object behind, for a Bundle and for NDJSON
// (whose lines are staged as they arrive).
func TestFHIRDisconnectMidUploadLeavesNothing(t *testing.T) {
	g := gatewaytest.Start(t, nil, gatewaytest.Config{})
	disconnectLeavesNothing(t, g)
}

func disconnectLeavesNothing(t *testing.T, g *gatewaytest.Gateway) {
	c := g.Client(t, "st-marys")
	// Three copies: more than one staged segment (8 MiB) before the cut.
	ndjson := bytes.Repeat(readTestFile(t, filepath.Join(fhirTestdata(t), "ndjson", "DocumentReference.000.ndjson")), 3)
	bundle := readTestFile(t, fhirGlob(t, "synthea")[0])
	for _, tc := range []struct {
		name, ctype string
		body        []byte
	}{
		{"ndjson", "application/fhir+ndjson", ndjson},
		{"bundle", "application/fhir+json", bundle},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := storeListing(t, g.Store)
			pr, pw := io.Pipe()
			ctx, cancel := context.WithCancel(context.Background())
			req, _ := http.NewRequestWithContext(ctx, http.MethodPost, g.URL+"/fhir", pr)
			req.Header.Set("Content-Type", tc.ctype)
			done := make(chan error, 1)
			go func() {
				resp, err := c.Do(req)
				if err == nil {
					resp.Body.Close()
					err = fmt.Errorf("the request completed with %d", resp.StatusCode)
				}
				done <- err
			}()
			// Send most of the body, wait for the server to take it in
			// (for NDJSON, until a segment is staged), then drop the
			// connection.
			part := tc.body[:len(tc.body)*9/10]
			if _, err := pw.Write(part); err != nil {
				t.Fatal(err)
			}
			if tc.name == "ndjson" {
				deadline := time.Now().Add(20 * time.Second)
				for slices.Equal(before, storeListing(t, g.Store)) {
					if time.Now().After(deadline) {
						t.Fatal("no segment was staged")
					}
					time.Sleep(20 * time.Millisecond)
				}
			} else {
				time.Sleep(300 * time.Millisecond)
			}
			cancel()
			pw.CloseWithError(context.Canceled)
			if err := <-done; err == nil {
				t.Fatal("the request did not fail")
			}
			deadline := time.Now().Add(10 * time.Second)
			for {
				after := storeListing(t, g.Store)
				if slices.Equal(before, after) {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("objects left after a disconnect: %v", diff(before, after))
				}
				time.Sleep(50 * time.Millisecond)
			}
		})
	}
}

// TestFHIRNoPlaintextAtRest: after the Synthea bundles are stored, no file
// of the filesystem backend holds a patient's name, identifier, phone
// number or address line in plain text.
func TestFHIRNoPlaintextAtRest(t *testing.T) {
	dir := t.TempDir()
	fs, err := storage.NewFilesystem(dir)
	if err != nil {
		t.Fatal(err)
	}
	kr, err := storage.GenerateKeyring(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	g := gatewaytest.Start(t, storage.NewEncrypted(fs, kr), gatewaytest.Config{Options: gateway.Options{Names: kr.NameHash}})
	f := newFHIRClient(t, g, "st-marys")
	var needles []string
	for _, path := range fhirGlob(t, "synthea") {
		postSynthea(t, f, path)
		needles = append(needles, identifyingStrings(t, readTestFile(t, path))...)
	}
	slices.Sort(needles)
	needles = slices.Compact(needles)
	if len(needles) < 50 {
		t.Fatalf("only %d identifying strings collected", len(needles))
	}
	files := 0
	err = filepath.WalkDir(dir, func(path string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		files++
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		for _, n := range needles {
			if bytes.Contains(b, []byte(n)) || strings.Contains(path, n) {
				return fmt.Errorf("%s holds %q in plain text", path, n)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if files < 5 {
		t.Fatalf("only %d files in the data folder", files)
	}
}

// identifyingStrings collects the names, identifier values, phone numbers
// and address lines of the Patients and Practitioners of a Bundle.
func identifyingStrings(t testing.TB, raw []byte) []string {
	t.Helper()
	var out []string
	add := func(s string) {
		if len(s) >= 4 { // shorter strings occur by chance in ciphertext
			out = append(out, s)
		}
	}
	for _, e := range bundleEntries(t, raw) {
		var r struct {
			ResourceType string `json:"resourceType"`
			Name         []struct {
				Family string   `json:"family"`
				Given  []string `json:"given"`
			} `json:"name"`
			Identifier []struct {
				Value string `json:"value"`
			} `json:"identifier"`
			Telecom []struct {
				Value string `json:"value"`
			} `json:"telecom"`
			Address []struct {
				Line []string `json:"line"`
			} `json:"address"`
		}
		var head struct{ ResourceType string }
		if err := json.Unmarshal(e.Resource, &head); err != nil {
			t.Fatal(err)
		}
		if head.ResourceType != "Patient" && head.ResourceType != "Practitioner" {
			continue
		}
		if err := json.Unmarshal(e.Resource, &r); err != nil {
			t.Fatal(err)
		}
		for _, n := range r.Name {
			add(n.Family)
			for _, g := range n.Given {
				add(g)
			}
		}
		for _, i := range r.Identifier {
			add(i.Value)
		}
		for _, tc := range r.Telecom {
			add(tc.Value)
		}
		for _, a := range r.Address {
			for _, l := range a.Line {
				add(l)
			}
		}
	}
	return out
}
