package main

import (
	"context"
	"crypto/rand"
	"errors"
	"flag"
	"fmt"
	iofs "io/fs"
	"os"
	"path/filepath"
	"sort"
	"text/tabwriter"
	"time"

	"github.com/consilium/consilium/internal/keyfiles"
	"github.com/consilium/consilium/storage"
)

func keysCommand() command {
	return command{summary: "manage the storage keyring and the signing key: init, list, rotate, retire", run: runKeys}
}

func runKeys(ctx context.Context, env *cli, args []string) error {
	if len(args) == 0 {
		return usagef("usage: consilium keys init|list|rotate|retire [flags]")
	}
	switch args[0] {
	case "init":
		return keysInit(env, args[1:])
	case "list":
		return keysList(env, args[1:])
	case "rotate":
		return keysRotate(ctx, env, args[1:])
	case "retire":
		return keysRetire(env, args[1:])
	default:
		return usagef("unknown subcommand %q; want init, list, rotate or retire", args[0])
	}
}

func keysInit(env *cli, args []string) error {
	fs := newFlagSet(env, "keys init", "keys init --dir DIR")
	dir := fs.String("dir", "", "folder for keyring.json, gateway.key and gateway.pub (created if missing)")
	if err := parseFlags(fs, args, false); err != nil {
		return err
	}
	if *dir == "" {
		return usagef("--dir is required")
	}
	if err := os.MkdirAll(*dir, 0o700); err != nil {
		return err
	}
	keyring := filepath.Join(*dir, "keyring.json")
	if _, err := os.Stat(keyring); err == nil {
		return fmt.Errorf("%s already exists; use 'consilium keys rotate' to add a key", keyring)
	} else if !errors.Is(err, iofs.ErrNotExist) {
		return err
	}
	kr, err := storage.GenerateKeyring(rand.Reader)
	if err != nil {
		return err
	}
	if err := kr.Save(keyring); err != nil {
		return err
	}
	priv, pub := filepath.Join(*dir, "gateway.key"), filepath.Join(*dir, "gateway.pub")
	if err := keyfiles.WriteSigningKey(priv, pub); err != nil {
		return err
	}
	fmt.Fprintf(env.stdout, "storage keyring:     %s (CONSILIUM_KEYRING_FILE; back it up: without it the store is unreadable)\n", keyring)
	fmt.Fprintf(env.stdout, "signing key:         %s (CONSILIUM_SIGNING_KEY_FILE)\n", priv)
	fmt.Fprintf(env.stdout, "signing public key:  %s (give it to specialists and auditors)\n", pub)
	return nil
}

// keyringFlags lets a keys subcommand find the keyring (and, for rotate,
// the store) the same way serve does: --dev --data DIR, or --config FILE
// and CONSILIUM_* variables.
type keyringFlags struct {
	dev    *bool
	data   *string
	config *string
}

func addKeyringFlags(fs *flag.FlagSet) keyringFlags {
	return keyringFlags{
		dev:    fs.Bool("dev", false, "use the embedded default's folder (--data)"),
		data:   fs.String("data", "consilium-data", "folder of the embedded default (with --dev)"),
		config: fs.String("config", "", "JSON configuration file, as for serve (without --dev)"),
	}
}

// resolve returns the configuration the flags name. Only the storage and
// keyring settings are checked.
func (k keyringFlags) resolve(env *cli) (serveConfig, error) {
	if *k.dev {
		cfg, _, err := devConfig(*k.data, "")
		return cfg, err
	}
	cfg, err := loadServeConfig(*k.config, env.getenv)
	if err != nil {
		return cfg, err
	}
	if cfg.KeyringFile == "" {
		return cfg, usagef("no keyring: set CONSILIUM_KEYRING_FILE or keyring_file in --config, or use --dev")
	}
	return cfg, nil
}

func keysList(env *cli, args []string) error {
	fs := newFlagSet(env, "keys list", "keys list [--dev [--data DIR] | --config FILE]")
	kf := addKeyringFlags(fs)
	if err := parseFlags(fs, args, false); err != nil {
		return err
	}
	cfg, err := kf.resolve(env)
	if err != nil {
		return err
	}
	kr, err := storage.LoadKeyring(cfg.KeyringFile)
	if err != nil {
		return err
	}
	printKeys(env, kr)
	return nil
}

