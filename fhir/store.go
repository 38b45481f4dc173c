package fhir

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"runtime"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/consilium/consilium/storage"
)

// Defaults for [StoreOptions].
const (
	DefaultCheckpointEvery = 64
	DefaultMaxLineBytes    = 16 << 20
	// commitAttempts bounds how often a commit is re-planned when other
	// writers keep winning the head swap.
	commitAttempts = 16
	// commitTimeout bounds a commit once it has started writing: it runs
	// detached from the request, so that a client that goes away after
	// the body has been read leaves a known outcome, not a half-made one.
	commitTimeout = 2 * time.Minute
	maxHeadBytes  = 16 << 20
)

// StoreOptions configure a [Store].
type StoreOptions struct {
	// Names returns a keyed hash of value for object names
	// (storage.Keyring.NameHash). Required: organisation names and
	// resource ids never appear in object names.
	Names func(kind, value string) string
	// Logger receives operational messages (never patient data).
	// Default: discard.
	Logger *slog.Logger
	// Workers is how many resources are parsed at once. Default
	// runtime.GOMAXPROCS(0).
	Workers int
	// CheckpointEvery is how many committed segments an organisation's
	// head lists before their indexes are merged into a checkpoint.
	// Default 64.
	CheckpointEvery int
	// MaxLineBytes bounds one NDJSON line. Default 16 MiB.
	MaxLineBytes int
	// Now is the clock (meta.lastUpdated). Default time.Now.
	Now func() time.Time
}

// Store keeps FHIR R4 resources per organisation, versioned, linked to
// their patients, in an object store (which should be storage.Encrypted:
// the objects hold patient data in full). Several Stores (gateway
// instances) may share one object store: commits are compare-and-swaps of
// a per-organisation head object, retried on conflict, so no update is
// lost. It is safe for concurrent use.
//
// Reads and searches see every commit made before they start, from any
// instance (each request checks the head's ETag). The index of each
// organisation an instance has served is kept in memory.
type Store struct {
	s       storage.Store
	names   func(kind, value string) string
	log     *slog.Logger
	parser  *Parser
	workers int
	every   int
	maxLine int
	now     func() time.Time

	mu   sync.Mutex
	orgs map[string]*orgState
}

// orgState is one organisation's loaded index.
type orgState struct {
	org    string
	prefix string // "fhir/<hash>/"

	// wmu serialises loading and committing within this instance.
	wmu sync.Mutex
	// mu guards the fields below against readers while wmu's holder
	// changes them.
	mu     sync.RWMutex
	loaded bool
	etag   string
	head   headFile
	st     *state
}

// NewStore returns a Store over s.
func NewStore(s storage.Store, opts StoreOptions) (*Store, error) {
	if s == nil || opts.Names == nil {
		return nil, errors.New("fhir: a store and a name hasher are required")
	}
	p, err := NewParser()
	if err != nil {
		return nil, err
	}
	st := &Store{
		s: s, names: opts.Names, log: opts.Logger, parser: p, workers: opts.Workers,
		every: opts.CheckpointEvery, maxLine: opts.MaxLineBytes, now: opts.Now,
		orgs: map[string]*orgState{},
	}
	if st.log == nil {
		st.log = slog.New(slog.DiscardHandler)
	}
	st.log = st.log.With("component", "fhir")
	if st.workers <= 0 {
		st.workers = runtime.GOMAXPROCS(0)
	}
	if st.every <= 0 {
		st.every = DefaultCheckpointEvery
	}
	if st.maxLine <= 0 {
		st.maxLine = DefaultMaxLineBytes
	}
	if st.now == nil {
		st.now = time.Now
	}
	return st, nil
}

// Parser returns the Store's parser.
func (s *Store) Parser() *Parser { return s.parser }

