package audit

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"aead.dev/minisign"

	"github.com/consilium/consilium/storage"
)

// Defaults for [Config].
const (
	DefaultPrefix             = "audit/"
	DefaultMaxBatch           = 256
	DefaultCheckpointEvery    = 1000
	DefaultCheckpointInterval = time.Minute
	DefaultRetentionDays      = 2190 // six years, as HIPAA keeps documentation
	DefaultWriteTimeout       = 30 * time.Second
)

// Retention modes of [Config.RetentionMode].
const (
	RetentionGovernance = "governance"
	RetentionCompliance = "compliance"
	RetentionNone       = "none"
)

// Config is the audit section of the process configuration. Zero values
// take the documented defaults.
type Config struct {
	// Prefix is put before every object name of the log. Default "audit/".
	Prefix string `json:"prefix,omitempty"`
	// Source names this gateway instance in entries and checkpoints.
	// Default: the host name and a random suffix.
	Source string `json:"source,omitempty"`
	// MaxBatch is the most entries one segment (one PUT) holds; appends
	// waiting while a PUT is in flight are committed together. At most
	// [MaxBatchLimit]. Default 256.
	MaxBatch int `json:"max_batch,omitempty"`
	// CheckpointEvery writes a signed checkpoint after this many entries
	// of this instance. Default 1000.
	CheckpointEvery int `json:"checkpoint_every,omitempty"`
	// CheckpointInterval writes a signed checkpoint this often while the
	// chain grows. Default 1m.
	CheckpointInterval time.Duration `json:"checkpoint_interval,omitempty"`
	// RetentionMode is governance, compliance or none. Segments and
	// checkpoints are written under that retention (object lock on
	// MinIO, read-only files on the filesystem backend). Default none
	// here; `consilium serve` picks governance where the store has
	// retention.
	RetentionMode string `json:"retention_mode,omitempty"`
	// RetentionDays is how long retention lasts. Default 2190 (6 years).
	RetentionDays int `json:"retention_days,omitempty"`
	// WriteTimeout bounds one write to the store. Default 30s.
	WriteTimeout time.Duration `json:"write_timeout,omitempty"`
}

func (c Config) withDefaults() Config {
	if c.Prefix == "" {
		c.Prefix = DefaultPrefix
	}
	if c.Source == "" {
		host, _ := os.Hostname()
		var b [3]byte
		_, _ = rand.Read(b[:])
		c.Source = sanitizeSource(host) + "-" + hex.EncodeToString(b[:])
	}
	if c.MaxBatch == 0 {
		c.MaxBatch = DefaultMaxBatch
	}
	if c.CheckpointEvery == 0 {
		c.CheckpointEvery = DefaultCheckpointEvery
	}
	if c.CheckpointInterval == 0 {
		c.CheckpointInterval = DefaultCheckpointInterval
	}
	if c.RetentionMode == "" {
		c.RetentionMode = RetentionNone
	}
	if c.RetentionDays == 0 {
		c.RetentionDays = DefaultRetentionDays
	}
	if c.WriteTimeout == 0 {
		c.WriteTimeout = DefaultWriteTimeout
	}
	return c
}

func sanitizeSource(s string) string {
	s = strings.Map(func(r rune) rune {
		if r < 0x80 && isToken(string(r)) {
			return r
		}
		return '-'
	}, s)
	if len(s) > 64 {
		s = s[:64]
	}
	if s == "" {
		s = "gateway"
	}
	return s
}

// Validate reports the first invalid setting.
func (c Config) Validate() error {
	c = c.withDefaults()
	switch {
	case !strings.HasSuffix(c.Prefix, "/") || storage.ValidName(strings.TrimSuffix(c.Prefix, "/")) != nil:
		return fmt.Errorf("audit: prefix %q must be a valid object name followed by '/'", c.Prefix)
	case !isToken(c.Source) || c.Source == "":
		return fmt.Errorf("audit: source %q must be a short token of [A-Za-z0-9._:/-]", c.Source)
	case c.MaxBatch < 1 || c.MaxBatch > MaxBatchLimit:
		return fmt.Errorf("audit: max batch %d must be 1 to %d", c.MaxBatch, MaxBatchLimit)
	case c.CheckpointEvery < 1:
		return errors.New("audit: checkpoint_every must be positive")
	case c.CheckpointInterval < 0 || c.WriteTimeout < 0:
		return errors.New("audit: durations must not be negative")
	case c.RetentionDays < 1:
		return errors.New("audit: retention days must be positive")
	}
	switch c.RetentionMode {
	case RetentionGovernance, RetentionCompliance, RetentionNone:
	default:
		return fmt.Errorf("audit: retention mode %q is not governance, compliance or none", c.RetentionMode)
	}
	return nil
}

