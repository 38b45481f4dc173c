package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"

	"aead.dev/minisign"
	"filippo.io/age"

	"github.com/consilium/consilium/packet"
)

const packetUsage = `Usage:
  consilium packet verify FILE --identity F --pub F
  consilium packet open   FILE --identity F --pub F --out DIR

Checks a case packet offline: decrypts it with the specialist's age identity,
verifies the manifest's signature with the gateway's minisign public key and
every file's size and SHA-256, and refuses unsafe entries (absolute or ".."
paths, links, devices) and files the manifest does not list.

verify reads the packet without writing anything. open also writes its files
to DIR (which must not exist or be empty), and only once everything verified.

--identity names an age identity file (age-keygen format; env
CONSILIUM_IDENTITY); --pub the gateway's minisign public key file (env
CONSILIUM_GATEWAY_PUB). Without a public key nothing is opened: the signature
is what proves the packet comes from the gateway.

The same checks with standard tools:
  age -d -i IDENTITY FILE | tar x
  minisign -Vm manifest.json -p gateway.pub
  then compare each file's sha256sum with manifest.json.
`

func packetCommand(ctx context.Context, env *cli, args []string) error {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		fmt.Fprint(env.stderr, packetUsage)
		if len(args) == 0 {
			return usagef("want verify or open")
		}
		return flag.ErrHelp
	}
	sub := args[0]
	if sub != "verify" && sub != "open" {
		return usagef("unknown packet subcommand %q (want verify or open)", sub)
	}
	fs := flag.NewFlagSet("packet "+sub, flag.ContinueOnError)
	fs.SetOutput(env.stderr)
	fs.Usage = func() { fmt.Fprint(env.stderr, packetUsage, "\nFlags:\n"); fs.PrintDefaults() }
	identityFile := fs.String("identity", "", "age identity file of the specialist (env CONSILIUM_IDENTITY)")
	pubFile := fs.String("pub", "", "minisign public key file of the gateway (env CONSILIUM_GATEWAY_PUB)")
	out := fs.String("out", "", "open: directory to unpack into (must not exist or be empty)")
	pos, err := parseInterspersed(fs, args[1:])
	if err != nil {
		return err
	}
	if *identityFile == "" {
		*identityFile = env.getenv("CONSILIUM_IDENTITY")
	}
	if *pubFile == "" {
		*pubFile = env.getenv("CONSILIUM_GATEWAY_PUB")
	}
	switch {
	case len(pos) != 1:
		return usagef("want exactly one packet FILE, got %d arguments", len(pos))
	case *identityFile == "":
		return usagef("--identity is required")
	case *pubFile == "":
		return usagef("--pub is required: the gateway's public key proves where the packet comes from")
	case sub == "open" && *out == "":
		return usagef("--out is required")
	case sub == "verify" && *out != "":
		return usagef("--out is for open; verify writes nothing")
	}
	identity, err := loadIdentity(*identityFile)
	if err != nil {
		return err
	}
	pub, err := minisign.PublicKeyFromFile(*pubFile)
	if err != nil {
		return fmt.Errorf("gateway public key: %w", err)
	}
	f, err := os.Open(pos[0])
	if err != nil {
		return err
	}
	defer f.Close()
	r, err := packet.Open(f, identity, pub)
	if err != nil {
		var nm *age.NoIdentityMatchError
		if errors.As(err, &nm) {
			return fmt.Errorf("the packet is not encrypted to %s", *identityFile)
		}
		return err
	}
	var m *packet.Manifest
	if sub == "verify" {
		m, err = r.Verify(ctx)
	} else {
		m, err = r.Unpack(ctx, *out)
	}
	if err != nil {
		return err
	}
	printManifest(env, m)
	if sub == "open" {
		abs, _ := filepath.Abs(*out)
		fmt.Fprintf(env.stdout, "unpacked to %s\n  read %s first; open %s in a DICOM viewer\n", abs,
			filepath.Join(abs, packet.SummaryPath), filepath.Join(abs, packet.DICOMDIRPath))
	}
	return nil
}

func printManifest(env *cli, m *packet.Manifest) {
	var size int64
	for _, f := range m.Files {
		size += f.Size
	}
	fmt.Fprintf(env.stdout, "packet verified: case %s (%s), %d files, %s, signed by gateway key %s on %s\n",
		m.Case.ID, m.Case.Specialty, len(m.Files)+2, humanSize(size), m.GatewayKeyID, m.Created.Format("2006-01-02 15:04 MST"))
	fmt.Fprintf(env.stdout, "residual identifier scan: %s\n", m.Deidentification.ResidualScan)
	var instances, resources, other int
	for _, w := range m.Withheld {
		switch w.Kind {
		case "dicom-instance":
			instances++
		case "fhir-resource":
			resources += max(w.Count, 1)
		default:
			other++
		}
	}
	if len(m.Withheld) > 0 {
		fmt.Fprintf(env.stdout, "withheld (reasons in manifest.json): DICOM instances %d, FHIR resources %d, other %d\n", instances, resources, other)
	}
}

func humanSize(n int64) string {
	switch {
	case n >= 1<<30:
		return fmt.Sprintf("%.1f GiB", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%d bytes", n)
}

// loadIdentity reads an age identity file; a file with several identities
// tries each.
func loadIdentity(path string) (age.Identity, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("age identity: %w", err)
	}
	defer f.Close()
	ids, err := age.ParseIdentities(f)
	if err != nil {
		return nil, fmt.Errorf("age identity %s: %w", path, err)
	}
	if len(ids) == 1 {
		return ids[0], nil
	}
	return identities(ids), nil
}

// identities tries several identities, as age -i with a multi-key file
// does.
type identities []age.Identity

var _ age.Identity = identities(nil)

func (ids identities) Unwrap(stanzas []*age.Stanza) ([]byte, error) {
	for _, id := range ids {
		key, err := id.Unwrap(stanzas)
		if errors.Is(err, age.ErrIncorrectIdentity) {
			continue
		}
		return key, err
	}
	return nil, age.ErrIncorrectIdentity
}