func (s *Store) org(org string) (*orgState, error) {
	if org == "" {
		return nil, errors.New("fhir: an organisation is required")
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	o := s.orgs[org]
	if o == nil {
		o = &orgState{org: org, prefix: "fhir/" + s.names("fhir-org", org) + "/", st: newState()}
		s.orgs[org] = o
	}
	return o, nil
}

func (o *orgState) headName() string { return o.prefix + "head" }

// fresh makes o reflect the stored head as of now.
func (s *Store) fresh(ctx context.Context, o *orgState) error {
	etag, err := s.headETag(ctx, o)
	if err != nil {
		return err
	}
	o.mu.RLock()
	ok := o.loaded && o.etag == etag
	o.mu.RUnlock()
	if ok {
		return nil
	}
	o.wmu.Lock()
	defer o.wmu.Unlock()
	return s.loadLocked(ctx, o)
}

// headETag returns the stored head's ETag, "" when there is none.
func (s *Store) headETag(ctx context.Context, o *orgState) (string, error) {
	info, err := s.s.Stat(ctx, o.headName())
	switch {
	case errors.Is(err, storage.ErrNotFound):
		return "", nil
	case err != nil:
		return "", fmt.Errorf("fhir: read head: %w", err)
	}
	return info.ETag, nil
}

// loadLocked brings o up to date with the stored head. The caller holds
// o.wmu.
func (s *Store) loadLocked(ctx context.Context, o *orgState) error {
	var err error
	for range 8 {
		if err = s.loadOnce(ctx, o); !errors.Is(err, errStale) {
			return err
		}
	}
	return err
}

func (s *Store) loadOnce(ctx context.Context, o *orgState) error {
	etag, err := s.headETag(ctx, o)
	if err != nil {
		return err
	}
	if o.loaded && etag == o.etag {
		return nil
	}
	if etag == "" {
		if o.loaded && o.etag != "" {
			return fmt.Errorf("fhir: the head of an organisation disappeared from the store")
		}
		o.mu.Lock()
		o.loaded, o.st, o.head = true, newState(), headFile{V: 1}
		o.mu.Unlock()
		return nil
	}
	rc, info, err := s.s.Get(ctx, o.headName(), storage.GetOptions{})
	if errors.Is(err, storage.ErrNotFound) {
		return errStale
	}
	if err != nil {
		return fmt.Errorf("fhir: read head: %w", err)
	}
	raw, err := io.ReadAll(io.LimitReader(rc, maxHeadBytes))
	rc.Close()
	if err != nil {
		return fmt.Errorf("fhir: read head: %w", err)
	}
	var h headFile
	if err := json.Unmarshal(raw, &h); err != nil || h.V != 1 {
		return fmt.Errorf("fhir: head of an organisation is damaged")
	}
	if o.loaded && h.Ckpt == o.head.Ckpt && len(h.Segs) >= len(o.head.Segs) && slices.Equal(h.Segs[:len(o.head.Segs)], o.head.Segs) {
		// The usual case: a few more segments after the ones we have.
		segs, err := s.readSegments(ctx, h.Segs[len(o.head.Segs):])
		if err != nil {
			return err
		}
		o.mu.Lock()
		for _, sg := range segs {
			o.st.applySegment(sg.name, sg.idx, sg.base)
		}
		o.head, o.etag = h, info.ETag
		o.mu.Unlock()
		return nil
	}
	st := newState()
	if h.Ckpt != "" {
		c, err := s.readCheckpoint(ctx, h.Ckpt)
		if err != nil {
			return err
		}
		var ok bool
		if st, ok = stateFromCheckpoint(c); !ok {
			return fmt.Errorf("fhir: checkpoint of an organisation is damaged")
		}
	}
	segs, err := s.readSegments(ctx, h.Segs)
	if err != nil {
		return err
	}
	for _, sg := range segs {
		st.applySegment(sg.name, sg.idx, sg.base)
	}
	o.mu.Lock()
	o.st, o.head, o.etag, o.loaded = st, h, info.ETag, true
	o.mu.Unlock()
	return nil
}

// stagedSeg is a written segment and its index.
type stagedSeg struct {
	name string
	idx  segIndex
	base int64
}

func (s *Store) readSegments(ctx context.Context, names []string) ([]stagedSeg, error) {
	out := make([]stagedSeg, len(names))
	for i, n := range names {
		idx, base, err := readSegIndex(ctx, s.s, n)
		if errors.Is(err, storage.ErrNotFound) {
			return nil, errStale
		}
		if err != nil {
			return nil, err
		}
		out[i] = stagedSeg{name: n, idx: idx, base: base}
	}
	return out, nil
}

func (s *Store) readCheckpoint(ctx context.Context, name string) (*ckptFile, error) {
	rc, _, err := s.s.Get(ctx, name, storage.GetOptions{})
	if errors.Is(err, storage.ErrNotFound) {
		return nil, errStale
	}
	if err != nil {
		return nil, fmt.Errorf("fhir: read checkpoint: %w", err)
	}
	defer rc.Close()
	var c ckptFile
	dec := json.NewDecoder(io.LimitReader(rc, maxIndexBytes))
	if err := dec.Decode(&c); err != nil || c.V != 1 {
		return nil, fmt.Errorf("fhir: checkpoint of an organisation is damaged: %v", err)
	}
	return &c, nil
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b) // crypto/rand.Read never fails on supported platforms
	return hex.EncodeToString(b)
}

