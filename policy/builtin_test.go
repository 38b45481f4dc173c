package policy

import (
	"context"
	"strings"
	"testing"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/cover"
	"github.com/open-policy-agent/opa/v1/storage"
	"github.com/open-policy-agent/opa/v1/storage/inmem"
	"github.com/open-policy-agent/opa/v1/tester"

	"github.com/open-policy-agent/opa/v1/bundle"

	"github.com/consilium/consilium/policy/builtin"
)

// TestBuiltinRego runs the default bundle's Rego tests through OPA's tester,
// one Go subtest per Rego test, and the full bundle checks.
func TestBuiltinRego(t *testing.T) {
	files, problems := readFS(builtin.FS(), Limits{})
	if len(problems) > 0 {
		t.Fatalf("read builtin bundle: %v", problems)
	}
	rep := files.check(context.Background(), Limits{})
	for _, tr := range rep.Tests {
		t.Run(strings.TrimPrefix(tr.Name, "data.consilium."), func(t *testing.T) {
			if !tr.Pass {
				t.Errorf("%s:%d: %s %s", tr.File, tr.Row, tr.Message, tr.Output)
			}
		})
	}
	if len(rep.Tests) < 40 {
		t.Errorf("only %d Rego tests ran", len(rep.Tests))
	}
	for _, p := range rep.Problems {
		t.Errorf("problem: %s", p)
	}
}

// TestBuiltinRegoCoverage requires the Rego tests to exercise every line of
// every rule of the default bundle.
func TestBuiltinRegoCoverage(t *testing.T) {
	ctx := context.Background()
	files, problems := readFS(builtin.FS(), Limits{})
	if len(problems) > 0 {
		t.Fatal(problems)
	}
	b, problems := files.parse(Limits{})
	if len(problems) > 0 {
		t.Fatal(problems)
	}
	cov := cover.New()
	store := inmem.New()
	txn := storage.NewTransactionOrDie(ctx, store, storage.WriteParams)
	defer store.Abort(ctx, txn)
	ch, err := tester.NewRunner().SetCompiler(newCompiler()).SetStore(store).
		SetBundles(map[string]*bundle.Bundle{"bundle": b}).
		SetCoverageQueryTracer(cov).SetParallel(1).RunTests(ctx, txn)
	if err != nil {
		t.Fatal(err)
	}
	for r := range ch {
		if !r.Pass() {
			t.Errorf("%s failed", r.Name)
		}
	}
	modules := map[string]*ast.Module{}
	for _, m := range b.Modules {
		if !strings.HasSuffix(m.Path, "_test.rego") {
			modules[m.Path] = m.Parsed
		}
	}
	rep := cov.Report(modules)
	for file, fr := range rep.Files {
		for _, r := range fr.NotCovered {
			t.Errorf("%s: lines %d-%d not covered by any Rego test", file, r.Start.Row, r.End.Row)
		}
	}
	t.Logf("Rego coverage of the default bundle: %.1f%%", rep.Coverage)
}
