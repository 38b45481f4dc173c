package fhir_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/consilium/consilium/fhir"
	"github.com/consilium/consilium/storage"
)

// testStore returns an encrypted filesystem store, its data folder and the
// keyring's name hasher.
func testStore(t testing.TB) (storage.Store, string, func(kind, value string) string) {
	t.Helper()
	dir := t.TempDir()
	fs, err := storage.NewFilesystem(dir)
	if err != nil {
		t.Fatal(err)
	}
	kr, err := storage.GenerateKeyring(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return storage.NewEncrypted(fs, kr), dir, kr.NameHash
}

func newStore(t testing.TB, s storage.Store, names func(kind, value string) string, opts ...func(*fhir.StoreOptions)) *fhir.Store {
	t.Helper()
	o := fhir.StoreOptions{Names: names}
	for _, f := range opts {
		f(&o)
	}
	fs, err := fhir.NewStore(s, o)
	if err != nil {
		t.Fatal(err)
	}
	return fs
}

// allow is an authorizer that allows everything and counts what it was
// asked.
type allow struct {
	mu   sync.Mutex
	seen []fhir.Access
}

func (a *allow) authorize(_ context.Context, acc fhir.Access) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.seen = append(a.seen, acc)
	return nil
}

func writeOpts(a *allow) fhir.WriteOptions {
	return fhir.WriteOptions{Authorize: a.authorize, Base: "https://gw.test/fhir"}
}

func readFile(t testing.TB, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// listing returns every object name in s.
func listing(t testing.TB, s storage.Store) []string {
	t.Helper()
	var out []string
	for info, err := range s.List(context.Background(), "") {
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, info.Name)
	}
	return out
}

func TestTransactionSyntheaReadBack(t *testing.T) {
	ctx := context.Background()
	s, _, names := testStore(t)
	fs := newStore(t, s, names)
	a := &allow{}
	for _, path := range fhirFiles(t, "synthea") {
		t.Run(filepath.Base(path), func(t *testing.T) {
			raw := readFile(t, path)
			res, err := fs.ProcessBundle(ctx, "st-marys", raw, writeOpts(a))
			if err != nil {
				t.Fatalf("transaction refused: %v", err)
			}
			var in struct {
				Entry []struct {
					FullURL  string          `json:"fullUrl"`
					Resource json.RawMessage `json:"resource"`
				} `json:"entry"`
			}
			if err := json.Unmarshal(raw, &in); err != nil {
				t.Fatal(err)
			}
			if len(res.Entries) != len(in.Entry) {
				t.Fatalf("%d results for %d entries", len(res.Entries), len(in.Entry))
			}
			ids := map[string]string{}
			for i, e := range res.Entries {
				if e.Status != 201 || e.VersionID != 1 {
					t.Fatalf("entry %d: status %d version %d err %v", i, e.Status, e.VersionID, e.Err)
				}
				ids[in.Entry[i].FullURL] = e.Type + "/" + e.ID
			}
			for i, e := range res.Entries {
				v, err := fs.Read(ctx, "st-marys", e.Type, e.ID)
				if err != nil {
					t.Fatal(err)
				}
				got, err := fs.Body(ctx, v)
				if err != nil {
					t.Fatal(err)
				}
				assertSameResource(t, in.Entry[i].Resource, got, ids)
			}
		})
	}
}

