package gateway_test

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"encoding/json"
	"io"
	"io/fs"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/consilium/consilium/gateway/gatewaytest"
	"github.com/consilium/consilium/policy"
	"github.com/consilium/consilium/policy/builtin"
)

// bundleFrom packs the built-in bundle plus extra files (name → content)
// into a tar.gz laid out as `opa build` lays out bundles, without parsing
// anything, so broken bundles can be made too.
func bundleFrom(t *testing.T, extra map[string]string, drop ...string) []byte {
	t.Helper()
	files := map[string][]byte{}
	err := fs.WalkDir(builtin.FS(), ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		for _, x := range drop {
			if strings.HasSuffix(p, x) {
				return nil
			}
		}
		files[p], err = fs.ReadFile(builtin.FS(), p)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	for name, body := range extra {
		files[name] = []byte(body)
	}
	var buf bytes.Buffer
	gz := gzip.NewWriter(&buf)
	tw := tar.NewWriter(gz)
	for name, data := range files {
		if err := tw.WriteHeader(&tar.Header{Name: "/" + name, Mode: 0o644, Size: int64(len(data)), Typeflag: tar.TypeReg}); err != nil {
			t.Fatal(err)
		}
		tw.Write(data)
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	gz.Close()
	return buf.Bytes()
}

// suspend is a rule (with its test) that refuses everything to
// city-general, so a test sees which policy decides.
var suspend = map[string]string{
	"suspend.rego": "package consilium.authz\n\ndenials contains \"city-general is suspended\" if input.principal.id == \"city-general\"\n",
	"suspend_test.rego": "package consilium.authz_test\n\nimport data.consilium.authz\n\n" +
		"test_city_general_suspended if {\n\td := authz.decision with input as {\"time\": \"2026-01-01T00:00:00Z\", \"action\": \"whoami\", " +
		"\"principal\": {\"id\": \"city-general\", \"org\": \"city-general\", \"role\": \"hospital\", \"country\": \"GB\"}}\n\tnot d.allow\n}\n",
}

func do(t *testing.T, c *http.Client, method, url string, body []byte) (int, []byte) {
	t.Helper()
	req, err := http.NewRequest(method, url, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, data
}

func TestPolicyBundles(t *testing.T) {
	store := gatewaytest.NewStore(t)
	dir := t.TempDir()
	g1 := gatewaytest.Start(t, store, gatewaytest.Config{Dir: dir})
	g2 := gatewaytest.Start(t, store, gatewaytest.Config{Dir: dir})
	co := g1.Client(t, "co-lee")

	whoamiStatus := func(g *gatewaytest.Gateway) int {
		code, _ := do(t, g.Client(t, "city-general"), http.MethodGet, g.URL+"/whoami", nil)
		return code
	}
	activeOf := func() string {
		code, body := do(t, co, http.MethodGet, g1.URL+"/policies", nil)
		if code != http.StatusOK {
			t.Fatalf("list: %d %s", code, body)
		}
		var v policy.Versions
		if err := json.Unmarshal(body, &v); err != nil {
			t.Fatal(err)
		}
		return v.Active
	}
	if a := activeOf(); a != policy.BuiltinVersion {
		t.Fatalf("active = %q, want builtin", a)
	}
	if whoamiStatus(g2) != http.StatusOK {
		t.Fatal("city-general refused under the built-in policy")
	}

	t.Run("only compliance manages bundles", func(t *testing.T) {
		for _, id := range []string{"st-marys", "cm-ana", "dr-okafor"} {
			code, body := do(t, g1.Client(t, id), http.MethodGet, g1.URL+"/policies", nil)
			if code != http.StatusForbidden || !strings.Contains(string(body), "reasons") {
				t.Errorf("%s lists policies: %d %s", id, code, body)
			}
			code, _ = do(t, g1.Client(t, id), http.MethodPut, g1.URL+"/policies/sneaky", bundleFrom(t, nil))
			if code != http.StatusForbidden {
				t.Errorf("%s uploads a policy: %d", id, code)
			}
		}
	})

	t.Run("refused bundles leave the policy unchanged", func(t *testing.T) {
		tests := []struct {
			name    string
			archive []byte
			want    string
		}{
			{"syntax error", bundleFrom(t, map[string]string{"broken.rego": "package consilium.authz\n\nallow if {\n"}), "broken.rego"},
			{"failing test", bundleFrom(t, map[string]string{"fail_test.rego": "package consilium.authz_test\n\ntest_fails if false\n"}), "test_fails"},
			{"no tests", bundleFrom(t, nil, "_test.rego"), "test"},
			{"not a bundle", []byte("hello"), ""},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				code, body := do(t, co, http.MethodPut, g1.URL+"/policies/bad-"+strings.ReplaceAll(tt.name, " ", "-"), tt.archive)
				if code != http.StatusUnprocessableEntity || !strings.Contains(string(body), `"problems"`) || !strings.Contains(string(body), tt.want) {
					t.Fatalf("status %d, body %s", code, body)
				}
				if a := activeOf(); a != policy.BuiltinVersion {
					t.Fatalf("active = %q after a refused upload", a)
				}
			})
		}
	})

	t.Run("upload, dry run, activate on every instance, roll back", func(t *testing.T) {
		code, body := do(t, co, http.MethodPut, g1.URL+"/policies/suspend-1", bundleFrom(t, suspend))
		if code != http.StatusCreated {
			t.Fatalf("upload: %d %s", code, body)
		}
		if code, _ := do(t, co, http.MethodPut, g1.URL+"/policies/suspend-1", bundleFrom(t, suspend)); code != http.StatusConflict {
			t.Fatalf("second upload of the same version: %d, want 409", code)
		}
		whoamiStatus(g1) // a decision to replay
		code, body = do(t, co, http.MethodPost, g1.URL+"/policies/suspend-1/dry-run", nil)
		if code != http.StatusOK {
			t.Fatalf("dry run: %d %s", code, body)
		}
		var ch policy.Changes
		if err := json.Unmarshal(body, &ch); err != nil {
			t.Fatal(err)
		}
		found := false
		for _, c := range ch.Changed {
			if c.Input.Principal.ID == "city-general" && c.Active.Allow && !c.Candidate.Allow &&
				strings.Contains(strings.Join(c.Candidate.Reasons, " "), "suspended") {
				found = true
			}
		}
		if !found {
			t.Fatalf("dry run does not show city-general's whoami changing: %s", body)
		}
		if whoamiStatus(g1) != http.StatusOK {
			t.Fatal("a dry run changed the active policy")
		}

		code, body = do(t, co, http.MethodPost, g1.URL+"/policies/suspend-1/activate", nil)
		if code != http.StatusOK {
			t.Fatalf("activate: %d %s", code, body)
		}
		if whoamiStatus(g1) != http.StatusForbidden {
			t.Fatal("the activating instance still uses the old policy")
		}
		waitStatus(t, func() int { return whoamiStatus(g2) }, http.StatusForbidden, 10*time.Second)

		if code, body := do(t, co, http.MethodPost, g1.URL+"/policies/builtin/activate", nil); code != http.StatusOK {
			t.Fatalf("rollback: %d %s", code, body)
		}
		waitStatus(t, func() int { return whoamiStatus(g2) }, http.StatusOK, 10*time.Second)
		if code, _ := do(t, co, http.MethodPost, g1.URL+"/policies/nope/activate", nil); code != http.StatusNotFound {
			t.Fatalf("activating an unknown version: %d, want 404", code)
		}
	})
}

func waitStatus(t *testing.T, f func() int, want int, within time.Duration) {
	t.Helper()
	start := time.Now()
	for {
		got := f()
		if got == want {
			t.Logf("status %d after %v", want, time.Since(start).Round(time.Millisecond))
			return
		}
		if time.Since(start) > within {
			t.Fatalf("status %d after %v, want %d", got, within, want)
		}
		time.Sleep(200 * time.Millisecond)
	}
}
