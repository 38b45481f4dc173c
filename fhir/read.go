package fhir

import (
	"context"
	"errors"
	"fmt"
	"iter"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
)

// Version describes one stored version of a resource.
type Version struct {
	Type, ID string
	// VersionID is meta.versionId (1, 2, ...).
	VersionID int
	// LastUpdated is meta.lastUpdated (a FHIR instant).
	LastUpdated string
	// Deleted marks a deletion (no body).
	Deleted bool
	// Patient is the id of the Patient the version is linked to, or "".
	Patient string
	// Labels are its meta.security codes.
	Labels []string

	v *version
}

// ETag returns W/"n".
func (v Version) ETag() string { return `W/"` + strconv.Itoa(v.VersionID) + `"` }

func versionOf(typ, id string, n int, v *version) Version {
	return Version{Type: typ, ID: id, VersionID: n, LastUpdated: v.at, Deleted: v.del, Patient: v.patient, Labels: v.sec, v: v}
}

// loaded returns org's state, fresh; the caller holds o.mu.RLock until
// done with it (call the returned function).
func (s *Store) loaded(ctx context.Context, org string) (*state, func(), error) {
	o, err := s.org(org)
	if err != nil {
		return nil, nil, err
	}
	if err := s.fresh(ctx, o); err != nil {
		return nil, nil, err
	}
	o.mu.RLock()
	return o.st, o.mu.RUnlock, nil
}

// Read returns the current version of typ/id in org. It returns
// ErrNotFound, or ErrDeleted together with the deletion's Version.
func (s *Store) Read(ctx context.Context, org, typ, id string) (Version, error) {
	st, done, err := s.loaded(ctx, org)
	if err != nil {
		return Version{}, err
	}
	defer done()
	h := st.lookup(typ, id)
	if h == nil {
		return Version{}, newError(ErrNotFound, CodeNotFound, "", "no such resource")
	}
	v := versionOf(typ, id, len(h.vs), h.current())
	if v.Deleted {
		return v, newError(ErrDeleted, CodeDeleted, "", "the resource is deleted")
	}
	return v, nil
}

// VRead returns version vid of typ/id. It returns ErrNotFound, or
// ErrDeleted with the Version when that version is a deletion.
func (s *Store) VRead(ctx context.Context, org, typ, id string, vid int) (Version, error) {
	st, done, err := s.loaded(ctx, org)
	if err != nil {
		return Version{}, err
	}
	defer done()
	h := st.lookup(typ, id)
	if h == nil || vid < 1 || vid > len(h.vs) {
		return Version{}, newError(ErrNotFound, CodeNotFound, "", "no such version")
	}
	v := versionOf(typ, id, vid, h.vs[vid-1])
	if v.Deleted {
		return v, newError(ErrDeleted, CodeDeleted, "", "this version is a deletion")
	}
	return v, nil
}

// History returns every version of typ/id, newest first, or ErrNotFound.
func (s *Store) History(ctx context.Context, org, typ, id string) ([]Version, error) {
	st, done, err := s.loaded(ctx, org)
	if err != nil {
		return nil, err
	}
	defer done()
	h := st.lookup(typ, id)
	if h == nil {
		return nil, newError(ErrNotFound, CodeNotFound, "", "no such resource")
	}
	out := make([]Version, len(h.vs))
	for i, v := range h.vs {
		out[len(h.vs)-1-i] = versionOf(typ, id, i+1, v)
	}
	return out, nil
}

// Search returns how many current resources q selects in org, and the
// page of them that q's Count and Offset ask for (ordered by id).
func (s *Store) Search(ctx context.Context, org string, q Query) (int, []Version, error) {
	st, done, err := s.loaded(ctx, org)
	if err != nil {
		return 0, nil, err
	}
	defer done()
	ids := st.match(q)
	total := len(ids)
	lo := min(q.Offset, total)
	hi := min(lo+q.Count, total)
	page := make([]Version, 0, hi-lo)
	for _, id := range ids[lo:hi] {
		h := st.lookup(q.Type, id)
		page = append(page, versionOf(q.Type, id, len(h.vs), h.current()))
	}
	return total, page, nil
}

