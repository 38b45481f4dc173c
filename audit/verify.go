package audit

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"iter"
	"slices"
	"strconv"
	"strings"

	"aead.dev/minisign"
	"github.com/minio/minio-go/v7"

	"github.com/consilium/consilium/storage"
)

// ProblemKind classifies what verification found.
type ProblemKind string

// Problem kinds, from the most to the least common cause.
const (
	// ProblemMissing: the segment that should start at Seq is not in
	// the store (deleted), while later segments are.
	ProblemMissing ProblemKind = "missing-segment"
	// ProblemOverlap: a segment starts at a sequence number already
	// covered by the segments before it.
	ProblemOverlap ProblemKind = "overlapping-segment"
	// ProblemUnreadable: an object or a line cannot be read or parsed.
	ProblemUnreadable ProblemKind = "unreadable"
	// ProblemOrder: the entry at a position holds another sequence
	// number (entries or segments were reordered or removed).
	ProblemOrder ProblemKind = "out-of-order"
	// ProblemHash: the entry's content does not match its own hash (it
	// was edited).
	ProblemHash ProblemKind = "hash-mismatch"
	// ProblemLink: the entry's prev is not the hash of the entry before
	// it (an entry before it was edited and re-hashed, or replaced).
	ProblemLink ProblemKind = "broken-link"
	// ProblemCheckpoint: a checkpoint's signature does not verify, or it
	// commits to an entry the chain does not have at that position.
	ProblemCheckpoint ProblemKind = "bad-checkpoint"
	// ProblemTruncated: a checkpoint (or the running gateway) knows of
	// entries beyond the end of the chain in the store.
	ProblemTruncated ProblemKind = "truncated"
	// ProblemOverwritten: on a versioned (object-lock) bucket, an audit
	// object has more than one version or is hidden behind a delete
	// marker. The original version is what gets verified.
	ProblemOverwritten ProblemKind = "overwritten"
	// ProblemStray: an object under the log's prefix that the log
	// never writes.
	ProblemStray ProblemKind = "stray-object"
)

// Problem is one finding of [Verify], located as precisely as the
// finding allows.
type Problem struct {
	Kind ProblemKind `json:"kind"`
	// Seq is the sequence number concerned: the first missing entry, the
	// entry whose check failed, the checkpoint's position.
	Seq uint64 `json:"seq"`
	// Object is the store name of the segment or checkpoint concerned.
	Object string `json:"object,omitempty"`
	// Index is the 0-based line of the entry in Object, or -1 when the
	// problem is not about one line.
	Index int `json:"index"`
	// Detail says what was expected and what was found.
	Detail string `json:"detail"`
}

func (p Problem) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s at seq %d", p.Kind, p.Seq)
	if p.Object != "" {
		fmt.Fprintf(&b, " (object %s", p.Object)
		if p.Index >= 0 {
			fmt.Fprintf(&b, ", entry index %d", p.Index)
		}
		b.WriteString(")")
	}
	return b.String() + ": " + p.Detail
}

// Report is the result of [Verify].
type Report struct {
	// OK is true when no problem was found.
	OK bool `json:"ok"`
	// Entries, Segments and Checkpoints count what was read.
	Entries     uint64 `json:"entries"`
	Segments    int    `json:"segments"`
	Checkpoints int    `json:"checkpoints"`
	// Head is the last entry of the chain in the store.
	Head Head `json:"head"`
	// LastCheckpoint is the newest valid checkpoint, if any.
	LastCheckpoint *Checkpoint `json:"last_checkpoint,omitempty"`
	// Uncovered counts the entries after the newest valid checkpoint:
	// removing them from the end of the chain is not detectable from
	// the store alone (see the package documentation).
	Uncovered uint64 `json:"uncovered"`
	// VersionsChecked says whether object versions were examined (a
	// MinIO store), so that overwrites of locked objects are found.
	VersionsChecked bool `json:"versions_checked"`
	// Problems are the findings, in chain order (the first is the
	// earliest point where the log stops being trustworthy). At most
	// [VerifyOptions.MaxProblems].
	Problems []Problem `json:"problems,omitempty"`
	// MoreProblems is true when findings were left out.
	MoreProblems bool `json:"more_problems,omitempty"`
}

// First returns the first problem, or nil.
func (r *Report) First() *Problem {
	if len(r.Problems) == 0 {
		return nil
	}
	return &r.Problems[0]
}

