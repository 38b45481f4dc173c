package fhir

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"

	"github.com/consilium/consilium/storage"
)

// Object layout (every object goes through the encrypted store; names
// carry only keyed hashes, sequence numbers and random ids):
//
//	fhir/<org>/seg/<n>              commit n (1, 2, …; 20 digits): the versions it writes, index then bodies; immutable
//	fhir/<org>/ckpt/<n>             a checkpoint: the merged index of commits 1..n; immutable
//	fhir/<org>/stage/<time>-<rand>  bodies of an NDJSON load, staged while it streams; visible only once a commit lists them
//	fhir/orgs                       the organisations that hold FHIR data (for compliance officers' consent reads)
//
// <org> is Names("fhir-org", organisation). Commit n+1 is one
// create-if-absent write of seg/<n+1>: that write is the commit point, so
// a transaction is all or nothing, two writers (two gateway instances)
// cannot both take n+1 (the loser re-plans on top of the winner's commit),
// and a failed commit leaves nothing behind. Versions are not stored in the
// resources: they follow from the order of the commits, so a segment never
// needs rewriting after a lost race. Readers check that seg/<n+1> does not
// exist (one Stat) to know they are up to date.

const (
	segMagic = "CFS1"
	// segHeaderRead is how much of a segment is read to find its index;
	// larger indexes take a second read.
	segHeaderRead = 64 << 10
	// maxIndexBytes bounds a segment or checkpoint index read back.
	maxIndexBytes = 1 << 30
)

// segIndex is a segment's index, stored before its bodies.
type segIndex struct {
	V int `json:"v"`
	// C identifies the commit, so that a writer whose answer got lost can
	// tell its own segment from another writer's.
	C string `json:"c"`
	// At is meta.lastUpdated of every version in the segment.
	At string `json:"at"`
	// Parts are staged objects that hold bodies of this commit (NDJSON
	// loads); entries refer to them by position + 1 in X.
	Parts   []string   `json:"parts,omitempty"`
	Entries []segEntry `json:"e"`
}

// segEntry is one version written by a commit.
type segEntry struct {
	T  string `json:"t"`
	ID string `json:"id"`
	// Off and N locate the body: from the first body byte of this
	// segment, or from the start of staged part X-1 when X > 0.
	Off int64 `json:"o,omitempty"`
	N   int64 `json:"n,omitempty"`
	X   int   `json:"x,omitempty"`
	// Del marks a deletion (no body).
	Del bool `json:"d,omitempty"`
	// P is the id of the linked Patient.
	P string `json:"p,omitempty"`
	// Sec are the meta.security codes.
	Sec []string `json:"s,omitempty"`
	// Idf are the identifiers ("system|value").
	Idf []string `json:"i,omitempty"`
	// Refs are the relative references the resource makes.
	Refs []string `json:"r,omitempty"`
}

// segBuilder accumulates one segment.
type segBuilder struct {
	idx  segIndex
	body []byte
	// independent is set when the plan that made the segment did not
	// depend on the organisation's state (only creates under fresh ids,
	// no conditional operations or references): such segments may be
	// committed under any number and together with others (group commit).
	independent bool
}

// merge returns one segment holding the versions of bs, in order.
func merge(bs []*segBuilder) *segBuilder {
	m := newSegBuilder(bs[0].idx.At)
	m.independent = true
	for _, b := range bs {
		shift := int64(len(m.body))
		parts := len(m.idx.Parts)
		m.body = append(m.body, b.body...)
		m.idx.Parts = append(m.idx.Parts, b.idx.Parts...)
		for _, e := range b.idx.Entries {
			if e.X > 0 {
				e.X += parts
			} else if !e.Del {
				e.Off += shift
			}
			m.idx.Entries = append(m.idx.Entries, e)
		}
	}
	return m
}

func newSegBuilder(at string) *segBuilder {
	return &segBuilder{idx: segIndex{V: 1, At: at}}
}

// add appends a version; body is nil for deletions.
func (b *segBuilder) add(e segEntry, body []byte) {
	if !e.Del {
		e.Off = int64(len(b.body))
		e.N = int64(len(body))
		b.body = append(b.body, body...)
	}
	b.idx.Entries = append(b.idx.Entries, e)
}

