package gateway_test

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/consilium/consilium/gateway/gatewaytest"
	"github.com/consilium/consilium/internal/testenv"
)

// TestFHIRInteropFHIRKitClient drives the FHIR API with fhir-kit-client
// (npm, pinned in interop/fhir/package-lock.json) over mutual TLS: create,
// read, update, vread, search, transaction, delete and an error. The
// script is interop/fhir/interop.mjs; `npm ci` in that folder (done by
// scripts/deps.sh) installs the client.
func TestFHIRInteropFHIRKitClient(t *testing.T) {
	node := testenv.LookPath(t, "node", "apt-get install nodejs npm")
	dir := filepath.Join(repoRoot(t), "interop", "fhir")
	if _, err := os.Stat(filepath.Join(dir, "node_modules", "fhir-kit-client")); err != nil {
		testenv.Missing(t, "interop/fhir/node_modules", "cd interop/fhir && npm ci (or scripts/deps.sh)")
	}
	g := gatewaytest.Start(t, nil, gatewaytest.Config{})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, node, "interop.mjs")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(),
		"CONSILIUM_FHIR_URL="+g.URL+"/fhir",
		"CONSILIUM_CA="+g.Layout.CAFile(),
		"CONSILIUM_CERT="+g.Layout.ClientCert("st-marys"),
		"CONSILIUM_KEY="+g.Layout.ClientKey("st-marys"),
	)
	out, err := cmd.CombinedOutput()
	t.Logf("fhir-kit-client:\n%s", out)
	if err != nil {
		t.Fatalf("the interoperability script failed: %v", err)
	}
	for _, step := range []string{"capabilities", "create", "read", "update", "vread", "search", "transaction", "delete", "error as OperationOutcome"} {
		if !strings.Contains(string(out), "ok "+step+"\n") {
			t.Errorf("step %q did not pass", step)
		}
	}
}

// repoRoot is the folder holding go.mod.
func repoRoot(t testing.TB) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatal("go.mod not found")
		}
		dir = parent
	}
}
