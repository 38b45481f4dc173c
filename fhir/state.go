package fhir

import (
	"slices"
	"strings"
)

// state is an organisation's index, rebuilt from its checkpoint and
// segments: every version of every resource, and the lookups that
// searches, conditional operations and patient compartments need (over
// current, undeleted versions only). Versions are numbered by their
// position in the history.
type state struct {
	res       map[string]*history            // "Type/id"
	byPatient map[string]map[string]struct{} // Patient id → "Type/id"
	byType    map[string]map[string]struct{} // type → ids
	byIdent   map[string]map[string]struct{} // identKey → ids
	// segs counts the versions each segment holds, for Sweep.
	segs map[string]int
}

type history struct {
	vs []*version
}

func (h *history) current() *version {
	if h == nil || len(h.vs) == 0 {
		return nil
	}
	return h.vs[len(h.vs)-1]
}

// version is one stored version of a resource.
type version struct {
	seg     string
	off, n  int64 // absolute byte range of the body in seg
	at      string
	del     bool
	patient string
	sec     []string
	// idf and refs are kept for the current version only.
	idf  []string
	refs []string
}

func newState() *state {
	return &state{
		res:       map[string]*history{},
		byPatient: map[string]map[string]struct{}{},
		byType:    map[string]map[string]struct{}{},
		byIdent:   map[string]map[string]struct{}{},
		segs:      map[string]int{},
	}
}

// identKeys returns the lookup keys of one identifier of a resource type:
// the exact system|value, and the value alone (a token search without a
// system matches any system).
func identKeys(typ, sysval string) (exact, any string) {
	_, val, _ := strings.Cut(sysval, "|")
	return typ + "\x00" + sysval, typ + "\x01" + val
}

func addTo(m map[string]map[string]struct{}, k, v string) {
	s := m[k]
	if s == nil {
		s = map[string]struct{}{}
		m[k] = s
	}
	s[v] = struct{}{}
}

func removeFrom(m map[string]map[string]struct{}, k, v string) {
	if s := m[k]; s != nil {
		delete(s, v)
		if len(s) == 0 {
			delete(m, k)
		}
	}
}

// add appends a version of typ/id and updates the lookups.
func (st *state) add(typ, id string, v *version) {
	key := typ + "/" + id
	h := st.res[key]
	if h == nil {
		h = &history{}
		st.res[key] = h
	}
	if prev := h.current(); prev != nil {
		if !prev.del {
			st.unindex(typ, id, key, prev)
		}
		prev.idf, prev.refs = nil, nil
	}
	h.vs = append(h.vs, v)
	st.segs[v.seg]++
	if !v.del {
		st.index(typ, id, key, v)
	}
}

func (st *state) index(typ, id, key string, v *version) {
	addTo(st.byType, typ, id)
	if v.patient != "" {
		addTo(st.byPatient, v.patient, key)
	}
	for _, sv := range v.idf {
		e, a := identKeys(typ, sv)
		addTo(st.byIdent, e, id)
		addTo(st.byIdent, a, id)
	}
}

func (st *state) unindex(typ, id, key string, v *version) {
	removeFrom(st.byType, typ, id)
	if v.patient != "" {
		removeFrom(st.byPatient, v.patient, key)
	}
	for _, sv := range v.idf {
		e, a := identKeys(typ, sv)
		removeFrom(st.byIdent, e, id)
		// The value-only key may be shared by another identifier of the
		// same resource (same value, other system).
		if !slices.ContainsFunc(v.idf, func(o string) bool {
			_, ov, _ := strings.Cut(o, "|")
			_, vv, _ := strings.Cut(sv, "|")
			return o != sv && ov == vv
		}) {
			removeFrom(st.byIdent, a, id)
		}
	}
}

// applySegment adds the versions of a committed segment, in order.
func (st *state) applySegment(name string, idx segIndex, base int64) {
	for _, e := range idx.Entries {
		v := &version{seg: name, at: idx.At, del: e.Del, patient: e.P, sec: e.Sec, idf: e.Idf, refs: e.Refs}
		if !e.Del {
			v.off, v.n = base+e.Off, e.N
			if e.X > 0 && e.X <= len(idx.Parts) {
				v.seg, v.off = idx.Parts[e.X-1], e.Off
			}
		}
		st.add(e.T, e.ID, v)
	}
}

// lookup returns the history of typ/id, or nil.
func (st *state) lookup(typ, id string) *history { return st.res[typ+"/"+id] }

// ids returns the sorted members of a lookup set.
func ids(m map[string]struct{}) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

// checkpoint returns the state as a checkpoint file.
func (st *state) checkpoint(seq int64) *ckptFile {
	c := &ckptFile{V: 1, Seq: seq, Res: make([]ckptRes, 0, len(st.res))}
	segIdx := map[string]int{}
	keys := make([]string, 0, len(st.res))
	for k := range st.res {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		typ, id, _ := strings.Cut(k, "/")
		h := st.res[k]
		r := ckptRes{T: typ, ID: id, Vs: make([]ckptVer, len(h.vs))}
		for i, v := range h.vs {
			si, ok := segIdx[v.seg]
			if !ok {
				si = len(c.Seg)
				segIdx[v.seg] = si
				c.Seg = append(c.Seg, v.seg)
			}
			r.Vs[i] = ckptVer{S: si, O: v.off, N: v.n, At: v.at, D: v.del, P: v.patient, Sec: v.sec, Idf: v.idf, Refs: v.refs}
		}
		c.Res = append(c.Res, r)
	}
	return c
}

// stateFromCheckpoint rebuilds a state from a checkpoint.
func stateFromCheckpoint(c *ckptFile) (*state, bool) {
	st := newState()
	for _, r := range c.Res {
		for _, cv := range r.Vs {
			if cv.S < 0 || cv.S >= len(c.Seg) {
				return nil, false
			}
			st.add(r.T, r.ID, &version{seg: c.Seg[cv.S], off: cv.O, n: cv.N, at: cv.At, del: cv.D, patient: cv.P, sec: cv.Sec, idf: cv.Idf, refs: cv.Refs})
		}
	}
	return st, true
}
