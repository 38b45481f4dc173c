package policy

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/open-policy-agent/opa/v1/bundle"

	"github.com/consilium/consilium/policy/builtin"
	"github.com/consilium/consilium/storage"
)

// builtinFiles returns a copy of the default bundle's files, to derive
// candidate bundles from.
func builtinFiles(t testing.TB) map[string]string {
	t.Helper()
	files, problems := readFS(builtin.FS(), Limits{})
	if len(problems) > 0 {
		t.Fatal(problems)
	}
	out := map[string]string{}
	for k, v := range files {
		out[k] = string(v)
	}
	return out
}

// archive writes files as a bundle archive the way `opa build` lays it out
// (gzip, tar, names with a leading slash).
func archive(t testing.TB, files map[string]string) []byte {
	t.Helper()
	var buf bytes.Buffer
	gz := gzip.NewWriter(&buf)
	tw := tar.NewWriter(gz)
	for _, name := range slices.Sorted(maps.Keys(files)) {
		body := files[name]
		if err := tw.WriteHeader(&tar.Header{Name: "/" + name, Mode: 0o644, Size: int64(len(body)), Typeflag: tar.TypeReg}); err != nil {
			t.Fatal(err)
		}
		if _, err := tw.Write([]byte(body)); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	if err := gz.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// withoutUS is the builtin bundle with the UK-US data bridge removed from
// the cross-border table.
func withoutUS(t testing.TB) map[string]string {
	t.Helper()
	files := builtinFiles(t)
	data := files["consilium/data.json"]
	cut := strings.Replace(data, `"US": "uk-us-data-bridge"`, `"XX": "uk-us-data-bridge"`, 1)
	if cut == data {
		t.Fatal("the UK-US entry was not found in data.json")
	}
	files["consilium/data.json"] = cut
	// The bundle's own tests expect the bridge; a candidate comes with tests
	// of its new behaviour.
	delete(files, "authz_test.rego")
	delete(files, "sharing_test.rego")
	files["no_us_test.rego"] = `package consilium.authz_test

test_no_transfers_to_the_us if {
	denies_with(share(specialist_us, [consent]), ` + "`" + `no transfer basis from "GB" to "US" in the cross-border table` + "`" + `)
	allows(share(specialist_es, [consent]))
}
`
	return files
}

var packetUS = Input{Principal: specialistU, Action: ActionPacketRead, Case: testCase(CaseReleased)}

func decideUS(t testing.TB, e *Engine) Decision {
	t.Helper()
	in := packetUS
	in.Consents = []Consent{fixtureConsent(t, "permit-treat")}
	d, err := e.Decide(context.Background(), in)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func TestUploadActivateRollback(t *testing.T) {
	ctx := context.Background()
	store := newMemStore()
	e := newTestEngine(t, WithStore(store))
	if e.Version() != BuiltinVersion {
		t.Fatalf("version %q before any activation", e.Version())
	}
	info, err := e.Upload(ctx, "2025-06-no-us", bytes.NewReader(archive(t, withoutUS(t))))
	if err != nil {
		t.Fatal(err)
	}
	if info.Version != "2025-06-no-us" || len(info.SHA256) != 64 || info.Active {
		t.Errorf("upload info %+v", info)
	}
	if !decideUS(t, e).Allow {
		t.Fatal("uploading activated the bundle")
	}
	act, err := e.Activate(ctx, "2025-06-no-us")
	if err != nil {
		t.Fatal(err)
	}
	if act.Previous != BuiltinVersion || act.Version != "2025-06-no-us" {
		t.Errorf("activation %+v", act)
	}
	d := decideUS(t, e)
	if d.Allow || d.PolicyVersion != "2025-06-no-us" {
		t.Fatalf("after activation: allow %v version %q", d.Allow, d.PolicyVersion)
	}
	list, err := e.List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if list.Active != "2025-06-no-us" || len(list.Versions) != 2 || list.Versions[0].Version != BuiltinVersion || !list.Versions[1].Active || list.Versions[1].SHA256 != info.SHA256 {
		t.Errorf("list %+v", list)
	}
	// Rollback.
	if _, err := e.Activate(ctx, BuiltinVersion); err != nil {
		t.Fatal(err)
	}
	if d := decideUS(t, e); !d.Allow || d.PolicyVersion != BuiltinVersion {
		t.Errorf("after rollback: allow %v version %q", d.Allow, d.PolicyVersion)
	}
	// A new engine on the same store starts with the active version.
	e2 := newTestEngine(t, WithStore(store))
	if e2.Version() != BuiltinVersion {
		t.Errorf("second engine runs %q", e2.Version())
	}
}

// TestUploadOPABuildFormat uploads an archive written by OPA's own bundle
// writer, which `opa build` uses: all data merged into /data.json.
func TestUploadOPABuildFormat(t *testing.T) {
	ctx := context.Background()
	files, problems := readFS(builtin.FS(), Limits{})
	if len(problems) > 0 {
		t.Fatal(problems)
	}
	b, problems := files.parse(Limits{})
	if len(problems) > 0 {
		t.Fatal(problems)
	}
	var buf bytes.Buffer
	if err := bundle.NewWriter(&buf).Write(*b); err != nil {
		t.Fatal(err)
	}
	e := newTestEngine(t, WithStore(newMemStore()))
	if _, err := e.Upload(ctx, "opa-build", &buf); err != nil {
		t.Fatal(err)
	}
	if _, err := e.Activate(ctx, "opa-build"); err != nil {
		t.Fatal(err)
	}
	if d := decideUS(t, e); !d.Allow || d.PolicyVersion != "opa-build" {
		t.Errorf("allow %v version %q reasons %q", d.Allow, d.PolicyVersion, d.Reasons)
	}
}

func TestUploadRefusesBadBundles(t *testing.T) {
	broken := func(edit func(map[string]string)) []byte {
		files := builtinFiles(t)
		edit(files)
		return archive(t, files)
	}
	tests := []struct {
		name string
		raw  []byte
		want []string // every one must appear among the problems
	}{
		{"syntax errors in two files", broken(func(f map[string]string) {
			f["authz.rego"] += "\nallow if {\n"
			f["sharing.rego"] += "\nnotes contains x if x := \n"
		}), []string{"authz.rego:", "sharing.rego:", "rego_parse_error"}},
		{"failing test", broken(func(f map[string]string) {
			f["authz.rego"] = strings.Replace(f["authz.rego"], `action in {"case.list", "case.read"}`, `action in {"case.list"}`, 1)
		}), []string{"test data.consilium.authz_test.test_manager_workflow_allowed failed"}},
		{"no tests", broken(func(f map[string]string) {
			for k := range f {
				if strings.HasSuffix(k, "_test.rego") {
					delete(f, k)
				}
			}
		}), []string{"the bundle has no tests"}},
		{"missing entrypoint", broken(func(f map[string]string) {
			f["authz.rego"] = strings.Replace(f["authz.rego"], "decision := {", "verdict := {", 1)
		}), []string{"does not define data.consilium.authz.decision"}},
		{"compile error", broken(func(f map[string]string) {
			f["extra.rego"] = "package consilium.extra\n\nx := data.consilium.authz.allow + undefined_var\n"
		}), []string{"rego_unsafe_var_error"}},
		{"network access", broken(func(f map[string]string) {
			f["extra.rego"] = "package consilium.extra\n\nx := http.send({\"method\": \"GET\", \"url\": \"http://127.0.0.1:1\"})\n"
		}), []string{"undefined function http.send"}},
		{"environment access", broken(func(f map[string]string) {
			f["extra.rego"] = "package consilium.extra\n\nx := opa.runtime().env\n"
		}), []string{"undefined function opa.runtime"}},
		{"malformed decision", broken(func(f map[string]string) {
			f["authz.rego"] = strings.Replace(f["authz.rego"], `"allow": allow,`, `"allow": "yes",`, 1)
			f["authz_test.rego"] = "package consilium.authz_test\n\ntest_nothing if true\n"
			f["sharing_test.rego"] = "package consilium.sharing_test\n\ntest_nothing if true\n"
		}), []string{"allow is not a boolean"}},
		{"not gzip", []byte("package consilium.authz\n"), []string{"not a gzip-compressed tar archive"}},
		{"path traversal", broken(func(f map[string]string) { f["../../etc/evil.rego"] = "package evil\n" }), []string{"unsafe path"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := context.Background()
			store := newMemStore()
			e := newTestEngine(t, WithStore(store))
			_, err := e.Upload(ctx, "candidate", bytes.NewReader(tt.raw))
			var be *BundleError
			if !errors.As(err, &be) || !errors.Is(err, ErrInvalidBundle) {
				t.Fatalf("err = %v, want a BundleError", err)
			}
			all := err.Error()
			for _, w := range tt.want {
				if !strings.Contains(all, w) {
					t.Errorf("problems lack %q:\n%s", w, all)
				}
			}
			if store.count(bundlePrefix) != 0 {
				t.Error("a refused bundle was stored")
			}
			if _, err := e.Activate(ctx, "candidate"); !errors.Is(err, ErrUnknownVersion) {
				t.Errorf("activate refused bundle: %v", err)
			}
			if e.Version() != BuiltinVersion {
				t.Errorf("active version is %q", e.Version())
			}
		})
	}
}

func TestUploadVersionRules(t *testing.T) {
	ctx := context.Background()
	e := newTestEngine(t, WithStore(newMemStore()))
	good := archive(t, builtinFiles(t))
	for _, v := range []string{"", "builtin", "V1", "../x", "a/b", "-x", ".x", "a..b", strings.Repeat("a", 64), "ünï"} {
		if _, err := e.Upload(ctx, v, bytes.NewReader(good)); !errors.Is(err, ErrInvalidVersion) {
			t.Errorf("Upload(%q) = %v, want ErrInvalidVersion", v, err)
		}
	}
	if _, err := e.Upload(ctx, "v1.0.0", bytes.NewReader(good)); err != nil {
		t.Fatal(err)
	}
	if _, err := e.Upload(ctx, "v1.0.0", bytes.NewReader(good)); !errors.Is(err, ErrVersionExists) {
		t.Errorf("second upload: %v, want ErrVersionExists", err)
	}
	if _, err := e.Activate(ctx, "v9"); !errors.Is(err, ErrUnknownVersion) {
		t.Errorf("activate unknown: %v", err)
	}
	noStore := newTestEngine(t)
	if _, err := noStore.Upload(ctx, "v1", bytes.NewReader(good)); !errors.Is(err, ErrNoStore) {
		t.Errorf("upload without store: %v", err)
	}
	if _, err := noStore.List(ctx); !errors.Is(err, ErrNoStore) {
		t.Errorf("list without store: %v", err)
	}
}

// TestActivateConflict: when another writer changes the active pointer
// between read and write, the compare-and-swap refuses.
func TestActivateConflict(t *testing.T) {
	ctx := context.Background()
	store := newMemStore()
	a := newTestEngine(t, WithStore(store))
	b := newTestEngine(t, WithStore(store))
	if _, err := a.Upload(ctx, "no-us", bytes.NewReader(archive(t, withoutUS(t)))); err != nil {
		t.Fatal(err)
	}
	for _, first := range []bool{true, false} { // IfAbsent, then IfMatch
		var once atomic.Bool
		store.beforePut = func(name string) {
			if name == activeName && once.CompareAndSwap(false, true) {
				if _, err := b.Activate(ctx, "no-us"); err != nil {
					t.Errorf("concurrent activation: %v", err)
				}
			}
		}
		_, err := a.Activate(ctx, BuiltinVersion)
		if !errors.Is(err, ErrConflict) {
			t.Errorf("first=%v: err = %v, want ErrConflict", first, err)
		}
		store.beforePut = nil
		if a.Version() != BuiltinVersion {
			t.Errorf("the losing activation switched the engine to %q", a.Version())
		}
	}
}

// TestEnginesFollowActivation: two engines on one store; an activation on
// one reaches the other within the poll interval, well under 10 s.
func TestEnginesFollowActivation(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	store := newMemStore()
	a := newTestEngine(t, WithStore(store))
	b := newTestEngine(t, WithStore(store), WithPollInterval(100*time.Millisecond))
	done := make(chan error, 1)
	go func() { done <- b.Run(ctx) }()
	if _, err := a.Upload(ctx, "no-us", bytes.NewReader(archive(t, withoutUS(t)))); err != nil {
		t.Fatal(err)
	}
	for _, v := range []string{"no-us", BuiltinVersion, "no-us"} {
		start := time.Now()
		if _, err := a.Activate(ctx, v); err != nil {
			t.Fatal(err)
		}
		for b.Version() != v {
			if time.Since(start) > 10*time.Second {
				t.Fatalf("engine b still runs %q 10 s after %q was activated", b.Version(), v)
			}
			time.Sleep(20 * time.Millisecond)
		}
		t.Logf("engine b followed %q after %v", v, time.Since(start).Round(time.Millisecond))
		if d := decideUS(t, b); d.PolicyVersion != v || d.Allow != (v == BuiltinVersion) {
			t.Errorf("engine b decided allow=%v with %q", d.Allow, d.PolicyVersion)
		}
	}
	cancel()
	if err := <-done; err != nil {
		t.Errorf("Run: %v", err)
	}
}

// TestSyncKeepsVersionOnBadPointer: a corrupt active pointer does not stop
// a running engine; it keeps its version and reports the error.
func TestSyncKeepsVersionOnBadPointer(t *testing.T) {
	ctx := context.Background()
	store := newMemStore()
	e := newTestEngine(t, WithStore(store))
	if _, err := store.Put(ctx, activeName, strings.NewReader(`{"version": "../../etc"}`), storage.PutOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := e.Sync(ctx); err == nil {
		t.Error("Sync accepted a bad pointer")
	}
	if e.Version() != BuiltinVersion {
		t.Errorf("version %q", e.Version())
	}
	if _, err := New(ctx, WithStore(store)); err == nil {
		t.Error("New started with a bad active pointer")
	}
	if _, err := store.Put(ctx, activeName, strings.NewReader(`{"version": "gone"}`), storage.PutOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := e.Sync(ctx); !errors.Is(err, ErrUnknownVersion) {
		t.Errorf("Sync to a missing version: %v", err)
	}
}

// TestDecideDuringActivation: decisions keep flowing, race-free, while the
// active version switches back and forth; each decision names the version
// that made it and is consistent with it.
func TestDecideDuringActivation(t *testing.T) {
	ctx := context.Background()
	e := newTestEngine(t, WithStore(newMemStore()))
	if _, err := e.Upload(ctx, "no-us", bytes.NewReader(archive(t, withoutUS(t)))); err != nil {
		t.Fatal(err)
	}
	in := packetUS
	in.Consents = []Consent{fixtureConsent(t, "permit-treat")}
	stop := make(chan struct{})
	errs := make(chan error, 4)
	for range 4 {
		go func() {
			for {
				select {
				case <-stop:
					errs <- nil
					return
				default:
				}
				d, err := e.Decide(ctx, in)
				if err != nil || d.Allow != (d.PolicyVersion == BuiltinVersion) {
					errs <- fmt.Errorf("decision %v by %q (%v)", d.Allow, d.PolicyVersion, err)
					return
				}
			}
		}()
	}
	for i := range 6 {
		v := []string{"no-us", BuiltinVersion}[i%2]
		if _, err := e.Activate(ctx, v); err != nil {
			t.Fatal(err)
		}
	}
	close(stop)
	for range 4 {
		if err := <-errs; err != nil {
			t.Error(err)
		}
	}
}
