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
	// writers keep taking the next commit number.
	commitAttempts = 16
	// commitTimeout bounds a commit once it has started writing: it runs
	// detached from the request, so that a client that goes away after
	// the body has been read leaves a known outcome, not a half-made one.
	commitTimeout = 2 * time.Minute
	maxOrgsBytes  = 16 << 20
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
	// CheckpointEvery is how many commits pass between checkpoints (the
	// merged index that a new instance loads instead of every segment).
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
// instances) may share one object store: each commit is a create-if-absent
// write of the organisation's next commit number, re-planned when another
// writer took it, so no update is lost. It is safe for concurrent use.
//
// Reads and searches see every commit made before they start, from any
// instance (each request checks that no newer commit exists). The index
// of each organisation an instance has served is kept in memory.
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
	seq    int64 // the last commit applied to st
	st     *state

	// queue holds independent segments waiting to be committed together
	// by whichever of their requests gets wmu first.
	qmu   sync.Mutex
	queue []*groupReq
}

// groupReq is one request's independent segment in a group commit.
type groupReq struct {
	b     *segBuilder
	after func(st *state, seg string)
	done  chan struct{}
	err   error
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

func (o *orgState) segName(n int64) string  { return fmt.Sprintf("%sseg/%020d", o.prefix, n) }
func (o *orgState) ckptName(n int64) string { return fmt.Sprintf("%sckpt/%020d", o.prefix, n) }

// fresh makes o reflect every commit made before the call: one Stat of
// the next commit's name when nothing changed.
func (s *Store) fresh(ctx context.Context, o *orgState) error {
	o.mu.RLock()
	loaded, next := o.loaded, o.seq+1
	o.mu.RUnlock()
	if loaded {
		_, err := s.s.Stat(ctx, o.segName(next))
		switch {
		case errors.Is(err, storage.ErrNotFound):
			return nil
		case err != nil:
			return fmt.Errorf("fhir: look for new commits: %w", err)
		}
	}
	o.wmu.Lock()
	defer o.wmu.Unlock()
	return s.loadLocked(ctx, o)
}

// ensureLoaded loads o once; commits find out about other instances'
// commits when their create-if-absent write fails.
func (s *Store) ensureLoaded(ctx context.Context, o *orgState) error {
	o.mu.RLock()
	loaded := o.loaded
	o.mu.RUnlock()
	if loaded {
		return nil
	}
	o.wmu.Lock()
	defer o.wmu.Unlock()
	return s.loadLocked(ctx, o)
}

// loadLocked brings o up to date: from the latest checkpoint when o is
// not loaded yet, then commit by commit until the next one does not
// exist. The caller holds o.wmu.
func (s *Store) loadLocked(ctx context.Context, o *orgState) error {
	if !o.loaded {
		var err error
		for range 8 {
			if err = s.loadCheckpoint(ctx, o); !errors.Is(err, errStale) {
				break
			}
		}
		if err != nil {
			return err
		}
	}
	for {
		n := o.seq + 1
		idx, base, err := readSegIndex(ctx, s.s, o.segName(n))
		if errors.Is(err, storage.ErrNotFound) {
			return nil
		}
		if err != nil {
			return err
		}
		o.mu.Lock()
		o.st.applySegment(o.segName(n), idx, base)
		o.seq = n
		o.mu.Unlock()
	}
}

// loadCheckpoint starts o from its latest checkpoint (or empty).
func (s *Store) loadCheckpoint(ctx context.Context, o *orgState) error {
	var latest string
	for info, err := range s.s.List(ctx, o.prefix+"ckpt/") {
		if err != nil {
			return fmt.Errorf("fhir: list checkpoints: %w", err)
		}
		latest = info.Name // List is in name order
	}
	st, seq := newState(), int64(0)
	if latest != "" {
		c, err := s.readCheckpoint(ctx, latest)
		if err != nil {
			return err
		}
		var ok bool
		if st, ok = stateFromCheckpoint(c); !ok || o.ckptName(c.Seq) != latest {
			return fmt.Errorf("fhir: checkpoint of an organisation is damaged")
		}
		seq = c.Seq
	}
	o.mu.Lock()
	o.st, o.seq, o.loaded = st, seq, true
	o.mu.Unlock()
	return nil
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

// stagePart stores bodies of an NDJSON load under a new name; nothing
// refers to them until a commit lists them.
func (s *Store) stagePart(ctx context.Context, o *orgState, body []byte) (string, error) {
	name := fmt.Sprintf("%sstage/%020d-%s", o.prefix, s.now().UnixNano(), randomHex(8))
	if _, err := s.s.Put(ctx, name, bytes.NewReader(body), storage.PutOptions{Size: int64(len(body)), IfAbsent: true, ContentType: "application/octet-stream"}); err != nil {
		return "", fmt.Errorf("fhir: stage NDJSON resources: %w", err)
	}
	return name, nil
}

// discard deletes staged parts that no commit lists, best effort: a
// leftover is invisible and Sweep removes it later.
func (s *Store) discard(names []string) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, n := range names {
		if err := s.s.Delete(ctx, n); err != nil && !errors.Is(err, storage.ErrNotFound) {
			s.log.Warn("could not delete an uncommitted staged object; Sweep will", "err", err.Error())
		}
	}
}

// ambiguousError is a commit whose outcome could not be established.
type ambiguousError struct{ err error }

func (e *ambiguousError) Error() string {
	return "fhir: commit outcome unknown (the store did not answer): " + e.err.Error()
}
func (e *ambiguousError) Unwrap() error { return e.err }

// commit plans and commits one segment: build is called with the
// organisation's state (again after losing a race) and returns the segment
// to write, or nil when there is nothing to write; after is called with
// the state once the segment is visible (seg is "" when nothing was
// written); before, when set, is called once before the first write. Planning runs outside the organisation's commit lock, so that
// concurrent requests overlap; only the create-if-absent write of the next
// commit is serialised. The caller's context bounds planning; the write
// runs to its end on a detached context.
func (s *Store) commit(ctx context.Context, org string, build func(st *state) (*segBuilder, error), after func(st *state, seg string), before func(context.Context) error) error {
	o, err := s.org(org)
	if err != nil {
		return err
	}
	if err := s.ensureLoaded(ctx, o); err != nil {
		return err
	}
	wctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), commitTimeout)
	defer cancel()
	id := randomHex(16)
	for range commitAttempts {
		if err := ctx.Err(); err != nil {
			return err
		}
		o.mu.RLock()
		seq := o.seq
		b, err := build(o.st)
		if err == nil && (b == nil || b.empty()) {
			after(o.st, "")
		}
		o.mu.RUnlock()
		if err != nil {
			return err
		}
		if b == nil || b.empty() {
			return nil
		}
		if before != nil {
			if err := before(ctx); err != nil {
				return err
			}
			before = nil // once, however often the commit is re-planned
		}
		if b.independent {
			return s.groupCommit(wctx, o, b, after)
		}
		b.idx.C = id
		o.wmu.Lock()
		if o.seq != seq {
			// Another commit of this instance landed after planning.
			o.wmu.Unlock()
			continue
		}
		done, err := s.writeCommit(wctx, o, b)
		if err != nil || !done {
			if err == nil {
				// Another instance took the number: load, plan again.
				err = s.loadLocked(wctx, o)
			}
			o.wmu.Unlock()
			if err != nil {
				return err
			}
			continue
		}
		after(o.st, o.segName(o.seq))
		s.maybeCheckpoint(wctx, o)
		o.wmu.Unlock()
		return nil
	}
	return newError(ErrConflict, CodeConflict, "", "other writers kept changing this organisation's records; retry")
}