// Everything returns the current versions that make up a patient's
// record in org: the Patient (when stored) first, then every resource
// linked to it ordered by type and id, then the resources those reference
// that belong to no patient (Practitioner, Organization, Location,
// Medication, ...), never another patient's. It returns ErrNotFound when
// nothing is linked to the patient. Read the bodies with [Store.Bodies].
func (s *Store) Everything(ctx context.Context, org, patientID string) ([]Version, error) {
	st, done, err := s.loaded(ctx, org)
	if err != nil {
		return nil, err
	}
	defer done()
	keys := ids(st.byPatient[patientID])
	if len(keys) == 0 {
		return nil, newError(ErrNotFound, CodeNotFound, "", "no such patient")
	}
	self := "Patient/" + patientID
	if i := slices.Index(keys, self); i > 0 {
		keys = append(append([]string{self}, keys[:i]...), keys[i+1:]...)
	}
	seen := map[string]bool{}
	var out []Version
	var refs []string
	for _, k := range keys {
		typ, id, _ := strings.Cut(k, "/")
		h := st.res[k]
		v := h.current()
		out = append(out, versionOf(typ, id, len(h.vs), v))
		seen[k] = true
		refs = append(refs, v.refs...)
	}
	slices.Sort(refs)
	for _, k := range slices.Compact(refs) {
		if seen[k] {
			continue
		}
		h := st.res[k]
		v := h.current()
		if v == nil || v.del || v.patient != "" {
			continue
		}
		typ, id, _ := strings.Cut(k, "/")
		out = append(out, versionOf(typ, id, len(h.vs), v))
	}
	return out, nil
}

// Consents returns the current Consent resources (JSON, meta included)
// linked to a patient of org, for the policy input (policy.ConsentFromFHIR
// reads each). A patient without consents gives none and no error.
func (s *Store) Consents(ctx context.Context, org, patientID string) ([][]byte, error) {
	_, page, err := s.Search(ctx, org, Query{Type: "Consent", Patient: patientID, Count: 1 << 30})
	if err != nil {
		return nil, err
	}
	out := make([][]byte, 0, len(page))
	for b, err := range s.Bodies(ctx, page) {
		if err != nil {
			return nil, err
		}
		out = append(out, b)
	}
	return out, nil
}

// Body returns the JSON of one version, with meta.versionId and
// meta.lastUpdated.
func (s *Store) Body(ctx context.Context, v Version) ([]byte, error) {
	for b, err := range s.Bodies(ctx, []Version{v}) {
		return b, err
	}
	return nil, errors.New("fhir: no body")
}