// Options are the log's collaborators.
type Options struct {
	// Store holds the log. Use the raw backend, not the encrypted store:
	// entries hold pseudonyms only, and verification then needs nothing
	// but the store and the public key. Required.
	Store storage.Store
	// Signer signs checkpoints (the gateway's minisign key). Required.
	Signer minisign.PrivateKey
	// Logger receives operational messages (never entries). Default: discard.
	Logger *slog.Logger
	// Now is the clock. Default time.Now.
	Now func() time.Time
}

// ErrClosed is returned by [Log.Record] after [Log.Close].
var ErrClosed = errors.New("audit: log is closed")

// Head is the last entry of the chain that a [Log] knows of.
type Head struct {
	// Seq is the entry's sequence number, 0 for an empty log.
	Seq uint64 `json:"seq"`
	// Hash is the entry's hash ([GenesisHash] for an empty log).
	Hash string `json:"hash"`
	// Segment is the name of the segment holding it.
	Segment string `json:"segment,omitempty"`
}

// Log appends entries to the audit chain in a store. It is safe for
// concurrent use, also by several processes (gateway instances) sharing
// one store: see the package documentation for how they agree on one
// chain. Build it with [Open]; stop it with [Close].
type Log struct {
	cfg    Config
	store  storage.Store
	signer minisign.PrivateKey
	pub    minisign.PublicKey
	log    *slog.Logger
	now    func() time.Time

	reqs chan *pending
	quit chan struct{}
	done chan struct{}
	once sync.Once

	mu    sync.Mutex
	head  Head
	stats Stats

	// Owned by the committer goroutine.
	carry            *pending // taken from reqs but left for the next batch
	sinceCheckpoint  int
	checkpointedSeq  uint64
	lastCheckpointAt time.Time
}

// Stats are counters of a [Log], for metrics.
type Stats struct {
	// Appended counts entries this instance made durable.
	Appended uint64
	// Segments counts segments this instance wrote.
	Segments uint64
	// Conflicts counts sequence numbers another instance took first.
	Conflicts uint64
	// Failed counts entries whose append failed.
	Failed uint64
	// Checkpoints counts checkpoints this instance wrote.
	Checkpoints uint64
}

// pending is one call of RecordAll waiting for its commit.
type pending struct {
	entries []Entry
	done    chan error
}

// Open finds the head of the log in opts.Store (from the newest
// checkpoint forwards) and starts the committer. Close it when done.
func Open(ctx context.Context, cfg Config, opts Options) (*Log, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if opts.Store == nil {
		return nil, errors.New("audit: a store is required")
	}
	pub, ok := opts.Signer.Public().(minisign.PublicKey)
	if !ok || opts.Signer.ID() == 0 {
		return nil, errors.New("audit: a signing key is required")
	}
	l := &Log{
		cfg:    cfg.withDefaults(),
		store:  opts.Store,
		signer: opts.Signer,
		pub:    pub,
		log:    opts.Logger,
		now:    opts.Now,
		reqs:   make(chan *pending),
		quit:   make(chan struct{}),
		done:   make(chan struct{}),
	}
	if l.log == nil {
		l.log = slog.New(slog.DiscardHandler)
	}
	l.log = l.log.With("component", "audit")
	if l.now == nil {
		l.now = time.Now
	}
	start, err := l.newestCheckpoint(ctx)
	if err != nil {
		return nil, err
	}
	head, err := l.findHead(ctx, start)
	if err != nil {
		return nil, err
	}
	l.head = head
	l.checkpointedSeq = start.Seq
	l.lastCheckpointAt = l.now()
	l.log.Info("audit log open", "source", l.cfg.Source, "head_seq", head.Seq, "checkpoint_seq", start.Seq)
	go l.run()
	return l, nil
}