// groupCommit commits an independent segment together with the others
// queued while the organisation's commit lock was held: concurrent
// requests share one write (on MinIO, one PUT) instead of one each. The
// request that gets the lock commits everything queued; the others find
// their outcome done.
func (s *Store) groupCommit(ctx context.Context, o *orgState, b *segBuilder, after func(st *state, seg string)) error {
	req := &groupReq{b: b, after: after, done: make(chan struct{})}
	o.qmu.Lock()
	o.queue = append(o.queue, req)
	o.qmu.Unlock()
	o.wmu.Lock()
	defer o.wmu.Unlock()
	select {
	case <-req.done: // an earlier holder of the lock committed it
		return req.err
	default:
	}
	o.qmu.Lock()
	batch := o.queue
	o.queue = nil
	o.qmu.Unlock()
	m := batch[0].b
	if len(batch) > 1 {
		bs := make([]*segBuilder, len(batch))
		for i, r := range batch {
			bs[i] = r.b
		}
		m = merge(bs)
	}
	m.idx.C = randomHex(16)
	err := error(newError(ErrConflict, CodeConflict, "", "other writers kept changing this organisation's records; retry"))
	for range commitAttempts {
		done, werr := s.writeCommit(ctx, o, m)
		if werr != nil || done {
			err = werr
			break
		}
		// Another instance took the number; independent segments go
		// under the next one as they are.
		if lerr := s.loadLocked(ctx, o); lerr != nil {
			err = lerr
			break
		}
	}
	for _, r := range batch {
		if err == nil {
			r.after(o.st, o.segName(o.seq))
		}
		r.err = err
		close(r.done)
	}
	if err == nil {
		s.maybeCheckpoint(ctx, o)
	}
	return req.err
}