// Bodies yields the JSON of each version of vs, in order, with
// meta.versionId and meta.lastUpdated. Versions stored together are read
// together; memory stays bounded by a window of versions. It stops at
// the first error.
func (s *Store) Bodies(ctx context.Context, vs []Version) iter.Seq2[[]byte, error] {
	const window = 256
	const maxGap = 256 << 10
	return func(yield func([]byte, error) bool) {
		for start := 0; start < len(vs); start += window {
			chunk := vs[start:min(start+window, len(vs))]
			bodies := make([][]byte, len(chunk))
			order := make([]int, 0, len(chunk))
			for i, v := range chunk {
				if v.v == nil || v.Deleted {
					yield(nil, fmt.Errorf("fhir: %s/%s version %d has no body", v.Type, v.ID, v.VersionID))
					return
				}
				order = append(order, i)
			}
			slices.SortFunc(order, func(a, b int) int {
				va, vb := chunk[a].v, chunk[b].v
				if c := strings.Compare(va.seg, vb.seg); c != 0 {
					return c
				}
				return int(va.off - vb.off)
			})
			for i := 0; i < len(order); {
				first := chunk[order[i]].v
				end := first.off + first.n
				j := i + 1
				for j < len(order) {
					nv := chunk[order[j]].v
					if nv.seg != first.seg || nv.off > end+maxGap || nv.off+nv.n-first.off > 32<<20 {
						break
					}
					end = max(end, nv.off+nv.n)
					j++
				}
				buf, err := readRange(ctx, s.s, first.seg, first.off, end-first.off)
				if err == nil && int64(len(buf)) != end-first.off {
					err = fmt.Errorf("fhir: segment shorter than its index says")
				}
				if err != nil {
					yield(nil, err)
					return
				}
				for _, k := range order[i:j] {
					v := chunk[k]
					raw := buf[v.v.off-first.off : v.v.off-first.off+v.v.n]
					b, err := spliceMeta(make([]byte, 0, len(raw)+80), raw, v.Type, v.ID, strconv.Itoa(v.VersionID), v.LastUpdated)
					if err != nil {
						yield(nil, err)
						return
					}
					bodies[k] = b
				}
				i = j
			}
			for _, b := range bodies {
				if !yield(b, nil) {
					return
				}
			}
		}
	}
}

// runReads performs the GET entries of a Bundle after its writes are
// committed. Failures are recorded on their entry: the writes stand.
func (s *Store) runReads(ctx context.Context, org string, es []*entry, opts WriteOptions) {
	for _, e := range es {
		if e.err != nil {
			continue
		}
		var err error
		switch e.op {
		case opRead, opVRead:
			var v Version
			if e.op == opRead {
				v, err = s.Read(ctx, org, e.typ, e.id)
			} else {
				v, err = s.VRead(ctx, org, e.typ, e.id, e.vid)
			}
			if err != nil {
				break
			}
			e.target, e.version, e.at, e.status = v.ID, v.VersionID, v.LastUpdated, http.StatusOK
			if n, ok := parseETag(e.ifNoneMatch); ok && e.ifNoneMatch != "" && n == v.VersionID {
				e.status = http.StatusNotModified
				break
			}
			if e.method == "GET" {
				e.out, err = s.Body(ctx, v)
			}
		case opSearch:
			vals, perr := url.ParseQuery(e.query)
			if perr != nil {
				err = newError(ErrMalformed, CodeInvalid, "", "the search parameters are not URL-encoded correctly")
				break
			}
			q, qerr := ParseQuery(e.typ, vals)
			if qerr != nil {
				err = qerr
				break
			}
			e.out, err = s.searchset(ctx, org, q, opts.Base)
			e.status = http.StatusOK
		}
		if err != nil {
			e.err = atEntry(err, e.index, e.root)
			if KindOf(err) == nil {
				e.err = &Error{Kind: errInternal, Entry: e.index, Issues: []Issue{{Severity: SeverityError, Code: CodeProcessing, Details: "the read failed"}}, Cause: err}
			}
		}
	}
}

// errInternal marks an entry that failed on the server's side.
var errInternal = errors.New("fhir: internal error")

// searchset runs q and returns a searchset Bundle of its page.
func (s *Store) searchset(ctx context.Context, org string, q Query, base string) ([]byte, error) {
	total, page, err := s.Search(ctx, org, q)
	if err != nil {
		return nil, err
	}
	var buf bytesBuffer
	bw := NewBundleWriter(&buf, "searchset", total, nil)
	i := 0
	for b, err := range s.Bodies(ctx, page) {
		if err != nil {
			return nil, err
		}
		if err := bw.Add(FullURL(base, page[i].Type, page[i].ID), b); err != nil {
			return nil, err
		}
		i++
	}
	if err := bw.Close(); err != nil {
		return nil, err
	}
	return buf.b, nil
}

type bytesBuffer struct{ b []byte }

func (w *bytesBuffer) Write(p []byte) (int, error) {
	w.b = append(w.b, p...)
	return len(p), nil
}
