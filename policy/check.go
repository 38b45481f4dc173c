package policy

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/bundle"
	"github.com/open-policy-agent/opa/v1/storage"
	"github.com/open-policy-agent/opa/v1/storage/inmem"
	"github.com/open-policy-agent/opa/v1/tester"
)

// Entrypoint is the rule every bundle must define: the gateway evaluates it
// and expects an object with "allow" (boolean), "reasons" (strings) and
// "obligations" (see [Obligations]).
const Entrypoint = "data.consilium.authz.decision"

// ErrInvalidBundle is matched by the [*BundleError] that [Check],
// [CheckDir] and [Engine.Upload] return for a bundle that must not be used.
var ErrInvalidBundle = errors.New("policy: invalid bundle")

// maxProblems caps the problems reported for one bundle, so that a bundle
// built to produce errors cannot produce an unbounded answer.
const maxProblems = 100

// testTimeout bounds one Rego test; checkTimeout bounds a whole check.
const (
	testTimeout  = 10 * time.Second
	checkTimeout = 2 * time.Minute
)

// Problem is one reason a bundle is refused.
type Problem struct {
	// File is the bundle file concerned, if known.
	File string `json:"file,omitempty"`
	// Row is the line in File, if known.
	Row int `json:"row,omitempty"`
	// Message says what is wrong.
	Message string `json:"message"`
}

func (p Problem) String() string {
	switch {
	case p.File != "" && p.Row > 0:
		return fmt.Sprintf("%s:%d: %s", p.File, p.Row, p.Message)
	case p.File != "":
		return p.File + ": " + p.Message
	}
	return p.Message
}

// BundleError lists every problem found in a bundle. It matches
// [ErrInvalidBundle].
type BundleError struct {
	Problems []Problem
}

func (e *BundleError) Error() string {
	s := make([]string, len(e.Problems))
	for i, p := range e.Problems {
		s[i] = p.String()
	}
	return fmt.Sprintf("policy: invalid bundle: %s", strings.Join(s, "; "))
}

// Unwrap makes errors.Is(err, ErrInvalidBundle) hold.
func (e *BundleError) Unwrap() error { return ErrInvalidBundle }

// TestResult is the outcome of one Rego test of a bundle.
type TestResult struct {
	// Name is the test rule, for example data.consilium.authz_test.test_x.
	Name string `json:"name"`
	// File and Row locate the test.
	File string `json:"file"`
	Row  int    `json:"row"`
	// Pass, Skip: a test that neither passed nor was skipped failed.
	Pass bool `json:"pass"`
	Skip bool `json:"skip,omitempty"`
	// Message says why a test failed or errored.
	Message string `json:"message,omitempty"`
	// Output is what the test printed.
	Output   string        `json:"output,omitempty"`
	Duration time.Duration `json:"duration"`
}

// Report is what checking a bundle found.
type Report struct {
	// Tests are the Rego tests that ran, by name.
	Tests []TestResult `json:"tests"`
	// Problems are the reasons to refuse the bundle; empty when it is fit
	// to activate.
	Problems []Problem `json:"problems"`
}

// Err returns a [*BundleError] when the report has problems, nil otherwise.
func (r Report) Err() error {
	if len(r.Problems) == 0 {
		return nil
	}
	return &BundleError{Problems: slices.Clone(r.Problems)}
}

// Check reads an OPA bundle archive (what `opa build` writes) and checks it
// the way [Engine.Upload] does: it must be within the default [Limits],
// parse and compile as Rego v1, define [Entrypoint] producing a well-formed
// decision, and carry *_test.rego tests that all pass. The error is the
// report's [Report.Err].
func Check(ctx context.Context, r io.Reader) (Report, error) {
	files, problems := readArchive(r, Limits{})
	if len(problems) > 0 {
		rep := Report{Problems: problems}
		return rep, rep.Err()
	}
	rep := files.check(ctx, Limits{})
	return rep, rep.Err()
}

// CheckDir checks a bundle directory like [Check] does an archive. Only the
// files OPA reads (*.rego, data.json, data.yaml, .manifest) are considered.
func CheckDir(ctx context.Context, dir string) (Report, error) {
	st, err := os.Stat(dir)
	if err != nil {
		rep := Report{Problems: []Problem{{Message: fmt.Sprintf("read bundle directory: %v", err)}}}
		return rep, rep.Err()
	}
	if !st.IsDir() {
		f, err := os.Open(dir)
		if err != nil {
			rep := Report{Problems: []Problem{{Message: fmt.Sprintf("read bundle: %v", err)}}}
			return rep, rep.Err()
		}
		defer f.Close()
		return Check(ctx, f)
	}
	files, problems := readFS(os.DirFS(dir), Limits{})
	if len(problems) > 0 {
		rep := Report{Problems: problems}
		return rep, rep.Err()
	}
	rep := files.check(ctx, Limits{})
	return rep, rep.Err()
}

