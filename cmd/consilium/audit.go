package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"aead.dev/minisign"

	"github.com/consilium/consilium/audit"
	"github.com/consilium/consilium/internal/devenv"
)

func auditCommand() command {
	return command{summary: "verify the audit trail offline (audit verify)", run: runAudit}
}

func runAudit(ctx context.Context, env *cli, args []string) error {
	if len(args) == 0 || args[0] != "verify" {
		return usagef("usage: consilium audit verify [flags] (see consilium audit verify -h)")
	}
	return auditVerify(ctx, env, args[1:])
}

// auditVerify checks the whole audit chain in a store, with nothing but
// the store and the gateway's public key: no gateway needs to run.
func auditVerify(ctx context.Context, env *cli, args []string) error {
	fset := newFlagSet(env, "audit verify", "audit verify --dev [--data DIR] [--pub FILE] [--json]\n"+
		"       consilium audit verify [--config FILE] --pub FILE [--json]\n\n"+
		"Reads the store as `serve` does (--dev, or --config and the CONSILIUM_* variables of\n"+
		"'consilium serve -h'; only the storage and audit settings are used) and checks every\n"+
		"entry, link and checkpoint. Exits 1 and names the first problem when the trail is broken.")
	dev := fset.Bool("dev", false, "the embedded default's store under --data")
	data := fset.String("data", "consilium-data", "folder of the embedded default (with --dev)")
	configFile := fset.String("config", "", "JSON configuration file (without --dev)")
	pubFile := fset.String("pub", "", "the gateway's minisign public key (default with --dev: DATA/keys/gateway.pub)")
	asJSON := fset.Bool("json", false, "print the report as JSON")
	if err := parseFlags(fset, args, false); err != nil {
		return err
	}
	var cfg serveConfig
	if *dev {
		if *configFile != "" {
			return usagef("--dev and --config are exclusive")
		}
		abs, err := filepath.Abs(*data)
		if err != nil {
			return err
		}
		layout := devenv.Layout{Dir: abs}
		cfg.Storage = storageConfig{Backend: "fs", Dir: layout.StoreDir()}
		if *pubFile == "" {
			*pubFile = layout.SigningPub()
		}
	} else {
		var err error
		if cfg, err = loadServeConfig(*configFile, env.getenv); err != nil {
			return err
		}
		if *pubFile == "" {
			return usagef("--pub is required without --dev")
		}
	}
	if cfg.Storage.Backend == "fs" {
		// Opening a missing folder would create an empty store and
		// report an empty, intact trail.
		if _, err := os.Stat(cfg.Storage.Dir); errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("store folder %s does not exist", cfg.Storage.Dir)
		}
	}
	pub, err := minisign.PublicKeyFromFile(*pubFile)
	if err != nil {
		return fmt.Errorf("public key: %w", err)
	}
	store, err := openBackend(ctx, cfg.Storage)
	if err != nil {
		return err
	}
	prefix := cfg.Audit.Prefix
	if prefix == "" {
		prefix = audit.DefaultPrefix
	}
	rep, err := audit.Verify(ctx, store, audit.VerifyOptions{PublicKey: pub, Prefix: prefix})
	if err != nil {
		return err
	}
	if *asJSON {
		enc := json.NewEncoder(env.stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(rep); err != nil {
			return err
		}
	} else {
		printReport(env, rep)
	}
	if !rep.OK {
		return fmt.Errorf("the audit trail is broken: %s", rep.First())
	}
	return nil
}

func printReport(env *cli, rep *audit.Report) {
	w := env.stdout
	state := "intact"
	if !rep.OK {
		state = "BROKEN"
	}
	fmt.Fprintf(w, "audit trail %s: %d entries in %d segments, %d valid checkpoints\n", state, rep.Entries, rep.Segments, rep.Checkpoints)
	fmt.Fprintf(w, "head: seq %d, hash %s\n", rep.Head.Seq, rep.Head.Hash)
	if c := rep.LastCheckpoint; c != nil {
		fmt.Fprintf(w, "last checkpoint: seq %d, signed %s by %s\n", c.Seq, c.Time.Format("2006-01-02 15:04:05Z07:00"), c.Source)
	} else {
		fmt.Fprintln(w, "last checkpoint: none")
	}
	if rep.Uncovered > 0 {
		fmt.Fprintf(w, "%d entries after the last checkpoint: their removal from the end would not be detectable yet\n", rep.Uncovered)
	}
	if !rep.VersionsChecked {
		fmt.Fprintln(w, "object versions: not examined (not a MinIO store)")
	}
	for i, p := range rep.Problems {
		if i == 0 {
			fmt.Fprintf(w, "FIRST PROBLEM: %s\n", p)
			continue
		}
		fmt.Fprintf(w, "problem: %s\n", p)
	}
	if rep.MoreProblems {
		fmt.Fprintln(w, "(more problems left out)")
	}
}