func printKeys(env *cli, kr *storage.Keyring) {
	keys := kr.Keys()
	sort.Slice(keys, func(i, j int) bool { return keys[i].Created.Before(keys[j].Created) })
	tw := tabwriter.NewWriter(env.stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "KEY ID\tCREATED\tSTATE")
	for _, k := range keys {
		state := "old"
		if k.ID == kr.ActiveID() {
			state = "active"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\n", k.ID, k.Created.UTC().Format(time.RFC3339), state)
	}
	tw.Flush()
}

func keysRotate(ctx context.Context, env *cli, args []string) error {
	fs := newFlagSet(env, "keys rotate", "keys rotate [--dev [--data DIR] | --config FILE] [--no-rewrap]\n\n"+
		"Adds a new active key-encryption key, then re-wraps every object's data key\n"+
		"with it (the data itself is not re-encrypted). Restart running gateways after\n"+
		"the rotation so they wrap new objects with the new key; run rotate again to\n"+
		"re-wrap what they wrote meanwhile, then 'keys retire' the old key.")
	kf := addKeyringFlags(fs)
	noRewrap := fs.Bool("no-rewrap", false, "only add the new key; re-wrap later with another rotate")
	if err := parseFlags(fs, args, false); err != nil {
		return err
	}
	cfg, err := kf.resolve(env)
	if err != nil {
		return err
	}
	kr, err := storage.LoadKeyring(cfg.KeyringFile)
	if err != nil {
		return err
	}
	old := kr.ActiveID()
	id, err := kr.Rotate(rand.Reader)
	if err != nil {
		return err
	}
	// Save before re-wrapping: objects re-wrapped with the new key must
	// never exist while the only copy of that key is in memory.
	if err := kr.Save(cfg.KeyringFile); err != nil {
		return err
	}
	fmt.Fprintf(env.stdout, "new active key %s (was %s), saved to %s\n", id, old, cfg.KeyringFile)
	if *noRewrap {
		return nil
	}
	backend, err := openBackend(ctx, cfg.Storage)
	if err != nil {
		return err
	}
	start := time.Now()
	last := start
	stats, err := storage.Rewrap(ctx, backend, kr, storage.RewrapOptions{Progress: func(p storage.RewrapProgress) {
		if time.Since(last) > time.Second {
			last = time.Now()
			fmt.Fprintf(env.stderr, "re-wrapping: %d objects looked at, %d re-wrapped\n", p.Stats.Scanned, p.Stats.Rewrapped)
		}
	}})
	// Whatever Rewrap learned about drained keys is worth keeping even if
	// it stopped early.
	if serr := kr.Save(cfg.KeyringFile); serr != nil && err == nil {
		err = serr
	}
	if err != nil {
		return fmt.Errorf("re-wrapping data keys: %w", err)
	}
	fmt.Fprintf(env.stdout, "re-wrapped %d of %d objects in %v (%d already current, %d not encrypted)\n",
		stats.Rewrapped, stats.Scanned, time.Since(start).Round(time.Millisecond), stats.Current, stats.NotEncrypted)
	for _, s := range stats.Skipped {
		fmt.Fprintf(env.stdout, "  skipped %s: %s\n", s.Name, s.Reason)
	}
	for k, n := range stats.Remaining {
		fmt.Fprintf(env.stdout, "  key %s still wraps %d object(s); it cannot be retired yet\n", k, n)
	}
	return nil
}

func keysRetire(env *cli, args []string) error {
	fs := newFlagSet(env, "keys retire", "keys retire [--dev [--data DIR] | --config FILE] --id KEY_ID")
	kf := addKeyringFlags(fs)
	id := fs.String("id", "", "key id to remove from the keyring")
	if err := parseFlags(fs, args, false); err != nil {
		return err
	}
	if *id == "" {
		return usagef("--id is required")
	}
	cfg, err := kf.resolve(env)
	if err != nil {
		return err
	}
	kr, err := storage.LoadKeyring(cfg.KeyringFile)
	if err != nil {
		return err
	}
	if err := kr.Retire(*id); err != nil {
		return err
	}
	if err := kr.Save(cfg.KeyringFile); err != nil {
		return err
	}
	fmt.Fprintf(env.stdout, "retired key %s\n", *id)
	return nil
}
