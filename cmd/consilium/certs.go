package main

import (
	"context"
	"flag"
	"fmt"
	"math/big"
	"path/filepath"
	"strings"
	"time"

	"github.com/consilium/consilium/certs"
)

func certsCommand() command {
	return command{
		summary: "run the certificate authority: init, issue, revoke, revoked",
		run:     runCerts,
	}
}

func runCerts(ctx context.Context, env *cli, args []string) error {
	if len(args) == 0 {
		return usagef("usage: consilium certs init|issue|revoke|revoked [flags]")
	}
	switch args[0] {
	case "init":
		return certsInit(env, args[1:])
	case "issue":
		return certsIssue(env, args[1:])
	case "revoke":
		return certsRevoke(env, args[1:])
	case "revoked":
		return certsRevoked(env, args[1:])
	default:
		return usagef("unknown subcommand %q; want init, issue, revoke or revoked", args[0])
	}
}

// stringList is a repeatable string flag.
type stringList []string

func (l *stringList) String() string     { return strings.Join(*l, ",") }
func (l *stringList) Set(v string) error { *l = append(*l, v); return nil }

func newFlagSet(env *cli, name, usage string) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(env.stderr)
	fs.Usage = func() {
		fmt.Fprintf(env.stderr, "Usage: consilium %s\n\nFlags:\n", usage)
		fs.PrintDefaults()
	}
	return fs
}

// parseFlags parses args and refuses positional arguments unless allowed.
func parseFlags(fs *flag.FlagSet, args []string, positional bool) error {
	if err := fs.Parse(args); err != nil {
		if err == flag.ErrHelp {
			return err
		}
		return usageError{err.Error()}
	}
	if !positional && fs.NArg() > 0 {
		return usagef("unexpected argument %q", fs.Arg(0))
	}
	return nil
}

func certsInit(env *cli, args []string) error {
	fs := newFlagSet(env, "certs init", "certs init --dir DIR [--name NAME]")
	dir := fs.String("dir", "", "folder for the CA (created if missing)")
	name := fs.String("name", "Consilium CA", "CA common name")
	if err := parseFlags(fs, args, false); err != nil {
		return err
	}
	if *dir == "" {
		return usagef("--dir is required")
	}
	ca, err := certs.Init(*dir, certs.InitOptions{Name: *name})
	if err != nil {
		return err
	}
	fmt.Fprintf(env.stdout, "CA certificate: %s\nCA key:         %s (keep it secret)\nRevocation list: %s\n",
		filepath.Join(ca.Dir(), certs.CAFile), filepath.Join(ca.Dir(), certs.CAKeyFile), filepath.Join(ca.Dir(), certs.CRLFile))
	return nil
}

func certsIssue(env *cli, args []string) error {
	fs := newFlagSet(env, "certs issue",
		"certs issue --dir DIR --id ID --org ORG --role ROLE --country CC [--specialty CODE] [--language TAG]... [--out PREFIX]\n"+
			"       consilium certs issue --dir DIR --server --host NAME [--host NAME]... [--out PREFIX]")
	dir := fs.String("dir", "", "CA folder")
	server := fs.Bool("server", false, "issue a server certificate instead of a client one")
	var hosts, langs stringList
	fs.Var(&hosts, "host", "server DNS name or IP address (repeatable)")
	var p certs.Principal
	fs.StringVar(&p.ID, "id", "", "principal id (certificate CN)")
	fs.StringVar(&p.Org, "org", "", "organisation (O)")
	role := fs.String("role", "", "role (OU): hospital, case-manager, specialist or compliance")
	fs.StringVar(&p.Country, "country", "", "ISO 3166 alpha-2 country (C)")
	fs.StringVar(&p.Specialty, "specialty", "", "specialty code, for specialists")
	fs.Var(&langs, "language", "language the specialist works in, BCP 47 (repeatable)")
	days := fs.Int("days", 0, "validity in days (default 365)")
	out := fs.String("out", "", "output path prefix: writes PREFIX.pem and PREFIX.key (default DIR/<id> or DIR/server)")
	if err := parseFlags(fs, args, false); err != nil {
		return err
	}
	if *dir == "" {
		return usagef("--dir is required")
	}
	ca, err := certs.Load(*dir)
	if err != nil {
		return err
	}
	opts := certs.IssueOptions{Validity: time.Duration(*days) * 24 * time.Hour}
	var iss *certs.Issued
	if *server {
		if len(hosts) == 0 {
			return usagef("--server needs at least one --host")
		}
		if *out == "" {
			*out = filepath.Join(*dir, "server")
		}
		iss, err = ca.IssueServer(hosts, opts)
	} else {
		p.Role, p.Languages = certs.Role(*role), langs
		if *out == "" && p.ID != "" {
			*out = filepath.Join(*dir, p.ID)
		}
		iss, err = ca.IssueClient(p, opts)
	}
	if err != nil {
		return err
	}
	if err := iss.WriteFiles(*out+".pem", *out+".key"); err != nil {
		return err
	}
	fmt.Fprintf(env.stdout, "certificate: %s.pem\nkey:         %s.key\nserial:      %s\nexpires:     %s\n",
		*out, *out, iss.Certificate.SerialNumber.Text(16), iss.Certificate.NotAfter.UTC().Format(time.RFC3339))
	return nil
}

func certsRevoke(env *cli, args []string) error {
	fs := newFlagSet(env, "certs revoke", "certs revoke --dir DIR (--serial HEX | --cert FILE)")
	dir := fs.String("dir", "", "CA folder")
	serialHex := fs.String("serial", "", "serial number to revoke, in hex as 'certs issue' prints it")
	certFile := fs.String("cert", "", "certificate file to revoke")
	if err := parseFlags(fs, args, false); err != nil {
		return err
	}
	if *dir == "" || (*serialHex == "") == (*certFile == "") {
		return usagef("--dir and exactly one of --serial or --cert are required")
	}
	ca, err := certs.Load(*dir)
	if err != nil {
		return err
	}
	var serial *big.Int
	if *certFile != "" {
		c, err := certs.LoadCertificate(*certFile)
		if err != nil {
			return err
		}
		if err := c.CheckSignatureFrom(ca.Certificate()); err != nil {
			return fmt.Errorf("%s was not issued by this CA: %w", *certFile, err)
		}
		serial = c.SerialNumber
	} else {
		var ok bool
		serial, ok = new(big.Int).SetString(strings.TrimPrefix(strings.ToLower(*serialHex), "0x"), 16)
		if !ok || serial.Sign() <= 0 {
			return usagef("--serial %q is not a hexadecimal serial number", *serialHex)
		}
	}
	if err := ca.Revoke(serial); err != nil {
		return err
	}
	fmt.Fprintf(env.stdout, "revoked serial %s; running servers refuse it within seconds (%s)\n",
		serial.Text(16), filepath.Join(*dir, certs.CRLFile))
	return nil
}

func certsRevoked(env *cli, args []string) error {
	fs := newFlagSet(env, "certs revoked", "certs revoked --dir DIR")
	dir := fs.String("dir", "", "CA folder")
	if err := parseFlags(fs, args, false); err != nil {
		return err
	}
	if *dir == "" {
		return usagef("--dir is required")
	}
	ca, err := certs.Load(*dir)
	if err != nil {
		return err
	}
	serials, err := ca.Revoked()
	if err != nil {
		return err
	}
	for _, s := range serials {
		fmt.Fprintln(env.stdout, s.Text(16))
	}
	return nil
}
