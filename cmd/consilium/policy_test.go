package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestPolicyTestBuiltin(t *testing.T) {
	code, out, errOut := runCLI(t, nil, "policy", "test", filepath.Join("..", "..", "policy", "builtin"))
	if code != 0 {
		t.Fatalf("exit %d\n%s%s", code, out, errOut)
	}
	if !strings.Contains(out, "PASS data.consilium.authz_test.test_demo_journey_gb_to_us_and_es") || !strings.Contains(out, " passed, 0 failed, 0 skipped\n") {
		t.Errorf("output:\n%s", out)
	}
}

func TestPolicyTestFailing(t *testing.T) {
	dir := t.TempDir()
	write := func(name, body string) {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("authz.rego", "package consilium.authz\n\ndecision := {\"allow\": false, \"reasons\": [\"no\"], \"obligations\": {}}\n")
	write("authz_test.rego", "package consilium.authz_test\n\ntest_allows if data.consilium.authz.decision.allow\n\ntest_denies if not data.consilium.authz.decision.allow\n")
	code, out, errOut := runCLI(t, nil, "policy", "test", dir)
	if code != 1 {
		t.Fatalf("exit %d, want 1\n%s%s", code, out, errOut)
	}
	for _, want := range []string{"FAIL data.consilium.authz_test.test_allows (authz_test.rego:3): failed", "PASS data.consilium.authz_test.test_denies", "1 passed, 1 failed, 0 skipped"} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}

	write("authz.rego", "package consilium.authz\n\ndecision := {\"allow\": false, \"reasons\": [\"no\"]\n")
	code, out, _ = runCLI(t, nil, "policy", "test", dir)
	if code != 1 || !strings.Contains(out, "PROBLEM authz.rego:") {
		t.Errorf("syntax error: exit %d\n%s", code, out)
	}
}

func TestPolicyUsage(t *testing.T) {
	for _, args := range [][]string{{"policy"}, {"policy", "push"}, {"policy", "test"}, {"policy", "test", "a", "b"}} {
		if code, _, _ := runCLI(t, nil, args...); code != 2 {
			t.Errorf("%v: exit %d, want 2", args, code)
		}
	}
	if code, _, _ := runCLI(t, nil, "policy", "test", "-h"); code != 0 {
		t.Errorf("-h: exit %d", code)
	}
}
