package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"time"

	"github.com/consilium/consilium/policy"
)

// runPolicy dispatches the policy subcommands. Only the offline "test" is
// here so far; push, activate, dry-run and list talk to the gateway.
func runPolicy(ctx context.Context, env *cli, args []string) error {
	if len(args) == 0 {
		return usagef("usage: consilium policy test DIR")
	}
	switch args[0] {
	case "test":
		return runPolicyTest(ctx, env, args[1:])
	case "-h", "--help", "help":
		fmt.Fprintln(env.stderr, "Usage: consilium policy test DIR")
		fmt.Fprintln(env.stderr)
		fmt.Fprintln(env.stderr, "  test DIR   run a policy bundle's Rego tests and checks offline (DIR: bundle directory or .tar.gz)")
		return flag.ErrHelp
	}
	return usagef("unknown policy subcommand %q (want: test)", args[0])
}

// runPolicyTest runs the checks an upload would: Rego tests, compilation,
// the decision entrypoint. It prints one line per test and every problem,
// and fails when any test fails or any problem is found.
func runPolicyTest(ctx context.Context, env *cli, args []string) error {
	fs := flag.NewFlagSet("policy test", flag.ContinueOnError)
	fs.SetOutput(env.stderr)
	verbose := fs.Bool("v", false, "print what passing tests printed too")
	fs.Usage = func() {
		fmt.Fprintln(env.stderr, "Usage: consilium policy test [-v] DIR")
		fmt.Fprintln(env.stderr)
		fmt.Fprintln(env.stderr, "Runs the Rego tests of the bundle in DIR (a directory or a .tar.gz made by")
		fmt.Fprintln(env.stderr, "'opa build') and the checks the gateway applies before accepting it.")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		return usagef("want exactly one bundle directory, got %d arguments", fs.NArg())
	}
	rep, err := policy.CheckDir(ctx, fs.Arg(0))
	if err != nil && !errors.Is(err, policy.ErrInvalidBundle) {
		return err
	}
	passed, failed, skipped := 0, 0, 0
	for _, t := range rep.Tests {
		switch {
		case t.Skip:
			skipped++
			fmt.Fprintf(env.stdout, "SKIP %s\n", t.Name)
		case t.Pass:
			passed++
			fmt.Fprintf(env.stdout, "PASS %s (%s)\n", t.Name, t.Duration.Round(time.Microsecond))
		default:
			failed++
			fmt.Fprintf(env.stdout, "FAIL %s (%s:%d): %s\n", t.Name, t.File, t.Row, t.Message)
		}
		if t.Output != "" && (*verbose || !t.Pass) {
			fmt.Fprintf(env.stdout, "     %s\n", t.Output)
		}
	}
	// Test failures are listed above; the other problems go below.
	var other []policy.Problem
	for _, p := range rep.Problems {
		if !isTestFailure(p, rep.Tests) {
			other = append(other, p)
		}
	}
	for _, p := range other {
		fmt.Fprintf(env.stdout, "PROBLEM %s\n", p)
	}
	fmt.Fprintf(env.stdout, "%d passed, %d failed, %d skipped\n", passed, failed, skipped)
	if failed > 0 || len(other) > 0 {
		return fmt.Errorf("bundle %s is not fit to upload: %d failed tests, %d other problems", fs.Arg(0), failed, len(other))
	}
	return nil
}

func isTestFailure(p policy.Problem, tests []policy.TestResult) bool {
	for _, t := range tests {
		if !t.Pass && !t.Skip && p.File == t.File && p.Row == t.Row {
			return true
		}
	}
	return false
}