// Source returns the name of this instance in entries.
func (l *Log) Source() string { return l.cfg.Source }

// PublicKey returns the key checkpoints verify with.
func (l *Log) PublicKey() minisign.PublicKey { return l.pub }

// Store returns the store the log lives in.
func (l *Log) Store() storage.Store { return l.store }

// Prefix returns the prefix of the log's object names.
func (l *Log) Prefix() string { return l.cfg.Prefix }

// Head returns the last entry this instance knows to be in the chain.
func (l *Log) Head() Head {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.head
}

// Stats returns the log's counters.
func (l *Log) Stats() Stats {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.stats
}

// Record appends e to the chain and returns once it is durable in the
// store (the store's Put returned), with Seq, Time, Source, Prev and Hash
// filled in. An error means the entry may not have been recorded: the
// caller must then refuse the operation it was recording (fail closed).
// A cancelled ctx returns early with ctx's error; the entry may still be
// recorded. Returns [ErrInvalidEntry] or [ErrClosed].
//
// Concurrent Records are committed together, many entries per write
// (group commit), so the rate of durable appends is not bound by the
// store's latency.
func (l *Log) Record(ctx context.Context, e Entry) (Entry, error) {
	out, err := l.RecordAll(ctx, []Entry{e})
	if err != nil {
		return Entry{}, err
	}
	return out[0], nil
}