// check parses, compiles and tests the bundle, and tries its entrypoint.
func (files bundleFiles) check(ctx context.Context, lim Limits) Report {
	ctx, cancel := context.WithTimeout(ctx, checkTimeout)
	defer cancel()
	var rep Report
	b, problems := files.parse(lim)
	if len(problems) > 0 {
		rep.Problems = capProblems(problems)
		return rep
	}
	rep.Tests, problems = runTests(ctx, b)
	rep.Problems = append(rep.Problems, problems...)
	if len(rep.Problems) == 0 {
		// Only a bundle that compiled can be tried.
		rep.Problems = append(rep.Problems, files.tryEntrypoint(ctx, lim)...)
	}
	rep.Problems = capProblems(rep.Problems)
	return rep
}

func capProblems(p []Problem) []Problem {
	if len(p) <= maxProblems {
		return p
	}
	return append(p[:maxProblems:maxProblems], Problem{Message: fmt.Sprintf("%d more problems not shown", len(p)-maxProblems)})
}

// runTests compiles the bundle and runs its Rego tests with OPA's tester,
// the same way `opa test` does. Compile errors, a missing entrypoint rule,
// a lack of *_test.rego tests and failing tests are all problems.
func runTests(ctx context.Context, b *bundle.Bundle) ([]TestResult, []Problem) {
	store := inmem.NewWithOpts(inmem.OptRoundTripOnWrite(false))
	txn, err := store.NewTransaction(ctx, storage.WriteParams)
	if err != nil {
		return nil, []Problem{{Message: fmt.Sprintf("open policy store: %v", err)}}
	}
	defer store.Abort(ctx, txn)
	compiler := newCompiler()
	runner := tester.NewRunner().
		SetCompiler(compiler).
		SetStore(store).
		SetBundles(map[string]*bundle.Bundle{"bundle": b}).
		CapturePrintOutput(true).
		SetTimeout(testTimeout)
	ch, err := runner.RunTests(ctx, txn)
	if err != nil {
		return nil, astProblems(err)
	}
	var results []TestResult
	var problems []Problem
	for r := range ch {
		tr := TestResult{
			Name:     r.Package + "." + r.Name,
			Pass:     r.Pass(),
			Skip:     r.Skip,
			Output:   string(r.Output),
			Duration: r.Duration,
		}
		if r.Location != nil {
			tr.File = strings.TrimPrefix(r.Location.File, "/")
			tr.Row = r.Location.Row
		}
		switch {
		case r.Error != nil:
			tr.Message = "error: " + r.Error.Error()
		case r.Fail:
			tr.Message = "failed"
		}
		if !tr.Pass && !tr.Skip {
			problems = append(problems, Problem{File: tr.File, Row: tr.Row, Message: fmt.Sprintf("test %s %s", tr.Name, tr.Message)})
		}
		results = append(results, tr)
	}
	if err := ctx.Err(); err != nil {
		problems = append(problems, Problem{Message: fmt.Sprintf("tests did not finish: %v", err)})
	}
	slices.SortFunc(results, func(a, b TestResult) int { return strings.Compare(a.Name, b.Name) })
	slices.SortFunc(problems, func(a, b Problem) int { return strings.Compare(a.String(), b.String()) })
	if !slices.ContainsFunc(results, func(t TestResult) bool { return strings.HasSuffix(t.File, "_test.rego") }) {
		problems = append(problems, Problem{Message: "the bundle has no tests: add *_test.rego files with test_ rules"})
	}
	if len(compiler.GetRulesExact(ast.MustParseRef(Entrypoint))) == 0 {
		problems = append(problems, Problem{Message: "the bundle does not define " + Entrypoint})
	}
	return results, problems
}

// tryEntrypoint prepares the decision query as the engine would and asks it
// a few questions; each answer must be a well-formed decision.
func (files bundleFiles) tryEntrypoint(ctx context.Context, lim Limits) []Problem {
	b, problems := files.parse(lim)
	if len(problems) > 0 {
		return problems
	}
	p, err := prepare(ctx, "candidate", b)
	if err != nil {
		return astProblems(err)
	}
	var out []Problem
	for _, in := range probeInputs() {
		n, err := in.normalize(time.Now)
		if err != nil {
			return []Problem{{Message: fmt.Sprintf("probe input: %v", err)}}
		}
		raw, err := n.canonicalJSON()
		if err != nil {
			return []Problem{{Message: err.Error()}}
		}
		if _, err := p.evalJSON(ctx, raw); err != nil {
			out = append(out, Problem{Message: fmt.Sprintf("%s for a %s asking %q: %v", Entrypoint, in.Principal.Role, in.Action, err)})
		}
	}
	return out
}

// probeInputs are the questions tryEntrypoint asks a candidate bundle.
func probeInputs() []Input {
	return []Input{
		{Principal: Principal{ID: "probe", Org: "probe", Role: RoleHospital, Country: "GB"}, Action: ActionWhoAmI},
		{Principal: Principal{ID: "probe", Org: "probe", Role: RoleCompliance, Country: "GB"}, Action: ActionFHIRRead,
			Resource: Resource{Kind: "fhir", Org: "other", Type: "Observation", ID: "probe"}},
		{Principal: Principal{ID: "probe", Org: "probe", Role: RoleSpecialist, Country: "US"}, Action: ActionPacketRead,
			Case: Case{ID: "probe", Org: "other", Status: CaseReleased, Assigned: []string{"probe"}, Purpose: PurposeSecondOpinion, SourceCountry: "GB"}},
	}
}