// VerifyOptions adjust [Verify].
type VerifyOptions struct {
	// PublicKey verifies checkpoints. Required.
	PublicKey minisign.PublicKey
	// Prefix is the log's prefix. Default "audit/".
	Prefix string
	// KnownHead, when set, is a position a running gateway knows to be
	// in the chain; a chain that ends before it is reported truncated.
	KnownHead Head
	// MaxProblems bounds the findings reported. Default 100.
	MaxProblems int
}

// Verify reads the whole log in store and checks every link: segment
// names follow each other without gap or overlap, every entry's hash
// matches its content and its prev matches the entry before, every
// checkpoint is signed by PublicKey and commits to the entry the chain
// has at its position, and no checkpoint lies beyond the end. On a MinIO
// store it also looks at object versions, reads the original version of
// each object and reports overwrites. Problems go in the report; the
// error is for failures to list the store.
func Verify(ctx context.Context, store storage.Store, opts VerifyOptions) (*Report, error) {
	if opts.Prefix == "" {
		opts.Prefix = DefaultPrefix
	}
	if opts.MaxProblems <= 0 {
		opts.MaxProblems = 100
	}
	if opts.PublicKey.ID() == 0 {
		return nil, errors.New("audit: verify needs the gateway's public key")
	}
	v := &verifier{opts: opts, src: sourceFor(store), report: &Report{}}
	_, v.report.VersionsChecked = v.src.(*minioSource)
	if err := v.checkpoints(ctx); err != nil {
		return nil, err
	}
	if err := v.chain(ctx); err != nil {
		return nil, err
	}
	v.finish()
	return v.report, nil
}

// Verify verifies the log this instance writes to, also checking that
// the chain reaches the head this instance knows.
func (l *Log) Verify(ctx context.Context) (*Report, error) {
	return Verify(ctx, l.store, VerifyOptions{PublicKey: l.pub, Prefix: l.cfg.Prefix, KnownHead: l.Head()})
}

type verifier struct {
	opts   VerifyOptions
	src    source
	report *Report
	// cps are the valid checkpoints by seq, ascending.
	cps []cpRef
	// problems before sorting.
	problems []Problem
}

type cpRef struct {
	c    Checkpoint
	name string
}

func (v *verifier) add(p Problem) {
	v.problems = append(v.problems, p)
}

func (v *verifier) checkpoints(ctx context.Context) error {
	prefix := v.opts.Prefix
	for o, err := range v.src.list(ctx, prefix+checkpointDir) {
		if err != nil {
			return fmt.Errorf("audit: listing checkpoints: %w", err)
		}
		seq, ok := parseCheckpointName(prefix, o.name)
		if !ok {
			v.add(Problem{Kind: ProblemStray, Object: o.name, Index: -1, Detail: "not a checkpoint name"})
			continue
		}
		v.overwrites(o, seq)
		data, err := v.src.read(ctx, o, 4096)
		if err != nil {
			v.add(Problem{Kind: ProblemCheckpoint, Seq: seq, Object: o.name, Index: -1, Detail: "unreadable: " + err.Error()})
			continue
		}
		c, err := parseCheckpoint(v.opts.PublicKey, data)
		if err != nil {
			v.add(Problem{Kind: ProblemCheckpoint, Seq: seq, Object: o.name, Index: -1, Detail: err.Error()})
			continue
		}
		if c.Seq != seq {
			v.add(Problem{Kind: ProblemCheckpoint, Seq: seq, Object: o.name, Index: -1,
				Detail: fmt.Sprintf("the signed statement is for seq %d, not the seq %d of its name", c.Seq, seq)})
			continue
		}
		v.report.Checkpoints++
		v.cps = append(v.cps, cpRef{c, o.name})
	}
	slices.SortFunc(v.cps, func(a, b cpRef) int { return cmpUint(a.c.Seq, b.c.Seq) })
	return nil
}