// RecordAll appends entries as consecutive entries of one segment (so
// that they are durable together or not at all), as [Log.Record] does
// for one. It accepts at most MaxBatch entries.
func (l *Log) RecordAll(ctx context.Context, entries []Entry) ([]Entry, error) {
	if len(entries) == 0 || len(entries) > l.cfg.MaxBatch {
		return nil, fmt.Errorf("%w: %d entries at once, want 1 to %d", ErrInvalidEntry, len(entries), l.cfg.MaxBatch)
	}
	p := &pending{entries: slices.Clone(entries), done: make(chan error, 1)}
	now := l.now()
	for i := range p.entries {
		e := &p.entries[i]
		if e.Time.IsZero() {
			e.Time = now
		}
		e.Time = e.Time.UTC()
		e.Source = l.cfg.Source
		if err := e.validate(); err != nil {
			return nil, err
		}
		// Sealing a copy now finds an oversized entry before it could
		// fail the batch it would join.
		probe := *e
		if _, err := probe.seal(1, GenesisHash); err != nil {
			return nil, err
		}
	}
	select {
	case l.reqs <- p:
	case <-l.quit:
		return nil, ErrClosed
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	select {
	case err := <-p.done:
		if err != nil {
			return nil, err
		}
		return p.entries, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// Close commits what is queued, writes a final checkpoint and stops the
// committer. Records after Close fail with [ErrClosed].
func (l *Log) Close() error {
	l.once.Do(func() { close(l.quit) })
	<-l.done
	return nil
}

// run is the committer: it takes the appends waiting at once, commits
// them as one segment, and writes checkpoints.
func (l *Log) run() {
	defer close(l.done)
	tick := time.NewTicker(l.cfg.CheckpointInterval)
	defer tick.Stop()
	for {
		if p := l.carry; p != nil {
			l.carry = nil
			l.commit(l.gather(p))
			continue
		}
		select {
		case p := <-l.reqs:
			l.commit(l.gather(p))
		case <-tick.C:
			l.checkpoint(false)
		case <-l.quit:
			for {
				p := l.carry
				l.carry = nil
				if p == nil {
					select {
					case p = <-l.reqs:
					default:
					}
				}
				if p == nil {
					break
				}
				l.commit(l.gather(p))
			}
			l.checkpoint(false)
			return
		}
	}
}

// gather adds to first the appends already waiting, up to MaxBatch
// entries. An append that would overflow the batch waits for the next.
func (l *Log) gather(first *pending) []*pending {
	batch, n := []*pending{first}, len(first.entries)
	for n < l.cfg.MaxBatch {
		select {
		case p := <-l.reqs:
			if n+len(p.entries) > l.cfg.MaxBatch {
				l.carry = p
				return batch
			}
			batch, n = append(batch, p), n+len(p.entries)
		default:
			return batch
		}
	}
	return batch
}

// maxAttempts bounds how often one batch is re-sequenced after other
// instances took its sequence numbers. Each conflict means another
// instance made progress, so the chain as a whole never stalls.
const maxAttempts = 64

// commit makes one batch durable as one segment.
func (l *Log) commit(batch []*pending) {
	n := 0
	for _, p := range batch {
		n += len(p.entries)
	}
	err := l.commitBatch(batch, n)
	l.mu.Lock()
	if err != nil {
		l.stats.Failed += uint64(n)
	} else {
		l.stats.Appended += uint64(n)
		l.stats.Segments++
	}
	l.mu.Unlock()
	if err != nil {
		l.log.Error("audit append failed", "entries", n, "err", err.Error())
	}
	for _, p := range batch {
		p.done <- err
	}
	if err == nil {
		l.sinceCheckpoint += n
		if l.sinceCheckpoint >= l.cfg.CheckpointEvery {
			l.checkpoint(true)
		}
	}
}

func (l *Log) commitBatch(batch []*pending, n int) error {
	head := l.Head()
	for attempt := 0; attempt < maxAttempts; attempt++ {
		entries := make([]Entry, 0, n)
		var buf bytes.Buffer
		prev := head.Hash
		for _, p := range batch {
			for _, e := range p.entries {
				line, err := e.seal(head.Seq+1+uint64(len(entries)), prev)
				if err != nil {
					return err
				}
				buf.Write(line)
				buf.WriteByte('\n')
				entries, prev = append(entries, e), e.Hash
			}
		}
		name := segmentName(l.cfg.Prefix, head.Seq+1)
		err := l.put(name, buf.Bytes(), segmentMeta(entries), "application/x-ndjson")
		if err == nil {
			i := 0
			for _, p := range batch {
				i += copy(p.entries, entries[i:])
			}
			last := entries[len(entries)-1]
			l.mu.Lock()
			l.head = Head{Seq: last.Seq, Hash: last.Hash, Segment: name}
			l.mu.Unlock()
			return nil
		}
		if !errors.Is(err, storage.ErrExists) {
			return fmt.Errorf("audit: writing segment %s: %w", name, err)
		}
		// Another instance took these sequence numbers: move to the
		// chain's new head and sequence the batch again.
		l.mu.Lock()
		l.stats.Conflicts++
		l.mu.Unlock()
		ctx, cancel := context.WithTimeout(context.Background(), l.cfg.WriteTimeout)
		next, err := l.findHead(ctx, head)
		cancel()
		if err != nil {
			return fmt.Errorf("audit: finding the head after a conflict at %s: %w", name, err)
		}
		if next.Seq <= head.Seq {
			return fmt.Errorf("audit: %s exists but the head did not move past seq %d", name, head.Seq)
		}
		head = next
		l.mu.Lock()
		l.head = head
		l.mu.Unlock()
	}
	return fmt.Errorf("audit: gave up after %d sequence conflicts", maxAttempts)
}

// put writes a new object create-if-absent under retention. When the
// store reports a failure (including ErrExists), it reads the name back:
// if it holds exactly data, an earlier attempt (or a retry inside the
// client) wrote it, and the write counts as done.
func (l *Log) put(name string, data []byte, meta map[string]string, contentType string) error {
	ctx, cancel := context.WithTimeout(context.Background(), l.cfg.WriteTimeout)
	defer cancel()
	opts := storage.PutOptions{
		Size: int64(len(data)), IfAbsent: true, ContentType: contentType, Metadata: meta,
	}
	if l.cfg.RetentionMode != RetentionNone {
		mode := storage.Governance
		if l.cfg.RetentionMode == RetentionCompliance {
			mode = storage.Compliance
		}
		opts.Retention = &storage.Retention{Mode: mode, Until: l.now().AddDate(0, 0, l.cfg.RetentionDays)}
	}
	_, err := l.store.Put(ctx, name, bytes.NewReader(data), opts)
	if err == nil {
		return nil
	}
	got, _, rerr := readObject(ctx, l.store, name, int64(len(data)))
	if rerr == nil && bytes.Equal(got, data) {
		return nil
	}
	return err
}

// newestCheckpoint returns the position the newest valid checkpoint
// commits to, or the genesis position when there is none.
func (l *Log) newestCheckpoint(ctx context.Context) (Head, error) {
	genesis := Head{Hash: GenesisHash}
	for info, err := range l.store.List(ctx, l.cfg.Prefix+checkpointDir) {
		if err != nil {
			return Head{}, fmt.Errorf("audit: listing checkpoints: %w", err)
		}
		if _, ok := parseCheckpointName(l.cfg.Prefix, info.Name); !ok {
			continue
		}
		data, _, err := readObject(ctx, l.store, info.Name, 4096)
		if err != nil {
			return Head{}, fmt.Errorf("audit: reading checkpoint: %w", err)
		}
		c, err := parseCheckpoint(l.pub, data)
		if err != nil {
			// Not ours, or damaged: start from the beginning rather
			// than trust it. Verification reports it.
			l.log.Warn("ignoring the newest checkpoint", "object", info.Name, "err", err.Error())
			return genesis, nil
		}
		return Head{Seq: c.Seq, Hash: c.Hash, Segment: c.Segment}, nil
	}
	return genesis, nil
}

// findHead returns the last entry of the chain at or after from: it
// lists the segment groups from from's group on while they hold
// segments, and reads the last entry of the last segment.
func (l *Log) findHead(ctx context.Context, from Head) (Head, error) {
	last, lastFirst := "", uint64(0)
	for g := (from.Seq + 1) / groupSize; ; g++ {
		found := false
		for info, err := range l.store.List(ctx, groupPrefix(l.cfg.Prefix, g)) {
			if err != nil {
				return Head{}, fmt.Errorf("audit: listing segments: %w", err)
			}
			first, ok := parseSegmentName(l.cfg.Prefix, info.Name)
			if !ok {
				continue
			}
			found = true
			if first > from.Seq && first > lastFirst {
				last, lastFirst = info.Name, first
			}
		}
		if !found {
			break
		}
	}
	if last == "" {
		return from, nil
	}
	data, _, err := readObject(ctx, l.store, last, maxSegmentBytes)
	if err != nil {
		return Head{}, err
	}
	e, err := lastEntry(data)
	if err != nil {
		return Head{}, fmt.Errorf("audit: head segment %s: %w", last, err)
	}
	return Head{Seq: e.Seq, Hash: e.Hash, Segment: last}, nil
}

// checkpoint signs and writes a checkpoint of the head if it moved since
// the last one (and, unless force, the interval has passed).
func (l *Log) checkpoint(force bool) {
	head := l.Head()
	if head.Seq == 0 || head.Seq <= l.checkpointedSeq {
		return
	}
	if !force && l.now().Sub(l.lastCheckpointAt) < l.cfg.CheckpointInterval && l.sinceCheckpoint < l.cfg.CheckpointEvery {
		select {
		case <-l.quit:
		default:
			return
		}
	}
	c := Checkpoint{
		V: FormatVersion, Type: CheckpointType, Seq: head.Seq, Hash: head.Hash,
		Segment: head.Segment, Time: l.now().UTC(), Source: l.cfg.Source,
	}
	data, err := signCheckpoint(l.signer, c)
	if err == nil {
		err = l.put(checkpointName(l.cfg.Prefix, head.Seq), data, nil, "text/plain; charset=utf-8")
	}
	if err != nil && !errors.Is(err, storage.ErrExists) {
		l.log.Warn("audit checkpoint failed; retrying later", "seq", head.Seq, "err", err.Error())
		return
	}
	l.checkpointedSeq, l.sinceCheckpoint, l.lastCheckpointAt = head.Seq, 0, l.now()
	l.mu.Lock()
	l.stats.Checkpoints++
	l.mu.Unlock()
	// The operations log is a second, independent witness of the head.
	l.log.Info("audit checkpoint", "seq", head.Seq, "hash", head.Hash)
}