// assertSameResource compares a sent resource with what was read back,
// as parsed protos (github.com/google/fhir), after putting the ids the
// server assigned into the sent one and dropping the server's meta.
func assertSameResource(t testing.TB, sent, got []byte, ids map[string]string) {
	t.Helper()
	var want map[string]any
	if err := json.Unmarshal(sent, &want); err != nil {
		t.Fatal(err)
	}
	var gotTree map[string]any
	if err := json.Unmarshal(got, &gotTree); err != nil {
		t.Fatal(err)
	}
	rewrite(want, ids)
	want["id"] = gotTree["id"]
	meta, _ := gotTree["meta"].(map[string]any)
	if meta["versionId"] == nil || meta["lastUpdated"] == nil {
		t.Fatalf("read back without versionId/lastUpdated: %v", meta)
	}
	delete(meta, "versionId")
	delete(meta, "lastUpdated")
	if len(meta) == 0 {
		delete(gotTree, "meta")
	}
	if m, ok := want["meta"].(map[string]any); ok {
		delete(m, "versionId")
		delete(m, "lastUpdated")
		if len(m) == 0 {
			delete(want, "meta")
		}
	}
	wb, _ := json.Marshal(want)
	gb, _ := json.Marshal(gotTree)
	p, err := fhir.NewParser()
	if err != nil {
		t.Fatal(err)
	}
	eq, err := p.Equal(wb, gb)
	if err != nil {
		t.Fatal(err)
	}
	if !eq {
		t.Fatalf("read back differs:\nsent %s\n got %s", wb, gb)
	}
}

func rewrite(v any, ids map[string]string) {
	switch t := v.(type) {
	case map[string]any:
		for k, c := range t {
			if s, ok := c.(string); ok && k == "reference" {
				if n, ok := ids[s]; ok {
					t[k] = n
				}
				continue
			}
			rewrite(c, ids)
		}
	case []any:
		for _, e := range t {
			rewrite(e, ids)
		}
	}
}

func TestTransactionAllOrNothing(t *testing.T) {
	ctx := context.Background()
	s, _, names := testStore(t)
	fs := newStore(t, s, names)
	a := &allow{}
	raw := readFile(t, fhirFiles(t, "synthea")[0])
	// Break the last entry: nothing of the Bundle may be stored.
	var b map[string]any
	if err := json.Unmarshal(raw, &b); err != nil {
		t.Fatal(err)
	}
	entries := b["entry"].([]any)
	last := entries[len(entries)-1].(map[string]any)["resource"].(map[string]any)
	last["status"] = "not-a-status-code-with spaces"
	bad, _ := json.Marshal(b)
	before := listing(t, s)
	_, err := fs.ProcessBundle(ctx, "st-marys", bad, writeOpts(a))
	var fe *fhir.Error
	if !errors.As(err, &fe) || !errors.Is(err, fhir.ErrInvalid) {
		t.Fatalf("want ErrInvalid, got %v", err)
	}
	if fe.Entry != len(entries)-1 || !strings.HasPrefix(fe.Issues[0].Expression, "Bundle.entry[") {
		t.Fatalf("error names entry %d, issues %+v", fe.Entry, fe.Issues)
	}
	if after := listing(t, s); !equalStrings(before, after) {
		t.Fatalf("store changed: %v -> %v", before, after)
	}
}