func (s *Store) newSegName(o *orgState) string {
	return fmt.Sprintf("%sseg/%020d-%s", o.prefix, s.now().UnixNano(), randomHex(8))
}

// writeSeg stores a segment under a new name. Nothing refers to it until
// a head swap lists it.
func (s *Store) writeSeg(ctx context.Context, o *orgState, b *segBuilder) (stagedSeg, error) {
	r, size, err := b.reader()
	if err != nil {
		return stagedSeg{}, err
	}
	name := s.newSegName(o)
	if _, err := s.s.Put(ctx, name, r, storage.PutOptions{Size: size, IfAbsent: true, ContentType: "application/octet-stream"}); err != nil {
		return stagedSeg{}, fmt.Errorf("fhir: write segment: %w", err)
	}
	return stagedSeg{name: name, idx: b.idx, base: size - int64(len(b.body))}, nil
}

// discard deletes segments that no head lists, best effort: a leftover is
// invisible and Sweep removes it later.
func (s *Store) discard(segs []stagedSeg) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, sg := range segs {
		if err := s.s.Delete(ctx, sg.name); err != nil && !errors.Is(err, storage.ErrNotFound) {
			s.log.Warn("could not delete an uncommitted segment; Sweep will", "err", err.Error())
		}
	}
}

// swapHead makes segs visible with one compare-and-swap of the head. The
// caller holds o.wmu and o is loaded. It returns false (and no error) when
// another writer changed the head first; then nothing of segs is visible.
func (s *Store) swapHead(ctx context.Context, o *orgState, segs []stagedSeg) (bool, error) {
	if o.etag == "" {
		if err := s.registerOrg(ctx, o.org); err != nil {
			return false, err
		}
	}
	nh := headFile{V: 1, Seq: o.head.Seq + 1, Ckpt: o.head.Ckpt, Segs: slices.Clone(o.head.Segs)}
	for _, sg := range segs {
		nh.Segs = append(nh.Segs, sg.name)
	}
	data, err := json.Marshal(nh)
	if err != nil {
		return false, err
	}
	opts := storage.PutOptions{Size: int64(len(data)), ContentType: "application/json"}
	if o.etag == "" {
		opts.IfAbsent = true
	} else {
		opts.IfMatch = o.etag
	}
	info, err := s.s.Put(ctx, o.headName(), bytes.NewReader(data), opts)
	switch {
	case errors.Is(err, storage.ErrPreconditionFailed), errors.Is(err, storage.ErrExists):
		return false, nil
	case err != nil:
		// The swap may or may not have happened (a lost answer), and a
		// request still in flight may land later: look, and when the
		// segments are not listed leave them in place (Sweep removes
		// them once they are old) rather than risk deleting what a late
		// swap makes visible.
		if lerr := s.loadLocked(ctx, o); lerr == nil {
			o.mu.RLock()
			committed := slices.Contains(o.head.Segs, segs[0].name) || o.st.segs[segs[0].name] > 0
			o.mu.RUnlock()
			if committed {
				return true, nil
			}
		}
		return false, &ambiguousError{err: err}
	}
	o.mu.Lock()
	for _, sg := range segs {
		o.st.applySegment(sg.name, sg.idx, sg.base)
	}
	o.head, o.etag = nh, info.ETag
	o.mu.Unlock()
	return true, nil
}

