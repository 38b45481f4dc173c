package gateway_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"aead.dev/minisign"
	"github.com/google/fhir/go/fhirversion"
	"github.com/google/fhir/go/jsonformat"

	"github.com/consilium/consilium/audit"
	"github.com/consilium/consilium/gateway"
	"github.com/consilium/consilium/gateway/gatewaytest"
	"github.com/consilium/consilium/internal/devenv"
	"github.com/consilium/consilium/internal/miniotest"
	"github.com/consilium/consilium/storage"
)

func call(t *testing.T, c *http.Client, url string) (*http.Response, []byte) {
	t.Helper()
	resp, err := c.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, body
}

func readEntries(t *testing.T, body []byte) []audit.Entry {
	t.Helper()
	var out []audit.Entry
	sc := bufio.NewScanner(bytes.NewReader(body))
	for sc.Scan() {
		var e audit.Entry
		if err := json.Unmarshal(sc.Bytes(), &e); err != nil {
			t.Fatalf("NDJSON line %q: %v", sc.Text(), err)
		}
		out = append(out, e)
	}
	return out
}

func byRequest(es []audit.Entry) map[string][]audit.Entry {
	m := map[string][]audit.Entry{}
	for _, e := range es {
		m[e.RequestID] = append(m[e.RequestID], e)
	}
	return m
}

