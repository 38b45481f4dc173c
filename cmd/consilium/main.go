// Command consilium is the one binary of the Consilium gateway: the server,
// the certificate authority, and the clients that hospitals, case managers,
// specialists and compliance officers use. It only parses flags and wires
// packages together; everything it does is implemented in those packages.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"sort"
	"syscall"
)

// command is one subcommand of the binary. run gets the arguments after the
// subcommand name.
type command struct {
	summary string
	run     func(ctx context.Context, env *cli, args []string) error
}

// cli carries what every subcommand may use: its output streams and the
// process environment (read through getenv so tests can replace it).
type cli struct {
	stdout io.Writer
	stderr io.Writer
	getenv func(string) string
}

// commands lists every subcommand. Each lives in its own file.
func commands() map[string]command {
	return map[string]command{
		"audit":  auditCommand(),
		"certs":  certsCommand(),
		"keys":   keysCommand(),
		"serve":  serveCommand(),
		"push":   pushCommand(),
		"policy": {summary: "policy bundles: test a bundle directory offline", run: runPolicy},
		"deid":   {"de-identify DICOM or FHIR files with consistent pseudonyms", deidCommand},
		"packet": {"verify or open a case packet offline (age, minisign, every hash)", packetCommand},

		"case":    caseCommand(),
		"pull":    pullCommand(),
		"opinion": opinionCommand(),
	}
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], &cli{stdout: os.Stdout, stderr: os.Stderr, getenv: os.Getenv})
	stop()
	os.Exit(code)
}

// run dispatches to a subcommand and turns its error into an exit code:
// 0 success, 1 failure, 2 usage error.
func run(ctx context.Context, args []string, env *cli) int {
	cmds := commands()
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		usage(env.stderr, cmds)
		if len(args) == 0 {
			return 2
		}
		return 0
	}
	c, ok := cmds[args[0]]
	if !ok {
		fmt.Fprintf(env.stderr, "consilium: unknown command %q\n\n", args[0])
		usage(env.stderr, cmds)
		return 2
	}
	err := c.run(ctx, env, args[1:])
	switch {
	case err == nil:
		return 0
	case errors.Is(err, flag.ErrHelp):
		return 0
	case errors.As(err, new(usageError)):
		fmt.Fprintf(env.stderr, "consilium %s: %v\n", args[0], err)
		return 2
	default:
		fmt.Fprintf(env.stderr, "consilium %s: %v\n", args[0], err)
		return 1
	}
}

func usage(w io.Writer, cmds map[string]command) {
	fmt.Fprintln(w, "Usage: consilium <command> [flags] [args]")
	fmt.Fprintln(w)
	fmt.Fprintln(w, "Commands:")
	names := make([]string, 0, len(cmds))
	for n := range cmds {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		fmt.Fprintf(w, "  %-10s %s\n", n, cmds[n].summary)
	}
	fmt.Fprintln(w)
	fmt.Fprintln(w, "Run 'consilium <command> -h' for the flags of a command.")
}

// usageError marks an error caused by how the command was invoked (exit 2).
type usageError struct{ msg string }

func (e usageError) Error() string { return e.msg }

func usagef(format string, a ...any) error { return usageError{fmt.Sprintf(format, a...)} }

// parseInterspersed parses flags before and after positional arguments
// ("verify FILE --identity F"), which the flag package alone does not.
func parseInterspersed(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := parseFlags(fs, args, true); err != nil {
			return nil, err
		}
		rest := fs.Args()
		if len(rest) == 0 {
			return pos, nil
		}
		pos = append(pos, rest[0])
		args = rest[1:]
	}
}