// ambiguousError is a commit whose outcome could not be established; its
// segment must not be deleted.
type ambiguousError struct{ err error }

func (e *ambiguousError) Error() string {
	return "fhir: commit outcome unknown (the store did not answer): " + e.err.Error()
}
func (e *ambiguousError) Unwrap() error { return e.err }

// commit plans and commits one segment: build is called with the fresh
// state (and again after losing a race) and returns the segment to write,
// or nil when there is nothing to write; after is called with the state
// once the segment is visible. The caller's context bounds planning; the
// writes run to their end on a detached context.
func (s *Store) commit(ctx context.Context, org string, build func(st *state) (*segBuilder, error), after func(st *state, seg string)) error {
	o, err := s.org(org)
	if err != nil {
		return err
	}
	o.wmu.Lock()
	defer o.wmu.Unlock()
	for range commitAttempts {
		if err := ctx.Err(); err != nil {
			return err
		}
		if err := s.loadLocked(ctx, o); err != nil {
			return err
		}
		b, err := build(o.st)
		if err != nil {
			return err
		}
		if b == nil || b.empty() {
			after(o.st, "")
			return nil
		}
		wctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), commitTimeout)
		sg, err := s.writeSeg(wctx, o, b)
		if err != nil {
			cancel()
			return err
		}
		ok, err := s.swapHead(wctx, o, []stagedSeg{sg})
		if err != nil {
			var amb *ambiguousError
			if !errors.As(err, &amb) {
				s.discard([]stagedSeg{sg})
			}
			cancel()
			return err
		}
		if !ok {
			cancel()
			s.discard([]stagedSeg{sg})
			continue
		}
		after(o.st, sg.name)
		s.maybeCheckpoint(wctx, o)
		cancel()
		return nil
	}
	return newError(ErrConflict, CodeConflict, "", "other writers kept changing this organisation's records; retry")
}

// commitStaged makes already written segments visible together, after
// check accepts the fresh state.
func (s *Store) commitStaged(ctx context.Context, org string, segs []stagedSeg, after func(st *state)) error {
	o, err := s.org(org)
	if err != nil {
		return err
	}
	o.wmu.Lock()
	defer o.wmu.Unlock()
	wctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), commitTimeout)
	defer cancel()
	for range commitAttempts {
		if err := s.loadLocked(wctx, o); err != nil {
			return err
		}
		ok, err := s.swapHead(wctx, o, segs)
		if err != nil {
			return err
		}
		if ok {
			after(o.st)
			s.maybeCheckpoint(wctx, o)
			return nil
		}
	}
	return newError(ErrConflict, CodeConflict, "", "other writers kept changing this organisation's records; retry")
}

// maybeCheckpoint merges the head's segment indexes into a checkpoint once
// there are enough of them. Failure is harmless: the next commit tries
// again. The caller holds o.wmu.
func (s *Store) maybeCheckpoint(ctx context.Context, o *orgState) {
	if len(o.head.Segs) < s.every {
		return
	}
	c := o.st.checkpoint(o.head.Seq)
	data, err := json.Marshal(c)
	if err != nil {
		s.log.Warn("checkpoint not written", "err", err.Error())
		return
	}
	name := fmt.Sprintf("%sckpt/%020d-%s", o.prefix, o.head.Seq, randomHex(8))
	if _, err := s.s.Put(ctx, name, bytes.NewReader(data), storage.PutOptions{Size: int64(len(data)), IfAbsent: true, ContentType: "application/json"}); err != nil {
		s.log.Warn("checkpoint not written", "err", err.Error())
		return
	}
	nh := headFile{V: 1, Seq: o.head.Seq, Ckpt: name, Segs: []string{}}
	hd, _ := json.Marshal(nh)
	info, err := s.s.Put(ctx, o.headName(), bytes.NewReader(hd), storage.PutOptions{Size: int64(len(hd)), IfMatch: o.etag, ContentType: "application/json"})
	if err != nil {
		_ = s.s.Delete(ctx, name)
		if !errors.Is(err, storage.ErrPreconditionFailed) {
			s.log.Warn("checkpoint not installed", "err", err.Error())
		}
		return
	}
	o.mu.Lock()
	o.head, o.etag = nh, info.ETag
	o.mu.Unlock()
	// Keep the previous checkpoint for readers that loaded the old head a
	// moment ago; delete older ones.
	var old []string
	for info, err := range s.s.List(ctx, o.prefix+"ckpt/") {
		if err != nil {
			return
		}
		old = append(old, info.Name)
	}
	slices.Sort(old)
	for i := 0; i+2 < len(old); i++ {
		if old[i] != name {
			_ = s.s.Delete(ctx, old[i])
		}
	}
}