// addResource appends a version whose body is the canonical encoding of
// tree under typ and id, and returns that body.
func (b *segBuilder) addResource(e segEntry, tree object) []byte {
	off := len(b.body)
	b.body = appendResource(b.body, e.T, e.ID, tree)
	e.Off, e.N = int64(off), int64(len(b.body)-off)
	b.idx.Entries = append(b.idx.Entries, e)
	return b.body[off:len(b.body):len(b.body)]
}

// same reports whether b and o would store the same bytes.
func (b *segBuilder) same(o *segBuilder) bool {
	if o == nil || !bytes.Equal(b.body, o.body) || b.idx.At != o.idx.At || len(b.idx.Entries) != len(o.idx.Entries) {
		return false
	}
	bi, err1 := json.Marshal(b.idx)
	oi, err2 := json.Marshal(o.idx)
	return err1 == nil && err2 == nil && bytes.Equal(bi, oi)
}

func (b *segBuilder) empty() bool { return len(b.idx.Entries) == 0 }

func (b *segBuilder) size() int { return len(b.body) }

// reader returns the segment's bytes and their length.
func (b *segBuilder) reader() (io.Reader, int64, error) {
	idx, err := json.Marshal(b.idx)
	if err != nil {
		return nil, 0, fmt.Errorf("fhir: encode segment index: %w", err)
	}
	hdr := make([]byte, 8, 8+len(idx))
	copy(hdr, segMagic)
	binary.BigEndian.PutUint32(hdr[4:], uint32(len(idx)))
	hdr = append(hdr, idx...)
	return io.MultiReader(bytes.NewReader(hdr), bytes.NewReader(b.body)), int64(len(hdr) + len(b.body)), nil
}

// readSegIndex reads a segment's index and returns it with the offset of
// its first body byte.
func readSegIndex(ctx context.Context, s storage.Store, name string) (segIndex, int64, error) {
	var idx segIndex
	head, err := readRange(ctx, s, name, 0, segHeaderRead)
	if err != nil {
		return idx, 0, err
	}
	if len(head) < 8 || string(head[:4]) != segMagic {
		return idx, 0, fmt.Errorf("fhir: segment %s: not a segment", name)
	}
	n := int64(binary.BigEndian.Uint32(head[4:8]))
	if n > maxIndexBytes {
		return idx, 0, fmt.Errorf("fhir: segment %s: index of %d bytes", name, n)
	}
	raw := head[8:]
	if int64(len(raw)) < n {
		rest, err := readRange(ctx, s, name, int64(len(head)), 8+n-int64(len(head)))
		if err != nil {
			return idx, 0, err
		}
		raw = append(raw, rest...)
	}
	if int64(len(raw)) < n {
		return idx, 0, fmt.Errorf("fhir: segment %s: truncated index", name)
	}
	if err := json.Unmarshal(raw[:n], &idx); err != nil {
		return idx, 0, fmt.Errorf("fhir: segment %s: index: %w", name, err)
	}
	if idx.V != 1 {
		return idx, 0, fmt.Errorf("fhir: segment %s: unknown version %d", name, idx.V)
	}
	return idx, 8 + n, nil
}

// readRange reads length bytes at off (fewer at the end of the object).
func readRange(ctx context.Context, s storage.Store, name string, off, length int64) ([]byte, error) {
	rc, _, err := s.Get(ctx, name, storage.GetOptions{Offset: off, Length: length})
	if err != nil {
		return nil, fmt.Errorf("fhir: read %s: %w", name, err)
	}
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if err != nil {
		return nil, fmt.Errorf("fhir: read %s: %w", name, err)
	}
	return b, nil
}

// ckptFile is a checkpoint: the whole index at a commit.
type ckptFile struct {
	V   int       `json:"v"`
	Seq int64     `json:"seq"`
	Seg []string  `json:"seg"` // segment names, referred to by position
	Res []ckptRes `json:"res"`
}

type ckptRes struct {
	T  string    `json:"t"`
	ID string    `json:"id"`
	Vs []ckptVer `json:"v"`
}

type ckptVer struct {
	S    int      `json:"s"`
	O    int64    `json:"o"`
	N    int64    `json:"n,omitempty"`
	At   string   `json:"at"`
	D    bool     `json:"d,omitempty"`
	P    string   `json:"p,omitempty"`
	Sec  []string `json:"sec,omitempty"`
	Idf  []string `json:"i,omitempty"`
	Refs []string `json:"r,omitempty"`
}

// errStale is returned while loading when a checkpoint went away (another
// instance replaced it): load again.
var errStale = errors.New("fhir: checkpoint replaced while loading")