func equalStrings(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func TestNDJSONLoad(t *testing.T) {
	ctx := context.Background()
	s, _, names := testStore(t)
	fs := newStore(t, s, names)
	a := &allow{}
	for _, path := range fhirFiles(t, "ndjson") {
		t.Run(filepath.Base(path), func(t *testing.T) {
			raw := readFile(t, path)
			res, err := fs.LoadNDJSON(ctx, "st-marys", bytes.NewReader(raw), writeOpts(a))
			if err != nil {
				t.Fatal(err)
			}
			lines := bytes.Split(bytes.TrimSpace(raw), []byte("\n"))
			if len(res.Entries) != len(lines) {
				t.Fatalf("%d results for %d lines", len(res.Entries), len(lines))
			}
			for i, e := range res.Entries {
				if e.Err != nil || e.Status != 201 {
					t.Fatalf("line %d: %d %v", i+1, e.Status, e.Err)
				}
				v, err := fs.Read(ctx, "st-marys", e.Type, e.ID)
				if err != nil {
					t.Fatal(err)
				}
				got, err := fs.Body(ctx, v)
				if err != nil {
					t.Fatal(err)
				}
				assertSameResource(t, lines[i], got, nil)
			}
		})
	}
}

// TestReloadFromCheckpointsAndSegments: a second Store (another gateway
// instance) on the same object store sees the first one's commits, from
// checkpoints and segments, with the same versions; the first sees the
// second's.
func TestReloadFromCheckpointsAndSegments(t *testing.T) {
	ctx := context.Background()
	s, _, names := testStore(t)
	small := func(o *fhir.StoreOptions) { o.CheckpointEvery = 3 }
	a := newStore(t, s, names, small)
	auth := &allow{}
	for i := range 10 {
		body := []byte(`{"resourceType":"Patient","id":"p1","gender":"` + []string{"male", "female"}[i%2] + `"}`)
		if _, err := a.Update(ctx, "st-marys", "Patient", "p1", body, "", writeOpts(auth)); err != nil {
			t.Fatal(err)
		}
	}
	var ckpts int
	for _, n := range listing(t, s) {
		if strings.Contains(n, "/ckpt/") {
			ckpts++
		}
	}
	if ckpts != 2 {
		t.Fatalf("%d checkpoints kept, want 2 (the latest and the one before)", ckpts)
	}
	b := newStore(t, s, names, small)
	v, err := b.Read(ctx, "st-marys", "Patient", "p1")
	if err != nil || v.VersionID != 10 {
		t.Fatalf("second instance reads version %d, %v", v.VersionID, err)
	}
	if _, err := b.Update(ctx, "st-marys", "Patient", "p1", []byte(`{"resourceType":"Patient","id":"p1"}`), `W/"10"`, writeOpts(auth)); err != nil {
		t.Fatal(err)
	}
	// The first instance's If-Match sees the second's version.
	if _, err := a.Update(ctx, "st-marys", "Patient", "p1", []byte(`{"resourceType":"Patient","id":"p1"}`), `W/"10"`, writeOpts(auth)); !errors.Is(err, fhir.ErrPreconditionFailed) {
		t.Fatalf("stale If-Match: %v", err)
	}
	hist, err := a.History(ctx, "st-marys", "Patient", "p1")
	if err != nil || len(hist) != 11 {
		t.Fatalf("history of %d, %v", len(hist), err)
	}
	for i, h := range hist {
		body, err := a.Body(ctx, h)
		if err != nil {
			t.Fatal(err)
		}
		if want := fmt.Sprintf(`"versionId":"%d"`, 11-i); !bytes.Contains(body, []byte(want)) {
			t.Fatalf("version %d body: %s", 11-i, body)
		}
	}
}

// TestConcurrentStoresLoseNoUpdate: two Stores on one object store, each
// with two writers, update one resource; every update is a version.
func TestConcurrentStoresLoseNoUpdate(t *testing.T) {
	ctx := context.Background()
	s, _, names := testStore(t)
	stores := []*fhir.Store{newStore(t, s, names), newStore(t, s, names)}
	auth := &allow{}
	const per = 8
	var wg sync.WaitGroup
	for i := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range per {
				body := []byte(fmt.Sprintf(`{"resourceType":"Observation","id":"o","status":"final","code":{"text":"w%d-%d"}}`, i, j))
				if _, err := stores[i%2].Update(ctx, "st-marys", "Observation", "o", body, "", writeOpts(auth)); err != nil {
					t.Error(err)
				}
			}
		}()
	}
	wg.Wait()
	for _, st := range stores {
		v, err := st.Read(ctx, "st-marys", "Observation", "o")
		if err != nil || v.VersionID != 4*per {
			t.Fatalf("version %d after %d updates: %v", v.VersionID, 4*per, err)
		}
	}
}