func TestAuditTrailOverHTTP(t *testing.T) {
	g := gatewaytest.Start(t, nil, gatewaytest.Config{})
	hospital, specialist, officer := g.Client(t, "st-marys"), g.Client(t, "dr-okafor"), g.Client(t, "co-lee")

	who, _ := call(t, hospital, g.URL+"/whoami")
	anon, _ := call(t, g.AnonymousClient(t), g.URL+"/whoami")
	denied, _ := call(t, specialist, g.URL+"/audit")
	call(t, hospital, g.URL+"/healthz")
	call(t, hospital, g.URL+"/metrics")
	if who.StatusCode != 200 || anon.StatusCode != 401 || denied.StatusCode != 403 {
		t.Fatalf("statuses %d %d %d", who.StatusCode, anon.StatusCode, denied.StatusCode)
	}

	resp, body := call(t, officer, g.URL+"/audit")
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "application/x-ndjson" {
		t.Fatalf("GET /audit: %d %s %s", resp.StatusCode, resp.Header.Get("Content-Type"), body)
	}
	entries := readEntries(t, body)
	if len(entries) != 3 {
		t.Fatalf("%d entries, want 3 (whoami, refused anonymous, refused specialist; no probes, no metrics): %+v", len(entries), entries)
	}
	got := byRequest(entries)
	if e := got[who.Header.Get("X-Request-Id")]; len(e) != 1 || e[0].Actor.ID != "st-marys" || e[0].Actor.Role != "hospital" ||
		e[0].Actor.Country != "GB" || e[0].Action != "GET /whoami" || e[0].Outcome != 200 || e[0].Method != "GET" {
		t.Errorf("whoami entry: %+v", e)
	}
	if e := got[anon.Header.Get("X-Request-Id")]; len(e) != 1 || e[0].Actor != (audit.Actor{}) || e[0].Outcome != 401 {
		t.Errorf("anonymous entry: %+v", e)
	}
	if e := got[denied.Header.Get("X-Request-Id")]; len(e) != 1 || e[0].Actor.ID != "dr-okafor" || e[0].Action != "audit.search" ||
		e[0].Outcome != 403 || e[0].Decision == nil || e[0].Decision.Allow {
		t.Errorf("refused reader entry: %+v", e)
	}
	for i, e := range entries {
		if e.Seq != uint64(i+1) || e.Hash == "" || e.Source != g.Audit.Source() {
			t.Errorf("entry %d: seq %d hash %q source %q", i, e.Seq, e.Hash, e.Source)
		}
	}

	// Filters: the officer's own read is now in the trail too.
	_, body = call(t, officer, g.URL+"/audit?actor=co-lee&action=audit.search")
	if es := readEntries(t, body); len(es) != 1 || es[0].Outcome != 200 || !es[0].Decision.Allow {
		t.Errorf("filtered by actor and action: %+v", es)
	}
	_, body = call(t, officer, g.URL+"/audit?from=2000-01-01T00:00:00Z&to=2001-01-01T00:00:00Z")
	if es := readEntries(t, body); len(es) != 0 {
		t.Errorf("time filter let through %d entries", len(es))
	}
	if resp, _ := call(t, officer, g.URL+"/audit?from=yesterday"); resp.StatusCode != 400 {
		t.Errorf("bad time: %d", resp.StatusCode)
	}
	if resp, _ := call(t, officer, g.URL+"/audit?case=John+Smith"); resp.StatusCode != 400 {
		t.Errorf("free text as case id: %d", resp.StatusCode)
	}

	resp, body = call(t, officer, g.URL+"/audit/verify")
	var rep audit.Report
	if err := json.Unmarshal(body, &rep); err != nil || resp.StatusCode != 200 || !rep.OK || rep.Entries < 6 {
		t.Fatalf("verify: %d %s %v", resp.StatusCode, body, err)
	}
	if resp, _ := call(t, hospital, g.URL+"/audit/verify"); resp.StatusCode != 403 {
		t.Errorf("verify by a hospital: %d", resp.StatusCode)
	}

	if resp, _ := call(t, officer, g.URL+"/audit/export?format=xml"); resp.StatusCode != 400 {
		t.Errorf("export format xml: %d", resp.StatusCode)
	}
	resp, body = call(t, officer, g.URL+"/audit/export?format=fhir")
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "application/fhir+json" {
		t.Fatalf("export: %d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	checkFHIRBundle(t, body, 11) // every request above but the probes and metrics
}

// checkFHIRBundle validates the export with the FHIR R4 parser and
// validator of github.com/google/fhir and checks the BALP shapes.
func checkFHIRBundle(t *testing.T, body []byte, wantEntries int) {
	t.Helper()
	um, err := jsonformat.NewUnmarshaller("UTC", fhirversion.R4)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := um.Unmarshal(body); err != nil {
		t.Fatalf("the export is not a valid FHIR R4 Bundle: %v\n%s", err, body)
	}
	var b struct {
		ResourceType, Type string
		Entry              []struct {
			Resource map[string]any
		}
	}
	if err := json.Unmarshal(body, &b); err != nil {
		t.Fatal(err)
	}
	if b.ResourceType != "Bundle" || b.Type != "searchset" || len(b.Entry) != wantEntries {
		t.Fatalf("bundle %s/%s with %d entries, want %d", b.ResourceType, b.Type, len(b.Entry), wantEntries)
	}
	for _, e := range b.Entry {
		ev := e.Resource
		if ev["resourceType"] != "AuditEvent" || ev["type"].(map[string]any)["code"] != "rest" {
			t.Errorf("not a BALP rest AuditEvent: %v", ev)
		}
		agents := ev["agent"].([]any)
		if len(agents) != 3 || agents[0].(map[string]any)["requestor"] != true {
			t.Errorf("agents: %v", agents)
		}
		if obs := ev["source"].(map[string]any)["observer"]; obs == nil {
			t.Errorf("no source observer")
		}
	}
}

// TestAuditFailClosed checks the documented pattern for operations that
// must be recorded before they are acknowledged.
func TestAuditFailClosed(t *testing.T) {
	ctx := context.Background()
	base := gatewaytest.NewStore(t) // any store; the audit log gets its own below
	g := gatewaytest.Start(t, base, gatewaytest.Config{})
	fs, err := storage.NewFilesystem(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	store := &failingStore{Store: fs}
	log := openAudit(t, store, g)
	opts := g.Options
	opts.Store, opts.Audit, opts.Registry = base, log, nil
	srv, err := gateway.New(gateway.Config{}, opts)
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewUnstartedServer(srv.TestOnlyCommitHandler())
	ts.TLS = g.TLS.Config()
	ts.StartTLS()
	t.Cleanup(ts.Close)
	c := g.Client(t, "st-marys")

	// The entry is committed before the answer, and not recorded twice.
	resp, body := call(t, c, ts.URL+"/x")
	if resp.StatusCode != 201 {
		t.Fatalf("commit: %d %s", resp.StatusCode, body)
	}
	id := resp.Header.Get("X-Request-Id")
	// After a committed entry the operation fails: a second entry says so.
	resp, _ = call(t, c, ts.URL+"/x?fail=1")
	if resp.StatusCode != 500 {
		t.Fatalf("failing operation: %d", resp.StatusCode)
	}
	failedID := resp.Header.Get("X-Request-Id")

	// The store refuses writes: the operation is refused with 503 and
	// never answered 201.
	store.fail.Store(true)
	resp, body = call(t, c, ts.URL+"/x")
	if resp.StatusCode != 503 || strings.Contains(string(body), "created") {
		t.Fatalf("with the audit store down: %d %s", resp.StatusCode, body)
	}
	store.fail.Store(false)

	var es []audit.Entry
	for e, err := range log.Read(ctx, audit.Filter{}) {
		if err != nil {
			t.Fatal(err)
		}
		es = append(es, e)
	}
	got := byRequest(es)
	if e := got[id]; len(e) != 1 || e[0].Outcome != 201 || e[0].Action != "test.create" || e[0].Target.Case != "c-42" || e[0].Decision.PolicyVersion != "v1" {
		t.Errorf("committed request: %+v", e)
	}
	if e := got[failedID]; len(e) != 2 || e[0].Outcome != 201 || e[1].Outcome != 500 {
		t.Errorf("request that failed after its commit: %+v", e)
	}
	if len(es) != 3 {
		t.Errorf("%d entries, want 3 (nothing for the refused request: the store was down)", len(es))
	}
	rep, err := log.Verify(ctx)
	if err != nil || !rep.OK {
		t.Fatalf("verify: %+v %v", rep, err)
	}

	// A closed log refuses too.
	log.Close()
	if resp, _ := call(t, c, ts.URL+"/x"); resp.StatusCode != 503 {
		t.Errorf("with the audit log closed: %d", resp.StatusCode)
	}
}

// failingStore fails every Put while fail is set, as a store that is
// down would.
type failingStore struct {
	storage.Store
	fail atomic.Bool
}

func (f *failingStore) Put(ctx context.Context, name string, r io.Reader, opts storage.PutOptions) (storage.Info, error) {
	if f.fail.Load() {
		return storage.Info{}, errors.New("store unavailable")
	}
	return f.Store.Put(ctx, name, r, opts)
}

func openAudit(t *testing.T, store storage.Store, g *gatewaytest.Gateway) *audit.Log {
	t.Helper()
	l, err := audit.Open(context.Background(), audit.Config{Source: "gw-" + strings.ToLower(t.Name()[:4])},
		audit.Options{Store: store, Signer: signingKey(t, g.Layout)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return l
}

// TestTwoGatewaysOneMinIO runs two gateway instances whose audit logs
// share one MinIO bucket, serving requests at the same time: the trail is
// one chain with every request in it once.
func TestTwoGatewaysOneMinIO(t *testing.T) {
	srv := miniotest.Start(t)
	ctx := context.Background()
	dir := t.TempDir()
	var gws []*gatewaytest.Gateway
	for _, name := range []string{"gw-a", "gw-b"} {
		m, err := storage.NewMinIO(ctx, storage.MinIOConfig{
			Endpoint: srv.Endpoint, AccessKey: srv.AccessKey, SecretKey: srv.SecretKey,
			Bucket: srv.Bucket, UseTLS: srv.UseTLS, ObjectLock: true,
		})
		if err != nil {
			t.Fatal(err)
		}
		layout, _, err := devenv.Ensure(dir, nil) // both instances share CA and keys
		if err != nil {
			t.Fatal(err)
		}
		l, err := audit.Open(ctx, audit.Config{Source: name, RetentionMode: audit.RetentionGovernance, RetentionDays: 1},
			audit.Options{Store: m, Signer: signingKey(t, layout)})
		if err != nil {
			t.Fatal(err)
		}
		g := gatewaytest.Start(t, nil, gatewaytest.Config{Dir: dir, Options: gateway.Options{Audit: l}})
		t.Cleanup(func() { l.Close() })
		gws = append(gws, g)
	}
	const clients, each = 6, 25
	var mu sync.Mutex
	ids := map[string]bool{}
	var wg sync.WaitGroup
	for _, g := range gws {
		for range clients {
			c := g.Client(t, "city-general")
			wg.Go(func() {
				for range each {
					resp, err := c.Get(g.URL + "/whoami")
					if err != nil {
						t.Error(err)
						return
					}
					io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					mu.Lock()
					ids[resp.Header.Get("X-Request-Id")] = true
					mu.Unlock()
				}
			})
		}
	}
	wg.Wait()
	for _, g := range gws {
		g.Stop()
	}
	total := 2 * clients * each
	if len(ids) != total {
		t.Fatalf("%d distinct request ids, want %d", len(ids), total)
	}
	a := gws[0].Audit
	rep, err := a.Verify(ctx)
	if err != nil || !rep.OK {
		t.Fatalf("verify: %+v %v", rep, err)
	}
	n, sources := 0, map[string]int{}
	for e, err := range a.Read(ctx, audit.Filter{Action: "GET /whoami"}) {
		if err != nil {
			t.Fatal(err)
		}
		if !ids[e.RequestID] {
			t.Errorf("entry for unknown or repeated request %s", e.RequestID)
		}
		delete(ids, e.RequestID)
		sources[e.Source]++
		n++
	}
	if n != total || len(ids) != 0 {
		t.Errorf("%d whoami entries, want %d; %d requests missing", n, total, len(ids))
	}
	if sources["gw-a"] != clients*each || sources["gw-b"] != clients*each {
		t.Errorf("entries by instance: %v", sources)
	}
	t.Logf("one chain of %d entries in %d segments; %v", rep.Entries, rep.Segments, sources)
}

func signingKey(t *testing.T, l devenv.Layout) minisign.PrivateKey {
	t.Helper()
	data, err := os.ReadFile(l.SigningKey())
	if err != nil {
		t.Fatal(err)
	}
	var key minisign.PrivateKey
	if err := key.UnmarshalText(data); err != nil {
		t.Fatal(err)
	}
	return key
}

// TestFHIRWritesAuditedBeforeVisible checks that a FHIR write is in the
// audit trail before it is acknowledged, with its patient's pseudonym,
// and that with the trail unavailable the write is refused and nothing
// of it becomes visible.
func TestFHIRWritesAuditedBeforeVisible(t *testing.T) {
	ctx := context.Background()
	first := gatewaytest.Start(t, nil, gatewaytest.Config{})
	fs, err := storage.NewFilesystem(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	store := &failingStore{Store: fs}
	log := openAudit(t, store, first)
	g := gatewaytest.Start(t, nil, gatewaytest.Config{Dir: first.Layout.Dir, Options: gateway.Options{Audit: log}})
	f := newFHIRClient(t, g, "st-marys")

	patient := func(id string) []byte {
		return []byte(`{"resourceType":"Patient","id":"` + id + `","gender":"female"}`)
	}
	resp := f.do(http.MethodPut, "/Patient/audited-1", "application/fhir+json", patient("audited-1")).want(t, http.StatusCreated)
	id := resp.header.Get("X-Request-Id")

	store.fail.Store(true)
	resp = f.do(http.MethodPut, "/Patient/audited-2", "application/fhir+json", patient("audited-2"))
	if resp.status != http.StatusServiceUnavailable {
		t.Fatalf("write with the audit trail down: %d %s", resp.status, resp.body)
	}
	store.fail.Store(false)
	f.get("/Patient/audited-2").want(t, http.StatusNotFound)
	f.get("/Patient/audited-1").want(t, http.StatusOK)

	var es []audit.Entry
	for e, err := range log.Read(ctx, audit.Filter{}) {
		if err != nil {
			t.Fatal(err)
		}
		es = append(es, e)
	}
	got := byRequest(es)[id]
	if len(got) == 0 {
		t.Fatalf("no audit entry for request %s", id)
	}
	e := got[0]
	if e.Action != "fhir.update" || e.Target.Patient == "" || strings.Contains(e.Target.Patient, "audited") || e.Decision == nil || !e.Decision.Allow {
		t.Errorf("entry: %+v", e)
	}
}