// Sweep deletes the segments of org that no commit refers to and that are
// older than minAge: what commits left behind when their process died
// between writing a segment and swapping the head. minAge must exceed the
// longest upload (an NDJSON load stages segments for as long as the
// upload lasts); a day is safe. It returns how many it deleted.
func (s *Store) Sweep(ctx context.Context, org string, minAge time.Duration) (int, error) {
	o, err := s.org(org)
	if err != nil {
		return 0, err
	}
	if err := s.fresh(ctx, o); err != nil {
		return 0, err
	}
	cutoff := s.now().Add(-minAge).UnixNano()
	var names []string
	for info, err := range s.s.List(ctx, o.prefix+"seg/") {
		if err != nil {
			return 0, fmt.Errorf("fhir: sweep: %w", err)
		}
		names = append(names, info.Name)
	}
	o.mu.RLock()
	var dead []string
	for _, n := range names {
		if _, used := o.st.segs[n]; used || slices.Contains(o.head.Segs, n) {
			continue
		}
		var ts int64
		base := n[strings.LastIndexByte(n, '/')+1:]
		if _, err := fmt.Sscanf(base, "%d-", &ts); err != nil || ts > cutoff {
			continue
		}
		dead = append(dead, n)
	}
	o.mu.RUnlock()
	for _, n := range dead {
		if err := s.s.Delete(ctx, n); err != nil && !errors.Is(err, storage.ErrNotFound) {
			return 0, fmt.Errorf("fhir: sweep: %w", err)
		}
	}
	return len(dead), nil
}

// orgsObject lists the organisations that hold FHIR data.
const orgsObject = "fhir/orgs"

type orgsFile struct {
	Orgs []string `json:"orgs"`
}

// registerOrg adds org to the list of organisations (before its first
// commit; an organisation listed without data is harmless).
func (s *Store) registerOrg(ctx context.Context, org string) error {
	for range commitAttempts {
		list, etag, err := s.readOrgs(ctx)
		if err != nil {
			return err
		}
		if slices.Contains(list, org) {
			return nil
		}
		list = append(list, org)
		slices.Sort(list)
		data, _ := json.Marshal(orgsFile{Orgs: list})
		opts := storage.PutOptions{Size: int64(len(data)), ContentType: "application/json"}
		if etag == "" {
			opts.IfAbsent = true
		} else {
			opts.IfMatch = etag
		}
		_, err = s.s.Put(ctx, orgsObject, bytes.NewReader(data), opts)
		if err == nil {
			return nil
		}
		if !errors.Is(err, storage.ErrPreconditionFailed) && !errors.Is(err, storage.ErrExists) {
			return fmt.Errorf("fhir: register organisation: %w", err)
		}
	}
	return newError(ErrConflict, CodeConflict, "", "could not register the organisation; retry")
}

func (s *Store) readOrgs(ctx context.Context) ([]string, string, error) {
	rc, info, err := s.s.Get(ctx, orgsObject, storage.GetOptions{})
	if errors.Is(err, storage.ErrNotFound) {
		return nil, "", nil
	}
	if err != nil {
		return nil, "", fmt.Errorf("fhir: read organisations: %w", err)
	}
	defer rc.Close()
	var f orgsFile
	if err := json.NewDecoder(io.LimitReader(rc, maxHeadBytes)).Decode(&f); err != nil {
		return nil, "", fmt.Errorf("fhir: organisations list is damaged: %w", err)
	}
	return f.Orgs, info.ETag, nil
}

// Organizations returns the organisations that hold FHIR data, sorted.
func (s *Store) Organizations(ctx context.Context) ([]string, error) {
	list, _, err := s.readOrgs(ctx)
	return list, err
}
