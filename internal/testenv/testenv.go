// Package testenv lets tests ask for outside programs and services (MinIO,
// dcmtk, age, minisign, npm clients) in one consistent way: under CI=true a
// missing dependency fails the test, elsewhere it skips with a message that
// says how to install it. Nothing is ever skipped silently.
package testenv

import (
	"os"
	"os/exec"
	"testing"
)

// InCI reports whether the tests run under CI (CI=true), where every
// dependency must be present.
func InCI() bool { return os.Getenv("CI") == "true" }

// Missing reports a missing dependency: a failure under CI, a skip
// elsewhere. hint says how to install it.
func Missing(t testing.TB, what, hint string) {
	t.Helper()
	if InCI() {
		t.Fatalf("%s is required under CI=true but is missing (%s)", what, hint)
	}
	t.Skipf("%s is missing; %s (under CI=true this is a failure)", what, hint)
}

// LookPath returns the path of the named program, or reports it missing
// with hint (for example "apt-get install dcmtk").
func LookPath(t testing.TB, program, hint string) string {
	t.Helper()
	p, err := exec.LookPath(program)
	if err != nil {
		Missing(t, program, hint)
	}
	return p
}
