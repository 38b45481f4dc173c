package storage

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"maps"
	"slices"
	"time"

	"github.com/consilium/consilium/storage/internal/envelope"
)

// RewrapOptions modify [Rewrap].
type RewrapOptions struct {
	// Prefix limits the walk to names starting with it. Only a walk of
	// the whole store (no prefix) can show a key unused, so only such a
	// walk lets [Keyring.Retire] retire keys.
	Prefix string
	// Progress, when set, is called after each object is looked at.
	Progress func(RewrapProgress)
}

// RewrapProgress reports one object handled by [Rewrap].
type RewrapProgress struct {
	Name string
	// Action is "rewrapped", "current" (already wrapped by the active
	// key), "skipped" or "not-encrypted".
	Action string
	// Stats so far.
	Stats RewrapStats
}

// RewrapStats sums up a [Rewrap].
type RewrapStats struct {
	// Scanned counts every object listed.
	Scanned int
	// Rewrapped counts objects whose data key now has a new wrapping.
	Rewrapped int
	// Current counts objects already wrapped by the active key.
	Current int
	// NotEncrypted counts objects with no envelope (not written through
	// an Encrypted store); they are left alone.
	NotEncrypted int
	// Skipped lists the objects that could not be re-wrapped, and why.
	Skipped []RewrapSkip
	// Remaining counts, per old key id, the objects still wrapped by it
	// after the walk (the skipped ones). A key with no count here is
	// unused by the objects walked.
	Remaining map[string]int
}

// RewrapSkip is an object [Rewrap] could not re-wrap.
type RewrapSkip struct {
	Name  string
	KEKID string
	// Reason says why, e.g. "under retention".
	Reason string
}

// Rewrap walks every object of backend (the store under an [Encrypted],
// or the Encrypted itself) and re-wraps the data keys that the active KEK
// of kr does not wrap, without reading, decrypting or re-encrypting any
// object's data: only the envelope in the metadata changes, through the
// backend's [MetadataUpdater] (a server-side copy onto itself on MinIO,
// an atomic header rewrite on the filesystem). Each update is
// conditional on the ETag seen in the walk, so a concurrent Put is never
// undone.
//
// Objects under retention cannot be changed: they are skipped and
// reported in RewrapStats.Skipped and Remaining, and so are objects
// whose envelope names a key the keyring lacks or does not authenticate.
// When a walk of the whole store ends without error, every old key with
// no remaining object is marked drained in kr, which lets
// [Keyring.Retire] remove it; save the keyring afterwards.
//
// The error is the first one that stopped the walk (listing or updating);
// per-object problems are reported as skips instead.
func Rewrap(ctx context.Context, backend Store, kr *Keyring, opts RewrapOptions) (RewrapStats, error) {
	if enc, ok := backend.(*Encrypted); ok {
		backend = enc.Backend()
	}
	up, ok := backend.(MetadataUpdater)
	if !ok {
		return RewrapStats{}, fmt.Errorf("storage: rewrap: backend %T cannot update metadata", backend)
	}
	start := time.Now().UTC()
	activeAtStart := kr.ActiveID()
	stats := RewrapStats{Remaining: map[string]int{}}
	report := func(name, action string) {
		if opts.Progress != nil {
			s := stats
			s.Skipped = slices.Clone(stats.Skipped)
			s.Remaining = maps.Clone(stats.Remaining)
			opts.Progress(RewrapProgress{Name: name, Action: action, Stats: s})
		}
	}
	skip := func(name, kekID, reason string) {
		stats.Skipped = append(stats.Skipped, RewrapSkip{Name: name, KEKID: kekID, Reason: reason})
		if kekID != "" {
			stats.Remaining[kekID]++
		}
		report(name, "skipped")
	}
	for info, err := range backend.List(ctx, opts.Prefix) {
		if err != nil {
			return stats, fmt.Errorf("storage: rewrap: %w", err)
		}
		stats.Scanned++
		action, kekID, reason, err := rewrapOne(ctx, backend, up, kr, info)
		if err != nil {
			return stats, fmt.Errorf("storage: rewrap %s: %w", info.Name, err)
		}
		switch action {
		case "rewrapped":
			stats.Rewrapped++
		case "current":
			stats.Current++
		case "not-encrypted":
			stats.NotEncrypted++
		case "skipped":
			skip(info.Name, kekID, reason)
			continue
		}
		report(info.Name, action)
	}
	if opts.Prefix == "" {
		var unused []string
		for _, k := range kr.Keys() {
			if stats.Remaining[k.ID] == 0 {
				unused = append(unused, k.ID)
			}
		}
		kr.markDrained(unused, start, activeAtStart)
	}
	return stats, nil
}

// rewrapOne re-wraps one object. It retries when the object changed
// under it.
func rewrapOne(ctx context.Context, backend Store, up MetadataUpdater, kr *Keyring, info Info) (action, kekID, reason string, err error) {
	for attempt := 0; ; attempt++ {
		s, ok := info.Metadata[envelope.MetaKey]
		if !ok {
			return "not-encrypted", "", "", nil
		}
		env, err := envelope.Parse(s)
		if err != nil {
			return "skipped", "", "malformed envelope", nil
		}
		activeID, activeKEK := kr.activeKEK()
		if env.KEKID == activeID {
			return "current", "", "", nil
		}
		old, ok := kr.kek(env.KEKID)
		if !ok {
			return "skipped", env.KEKID, "key not in keyring", nil
		}
		dataKey, err := env.Unwrap(old, info.Name)
		if err != nil {
			return "skipped", env.KEKID, "wrapped key does not authenticate", nil
		}
		nenv, err := envelope.Wrap(rand.Reader, activeID, activeKEK, info.Name, env.Empty, dataKey)
		clear(dataKey)
		if err != nil {
			return "", "", "", err
		}
		meta := maps.Clone(info.Metadata)
		meta[envelope.MetaKey] = nenv.String()
		err = up.UpdateMetadata(ctx, info.Name, meta, info.ETag)
		switch {
		case err == nil:
			return "rewrapped", "", "", nil
		case errors.Is(err, ErrLocked):
			return "skipped", env.KEKID, "under retention", nil
		case errors.Is(err, ErrNotFound):
			return "current", "", "", nil // deleted since listed: nothing left to re-wrap
		case errors.Is(err, ErrPreconditionFailed) && attempt < 3:
			// Written since listed: look again.
			info, err = backend.Stat(ctx, info.Name)
			if errors.Is(err, ErrNotFound) {
				return "current", "", "", nil
			}
			if err != nil {
				return "", "", "", err
			}
		default:
			return "", "", "", err
		}
	}
}