func cmpUint(a, b uint64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// overwrites reports an object with several versions or a delete marker.
func (v *verifier) overwrites(o object, seq uint64) {
	switch {
	case o.hidden:
		v.add(Problem{Kind: ProblemOverwritten, Seq: seq, Object: o.name, Index: -1,
			Detail: fmt.Sprintf("hidden behind a delete marker (%d versions); the original version %s was verified", o.versions, o.versionID)})
	case o.versions > 1:
		v.add(Problem{Kind: ProblemOverwritten, Seq: seq, Object: o.name, Index: -1,
			Detail: fmt.Sprintf("has %d versions: it was overwritten; the original version %s was verified", o.versions, o.versionID)})
	}
}

func (v *verifier) chain(ctx context.Context) error {
	prefix := v.opts.Prefix
	expect, prev := uint64(1), GenesisHash
	linkKnown := true // false right after a gap, where prev cannot be checked
	cpi := 0          // next checkpoint to match
	for o, err := range v.src.list(ctx, prefix+segmentDir) {
		if err != nil {
			return fmt.Errorf("audit: listing segments: %w", err)
		}
		first, ok := parseSegmentName(prefix, o.name)
		if !ok {
			v.add(Problem{Kind: ProblemStray, Seq: expect, Object: o.name, Index: -1, Detail: "not a segment name"})
			continue
		}
		v.report.Segments++
		v.overwrites(o, first)
		switch {
		case first > expect:
			v.add(Problem{Kind: ProblemMissing, Seq: expect, Object: segmentName(prefix, expect), Index: -1,
				Detail: fmt.Sprintf("entries %d to %d are missing: no segment starts at seq %d, the next one found is %s", expect, first-1, expect, o.name)})
			expect, linkKnown = first, false
		case first < expect:
			v.add(Problem{Kind: ProblemOverlap, Seq: first, Object: o.name, Index: -1,
				Detail: fmt.Sprintf("starts at seq %d but the segments before it already reach seq %d", first, expect-1)})
		}
		data, err := v.src.read(ctx, o, maxSegmentBytes)
		if err != nil {
			v.add(Problem{Kind: ProblemUnreadable, Seq: first, Object: o.name, Index: -1, Detail: err.Error()})
			linkKnown = false
			continue
		}
		if len(data) == 0 || data[len(data)-1] != '\n' {
			v.add(Problem{Kind: ProblemUnreadable, Seq: first, Object: o.name, Index: -1, Detail: "the segment is empty or does not end with a newline (cut short?)"})
		}
		lines := splitLines(data)
		for i, line := range lines {
			computed, claimed, herr := EntryHash(line)
			e, derr := decodeEntry(line)
			if herr != nil || derr != nil {
				v.add(Problem{Kind: ProblemUnreadable, Seq: expect, Object: o.name, Index: i, Detail: errors.Join(herr, derr).Error()})
				expect++
				linkKnown = false
				continue
			}
			v.report.Entries++
			if e.Seq != expect {
				v.add(Problem{Kind: ProblemOrder, Seq: expect, Object: o.name, Index: i,
					Detail: fmt.Sprintf("expected the entry with seq %d here, found seq %d", expect, e.Seq)})
				linkKnown = e.Seq == expect
			}
			if computed != claimed {
				v.add(Problem{Kind: ProblemHash, Seq: e.Seq, Object: o.name, Index: i,
					Detail: fmt.Sprintf("the entry was changed: its content hashes to %s, it claims %s", computed, claimed)})
			}
			if linkKnown && e.Prev != prev {
				v.add(Problem{Kind: ProblemLink, Seq: e.Seq, Object: o.name, Index: i,
					Detail: fmt.Sprintf("prev is %s but the entry before it (seq %d) hashes to %s", e.Prev, e.Seq-1, prev)})
			}
			for cpi < len(v.cps) && v.cps[cpi].c.Seq < e.Seq {
				cpi++ // a checkpoint on a position the chain skipped; reported at finish
			}
			if cpi < len(v.cps) && v.cps[cpi].c.Seq == e.Seq {
				cp := v.cps[cpi]
				if cp.c.Hash != computed {
					v.add(Problem{Kind: ProblemCheckpoint, Seq: e.Seq, Object: o.name, Index: i,
						Detail: fmt.Sprintf("checkpoint %s commits to hash %s at seq %d, the entry here hashes to %s", cp.name, cp.c.Hash, e.Seq, computed)})
				}
				v.report.LastCheckpoint = &cp.c
				v.report.Uncovered = 0
				cpi++
			} else {
				v.report.Uncovered++
			}
			prev, expect, linkKnown = computed, e.Seq+1, true
			v.report.Head = Head{Seq: e.Seq, Hash: computed, Segment: o.name}
		}
		if n, err := strconv.Atoi(o.meta[metaCount]); err == nil && n != len(lines) {
			kind := ProblemTruncated
			if n < len(lines) {
				kind = ProblemUnreadable
			}
			v.add(Problem{Kind: kind, Seq: first + uint64(len(lines)), Object: o.name, Index: len(lines),
				Detail: fmt.Sprintf("the segment was written with %d entries and now holds %d", n, len(lines))})
		}
	}
	return nil
}

func (v *verifier) finish() {
	head := v.report.Head.Seq
	for _, cp := range v.cps {
		if cp.c.Seq > head {
			v.add(Problem{Kind: ProblemTruncated, Seq: head + 1, Object: cp.name, Index: -1,
				Detail: fmt.Sprintf("checkpoint %s commits to entries up to seq %d, but the chain in the store ends at seq %d", cp.name, cp.c.Seq, head)})
		}
	}
	if k := v.opts.KnownHead.Seq; k > head {
		v.add(Problem{Kind: ProblemTruncated, Seq: head + 1, Object: v.opts.KnownHead.Segment, Index: -1,
			Detail: fmt.Sprintf("the running gateway recorded entries up to seq %d, but the chain in the store ends at seq %d", k, head)})
	}
	slices.SortStableFunc(v.problems, func(a, b Problem) int { return cmpUint(a.Seq, b.Seq) })
	if len(v.problems) > v.opts.MaxProblems {
		v.problems, v.report.MoreProblems = v.problems[:v.opts.MaxProblems], true
	}
	v.report.Problems = v.problems
	v.report.OK = len(v.problems) == 0
}

// object is a stored object as verification sees it.
type object struct {
	name string
	meta map[string]string
	// versionID is the version to read; empty for the current one.
	versionID string
	// versions counts the name's versions (delete markers included);
	// 1 on stores without versions.
	versions int
	// hidden is true when the newest version is a delete marker.
	hidden bool
	// present is true when some version holds data.
	present bool
}

// source lists and reads the log's objects.
type source interface {
	list(ctx context.Context, prefix string) iter.Seq2[object, error]
	read(ctx context.Context, o object, limit int64) ([]byte, error)
}

// sourceFor returns a version-aware source for MinIO stores and a plain
// one for any other store.
func sourceFor(store storage.Store) source {
	if m, ok := store.(*storage.MinIO); ok {
		return &minioSource{m}
	}
	return storeSource{store}
}

type storeSource struct{ store storage.Store }

func (s storeSource) list(ctx context.Context, prefix string) iter.Seq2[object, error] {
	return func(yield func(object, error) bool) {
		for info, err := range s.store.List(ctx, prefix) {
			if !yield(object{name: info.Name, meta: info.Metadata, versions: 1, present: true}, err) || err != nil {
				return
			}
		}
	}
}

func (s storeSource) read(ctx context.Context, o object, limit int64) ([]byte, error) {
	data, _, err := readObject(ctx, s.store, o.name, limit)
	return data, err
}

// minioSource reads a MinIO bucket with its versions: on a bucket with
// object lock, an overwrite adds a version and a plain delete adds a
// delete marker, while the locked original stays. It reads the oldest
// version of each name, the one written by the log.
type minioSource struct{ m *storage.MinIO }

func (s *minioSource) list(ctx context.Context, prefix string) iter.Seq2[object, error] {
	return func(yield func(object, error) bool) {
		lctx, cancel := context.WithCancel(ctx)
		defer cancel()
		base := s.m.Prefix()
		var cur *object
		flush := func() bool {
			if cur == nil || !cur.present {
				return true // nothing, or only delete markers: the name is gone
			}
			o := *cur
			cur = nil
			return yield(o, nil)
		}
		for oi := range s.m.Client().ListObjects(lctx, s.m.Bucket(), minio.ListObjectsOptions{
			Prefix: base + prefix, Recursive: true, WithVersions: true,
		}) {
			if oi.Err != nil {
				yield(object{}, oi.Err)
				return
			}
			name := strings.TrimPrefix(oi.Key, base)
			if cur == nil || cur.name != name {
				if !flush() {
					return
				}
				// Versions of a key come newest first.
				cur = &object{name: name, hidden: oi.IsDeleteMarker}
			}
			cur.versions++
			if !oi.IsDeleteMarker {
				cur.versionID, cur.present = oi.VersionID, true // the last seen is the oldest
			}
		}
		flush()
	}
}

func (s *minioSource) read(ctx context.Context, o object, limit int64) ([]byte, error) {
	var opts minio.GetObjectOptions
	if o.versionID != "null" {
		opts.VersionID = o.versionID
	}
	obj, err := s.m.Client().GetObject(ctx, s.m.Bucket(), s.m.Prefix()+o.name, opts)
	if err != nil {
		return nil, err
	}
	defer obj.Close()
	data, err := io.ReadAll(io.LimitReader(obj, limit+1))
	if err != nil {
		return nil, err
	}
	if int64(len(data)) > limit {
		return nil, fmt.Errorf("larger than %d bytes", limit)
	}
	return bytes.Clone(data), nil
}