// TestSweepRemovesAbandonedStagedObjects: objects staged by a load that
// never committed (its process died) are invisible and swept once old.
func TestSweepRemovesAbandonedStagedObjects(t *testing.T) {
	ctx := context.Background()
	s, _, names := testStore(t)
	now := time.Now()
	clock := func(o *fhir.StoreOptions) { o.Now = func() time.Time { return now } }
	fs := newStore(t, s, names, clock)
	auth := &allow{}
	// A load that fails mid-stream cleans up after itself...
	pr, pw := io.Pipe()
	go func() {
		line := readFile(t, fhirFiles(t, "ndjson")[0])
		_, _ = pw.Write(bytes.Repeat(line, 2))
		pw.CloseWithError(errors.New("connection reset"))
	}()
	if _, err := fs.LoadNDJSON(ctx, "st-marys", pr, writeOpts(auth)); err == nil {
		t.Fatal("a broken stream was accepted")
	}
	if n := listing(t, s); len(n) != 0 {
		t.Fatalf("left behind: %v", n)
	}
	// ...and what a dead process would leave is swept, unless committed
	// or young.
	res, err := fs.LoadNDJSON(ctx, "st-marys", bytes.NewReader(readFile(t, fhirFiles(t, "ndjson")[0])), writeOpts(auth))
	if err != nil {
		t.Fatal(err)
	}
	var stage string
	for _, n := range listing(t, s) {
		if strings.Contains(n, "/stage/") {
			stage = n
		}
	}
	orphan := stage[:strings.LastIndexByte(stage, '/')+1] + fmt.Sprintf("%020d-deadbeefdeadbeef", now.Add(-48*time.Hour).UnixNano())
	young := stage[:strings.LastIndexByte(stage, '/')+1] + fmt.Sprintf("%020d-0123456789abcdef", now.UnixNano())
	for _, n := range []string{orphan, young} {
		if _, err := s.Put(ctx, n, bytes.NewReader([]byte("x")), storage.PutOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	n, err := fs.Sweep(ctx, "st-marys", 24*time.Hour)
	if err != nil || n != 1 {
		t.Fatalf("swept %d, %v", n, err)
	}
	left := listing(t, s)
	if slices.Contains(left, orphan) || !slices.Contains(left, young) || !slices.Contains(left, stage) {
		t.Fatalf("after sweep: %v", left)
	}
	if _, err := fs.Read(ctx, "st-marys", res.Entries[0].Type, res.Entries[0].ID); err != nil {
		t.Fatal(err)
	}
}

// slowPuts delays every write, so that commits overlap.
type slowPuts struct {
	storage.Store
	delay time.Duration
}

func (s slowPuts) Put(ctx context.Context, name string, r io.Reader, opts storage.PutOptions) (storage.Info, error) {
	time.Sleep(s.delay)
	return s.Store.Put(ctx, name, r, opts)
}

// TestGroupCommit: creates that arrive while a commit is being written
// share the next one, and each still gets its own resource and version.
func TestGroupCommit(t *testing.T) {
	ctx := context.Background()
	base, _, names := testStore(t)
	s := slowPuts{Store: base, delay: 30 * time.Millisecond}
	fs := newStore(t, s, names)
	auth := &allow{}
	const n = 24
	var wg sync.WaitGroup
	ids := make([]string, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			res, err := fs.Create(ctx, "st-marys", "Observation", []byte(fmt.Sprintf(`{"resourceType":"Observation","status":"final","code":{"text":"g%d"}}`, i)), "", writeOpts(auth))
			if err != nil || res.Status != 201 || res.VersionID != 1 {
				t.Errorf("create %d: %+v %v", i, res, err)
				return
			}
			ids[i] = res.ID
		}()
	}
	wg.Wait()
	segs := 0
	for _, name := range listing(t, base) {
		if strings.Contains(name, "/seg/") {
			segs++
		}
	}
	if segs >= n {
		t.Fatalf("%d commits for %d concurrent creates: nothing was grouped", segs, n)
	}
	other := newStore(t, base, names)
	for i, id := range ids {
		v, err := other.Read(ctx, "st-marys", "Observation", id)
		if err != nil {
			t.Fatal(err)
		}
		body, err := other.Body(ctx, v)
		if err != nil || !bytes.Contains(body, []byte(fmt.Sprintf(`"text":"g%d"`, i))) {
			t.Fatalf("create %d reads back %s (%v)", i, body, err)
		}
	}
	t.Logf("%d creates in %d commits", n, segs)
}
