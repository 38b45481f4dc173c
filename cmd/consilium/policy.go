package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"text/tabwriter"
	"time"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/bundle"

	"github.com/consilium/consilium/policy"
)

const policyUsage = `Usage: consilium policy <subcommand> [flags]

  test DIR                       run a bundle's Rego tests and checks offline
  push --version V DIR|FILE      upload a bundle (directory or opa build tar.gz)
  list                           list versions and the active one
  activate VERSION               make VERSION active (rollback: activate an older one)
  dry-run VERSION                replay recent decisions against VERSION, show changes

push, list, activate and dry-run talk to the gateway as a compliance officer:
see 'consilium policy list -h' for the connection flags.`

// runPolicy dispatches the policy subcommands: "test" works offline, the
// others talk to the gateway.
func runPolicy(ctx context.Context, env *cli, args []string) error {
	if len(args) == 0 {
		return usagef("%s", policyUsage)
	}
	switch args[0] {
	case "test":
		return runPolicyTest(ctx, env, args[1:])
	case "push":
		return runPolicyPush(ctx, env, args[1:])
	case "list":
		return runPolicyList(ctx, env, args[1:])
	case "activate":
		return runPolicyActivate(ctx, env, args[1:])
	case "dry-run":
		return runPolicyDryRun(ctx, env, args[1:])
	case "-h", "--help", "help":
		fmt.Fprintln(env.stderr, policyUsage)
		return flag.ErrHelp
	}
	return usagef("unknown policy subcommand %q (want test, push, list, activate or dry-run)", args[0])
}

func runPolicyPush(ctx context.Context, env *cli, args []string) error {
	fs := newFlagSet(env, "policy push", "policy push --version V [connection flags] DIR|FILE.tar.gz")
	version := fs.String("version", "", "version name for the bundle (immutable once uploaded)")
	cf := addClientFlags(fs)
	if err := parseFlags(fs, args, true); err != nil {
		return err
	}
	if *version == "" || fs.NArg() != 1 {
		return usagef("want --version and exactly one bundle directory or archive")
	}
	archive, err := bundleArchive(fs.Arg(0))
	if err != nil {
		return err
	}
	c, err := cf.client(env)
	if err != nil {
		return err
	}
	var info policy.VersionInfo
	resp, err := c.do(ctx, http.MethodPut, "/policies/"+url.PathEscape(*version), bytes.NewReader(archive), "application/gzip")
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if err := json.NewDecoder(resp.Body).Decode(&info); err != nil {
		return fmt.Errorf("reading the gateway's answer: %w", err)
	}
	fmt.Fprintf(env.stdout, "uploaded %s (%d bytes, sha256 %s); it passed its tests. Activate it with: consilium policy activate %s\n",
		info.Version, info.Size, info.SHA256, info.Version)
	return nil
}

// bundleArchive returns path as an OPA bundle archive: a .tar.gz is sent
// as it is; a directory is packed with OPA's own bundle writer.
func bundleArchive(path string) ([]byte, error) {
	st, err := os.Stat(path)
	if err != nil {
		return nil, err
	}
	if !st.IsDir() {
		return os.ReadFile(path)
	}
	b, err := bundle.NewCustomReader(bundle.NewDirectoryLoader(path)).WithRegoVersion(ast.RegoV1).Read()
	if err != nil {
		return nil, fmt.Errorf("reading bundle directory %s: %w", path, err)
	}
	var buf bytes.Buffer
	if err := bundle.NewWriter(&buf).Write(b); err != nil {
		return nil, fmt.Errorf("packing bundle %s: %w", path, err)
	}
	return buf.Bytes(), nil
}

func runPolicyList(ctx context.Context, env *cli, args []string) error {
	fs := newFlagSet(env, "policy list", "policy list [connection flags]")
	cf := addClientFlags(fs)
	if err := parseFlags(fs, args, false); err != nil {
		return err
	}
	c, err := cf.client(env)
	if err != nil {
		return err
	}
	var v policy.Versions
	if err := c.doJSON(ctx, http.MethodGet, "/policies", nil, &v); err != nil {
		return err
	}
	tw := tabwriter.NewWriter(env.stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "VERSION\tACTIVE\tUPLOADED\tSIZE\tSHA256")
	for _, i := range v.Versions {
		active, uploaded := "", "-"
		if i.Version == v.Active {
			active = "*"
		}
		if !i.Uploaded.IsZero() {
			uploaded = i.Uploaded.UTC().Format(time.RFC3339)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%s\n", i.Version, active, uploaded, i.Size, i.SHA256)
	}
	return tw.Flush()
}

func runPolicyActivate(ctx context.Context, env *cli, args []string) error {
	fs := newFlagSet(env, "policy activate", "policy activate [connection flags] VERSION")
	cf := addClientFlags(fs)
	if err := parseFlags(fs, args, true); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		return usagef("want exactly one version")
	}
	c, err := cf.client(env)
	if err != nil {
		return err
	}
	var a policy.Activation
	if err := c.doJSON(ctx, http.MethodPost, "/policies/"+url.PathEscape(fs.Arg(0))+"/activate", nil, &a); err != nil {
		return err
	}
	fmt.Fprintf(env.stdout, "active policy is now %s (was %s); every gateway follows within seconds\n", a.Version, a.Previous)
	return nil
}

func runPolicyDryRun(ctx context.Context, env *cli, args []string) error {
	fs := newFlagSet(env, "policy dry-run", "policy dry-run [--json] [connection flags] VERSION")
	asJSON := fs.Bool("json", false, "print the gateway's JSON answer")
	cf := addClientFlags(fs)
	if err := parseFlags(fs, args, true); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		return usagef("want exactly one version")
	}
	c, err := cf.client(env)
	if err != nil {
		return err
	}
	var ch policy.Changes
	if err := c.doJSON(ctx, http.MethodPost, "/policies/"+url.PathEscape(fs.Arg(0))+"/dry-run", nil, &ch); err != nil {
		return err
	}
	if *asJSON {
		enc := json.NewEncoder(env.stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(ch)
	}
	fmt.Fprintf(env.stdout, "replayed %d recent decisions against %s (active: %s); %d would change\n",
		ch.Replayed, ch.Candidate, ch.Active, len(ch.Changed))
	verdict := func(o policy.Outcome) string {
		if o.Allow {
			return "allow"
		}
		return "deny"
	}
	for _, c := range ch.Changed {
		fmt.Fprintf(env.stdout, "\n%s %s by %s (%s) at %s: %s -> %s (input %s)\n", c.Input.Action, c.Input.Resource.Kind,
			c.Input.Principal.ID, c.Input.Principal.Role, c.Input.Time.UTC().Format(time.RFC3339), verdict(c.Active), verdict(c.Candidate), c.InputDigest)
		for _, side := range []struct {
			name string
			o    policy.Outcome
		}{{"active", c.Active}, {"candidate", c.Candidate}} {
			for _, r := range side.o.Reasons {
				fmt.Fprintf(env.stdout, "  %-9s %s\n", side.name+":", r)
			}
			if side.o.Error != "" {
				fmt.Fprintf(env.stdout, "  %-9s error: %s\n", side.name+":", side.o.Error)
			}
		}
	}
	return nil
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