// writeCommit writes b as commit o.seq+1 and applies it. It returns false
// when another writer holds that number. The caller holds o.wmu.
func (s *Store) writeCommit(ctx context.Context, o *orgState, b *segBuilder) (bool, error) {
	if o.seq == 0 {
		if err := s.registerOrg(ctx, o.org); err != nil {
			return false, err
		}
	}
	name := o.segName(o.seq + 1)
	for try := 0; ; try++ {
		r, size, err := b.reader()
		if err != nil {
			return false, err
		}
		_, err = s.s.Put(ctx, name, r, storage.PutOptions{Size: size, IfAbsent: true, ContentType: "application/octet-stream"})
		if errors.Is(err, storage.ErrExists) {
			// Ours, if an earlier try's answer was lost; else another's.
			idx, _, rerr := readSegIndex(ctx, s.s, name)
			if rerr != nil || idx.C != b.idx.C {
				return false, nil
			}
			err = nil
		}
		if err == nil {
			o.mu.Lock()
			o.st.applySegment(name, b.idx, size-int64(len(b.body)))
			o.seq++
			o.mu.Unlock()
			return true, nil
		}
		// The write failed, or its answer was lost: a retry either
		// creates the commit or finds it (above).
		if try == 2 || ctx.Err() != nil {
			return false, &ambiguousError{err: err}
		}
		time.Sleep(time.Duration(try+1) * 100 * time.Millisecond)
	}
}

// maybeCheckpoint writes a checkpoint every CheckpointEvery commits and
// deletes the ones before the previous. Failure is harmless: loading
// reads more segments. The caller holds o.wmu.
func (s *Store) maybeCheckpoint(ctx context.Context, o *orgState) {
	if o.seq%int64(s.every) != 0 {
		return
	}
	data, err := json.Marshal(o.st.checkpoint(o.seq))
	if err != nil {
		s.log.Warn("checkpoint not written", "err", err.Error())
		return
	}
	name := o.ckptName(o.seq)
	if _, err := s.s.Put(ctx, name, bytes.NewReader(data), storage.PutOptions{Size: int64(len(data)), IfAbsent: true, ContentType: "application/json"}); err != nil && !errors.Is(err, storage.ErrExists) {
		s.log.Warn("checkpoint not written", "err", err.Error())
		return
	}
	// Keep the previous checkpoint for instances loading right now.
	var old []string
	for info, err := range s.s.List(ctx, o.prefix+"ckpt/") {
		if err != nil {
			return
		}
		old = append(old, info.Name)
	}
	for i := 0; i+2 < len(old); i++ {
		_ = s.s.Delete(ctx, old[i])
	}
}

// Sweep deletes the staged NDJSON objects of org that no commit lists and
// that are older than minAge: what loads left behind when their process
// died before committing or cleaning up. minAge must exceed the longest
// upload (a load stages objects for as long as its upload lasts); a day is
// safe. It returns how many it deleted.
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
	for info, err := range s.s.List(ctx, o.prefix+"stage/") {
		if err != nil {
			return 0, fmt.Errorf("fhir: sweep: %w", err)
		}
		names = append(names, info.Name)
	}
	o.mu.RLock()
	var dead []string
	for _, n := range names {
		if _, used := o.st.segs[n]; used {
			continue
		}
		var ts int64
		if _, err := fmt.Sscanf(n[strings.LastIndexByte(n, '/')+1:], "%d-", &ts); err != nil || ts > cutoff {
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
	if err := json.NewDecoder(io.LimitReader(rc, maxOrgsBytes)).Decode(&f); err != nil {
		return nil, "", fmt.Errorf("fhir: organisations list is damaged: %w", err)
	}
	return f.Orgs, info.ETag, nil
}

// Organizations returns the organisations that hold FHIR data, sorted.
func (s *Store) Organizations(ctx context.Context) ([]string, error) {
	list, _, err := s.readOrgs(ctx)
	return list, err
}
