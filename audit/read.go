package audit

import (
	"context"
	"fmt"
	"iter"
	"time"

	"github.com/consilium/consilium/storage"
)

// Filter selects entries for [Log.Read]. Zero fields match everything.
type Filter struct {
	// From and To bound the entry time: From <= Time < To.
	From, To time.Time
	// Actor matches the actor's principal id.
	Actor string
	// Case matches the target case id.
	Case string
	// Patient matches the target patient pseudonym.
	Patient string
	// Action matches the action exactly.
	Action string
	// RequestID matches the request id.
	RequestID string
	// Limit stops after this many entries; 0 means no limit.
	Limit int
}

// Match reports whether e passes the filter.
func (f Filter) Match(e Entry) bool {
	switch {
	case !f.From.IsZero() && e.Time.Before(f.From),
		!f.To.IsZero() && !e.Time.Before(f.To),
		f.Actor != "" && e.Actor.ID != f.Actor,
		f.Case != "" && e.Target.Case != f.Case,
		f.Patient != "" && e.Target.Patient != f.Patient,
		f.Action != "" && e.Action != f.Action,
		f.RequestID != "" && e.RequestID != f.RequestID:
		return false
	}
	return true
}

// Read yields the entries that match f, in chain order, reading one
// segment at a time (memory stays bounded whatever the log's size).
// Segments whose time range lies outside [From, To) are skipped without
// being read. Read does not verify; use [Verify] for that.
func (l *Log) Read(ctx context.Context, f Filter) iter.Seq2[Entry, error] {
	return Read(ctx, l.store, l.cfg.Prefix, f)
}

// Read is [Log.Read] for a store without a running log.
func Read(ctx context.Context, src storage.Store, prefix string, f Filter) iter.Seq2[Entry, error] {
	return func(yield func(Entry, error) bool) {
		n := 0
		for info, err := range src.List(ctx, prefix+segmentDir) {
			if err != nil {
				yield(Entry{}, fmt.Errorf("audit: listing segments: %w", err))
				return
			}
			if _, ok := parseSegmentName(prefix, info.Name); !ok {
				continue
			}
			if lo, hi, ok := metaTimes(info.Metadata); ok {
				if !f.From.IsZero() && hi.Before(f.From) || !f.To.IsZero() && !lo.Before(f.To) {
					continue
				}
			}
			data, _, err := readObject(ctx, src, info.Name, maxSegmentBytes)
			if err != nil {
				yield(Entry{}, fmt.Errorf("audit: reading %s: %w", info.Name, err))
				return
			}
			for _, line := range splitLines(data) {
				e, err := decodeEntry(line)
				if err != nil {
					yield(Entry{}, fmt.Errorf("audit: %s: %w", info.Name, err))
					return
				}
				if !f.Match(e) {
					continue
				}
				if !yield(e, nil) {
					return
				}
				if n++; f.Limit > 0 && n >= f.Limit {
					return
				}
			}
		}
	}
}
