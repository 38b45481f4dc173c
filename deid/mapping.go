package deid

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"

	"github.com/consilium/consilium/storage"
)

// The mapping layout in the store. Object names carry only keyed hashes
// (HMAC-SHA256 under the caller's name key), never a patient key, pseudonym
// or UID:
//
//	<prefix>p/<h(key)>/record        {"key","pseudonym","offset_days"}  written once (IfAbsent)
//	<prefix>p/<h(key)>/uids/<seq>    {"uids":[[original,new],...]}      append-only segments (IfAbsent)
//	<prefix>n/<h(pseudonym)>         {"key"}                            reverse index, written once
//
// Segments make the UID mapping an append-only log: a writer that finds its
// next sequence number taken reloads, adopts the values another instance
// recorded and retries, so two gateway instances never issue two different
// UIDs for one original. One segment holds every new UID of one call, so a
// file (or a whole study, when the caller batches) costs one store write.
const (
	segmentDigits   = 10
	maxPutAttempts  = 32
	maxCachedKeys   = 4096
	maxMappingBytes = 64 << 20
)

type record struct {
	Key        string `json:"key"`
	Pseudonym  string `json:"pseudonym"`
	OffsetDays int    `json:"offset_days"`
}

type segment struct {
	UIDs [][2]string `json:"uids"`
}

type indexEntry struct {
	Key string `json:"key"`
}

// mapping records patients and UID mappings in a store and caches them.
type mapping struct {
	store   storage.Store
	nameKey []byte
	prefix  string

	mu       sync.Mutex
	patients map[string]*patientState // by hashed key
}

type patientState struct {
	mu     sync.Mutex
	rec    *record
	uids   map[string]string // original → new
	rev    map[string]string // new → original
	next   int               // next segment number to write
	loaded bool              // segments read at least once
}

func newMapping(store storage.Store, nameKey []byte, prefix string) *mapping {
	if prefix != "" && !strings.HasSuffix(prefix, "/") {
		prefix += "/"
	}
	return &mapping{store: store, nameKey: bytes.Clone(nameKey), prefix: prefix, patients: map[string]*patientState{}}
}

func (m *mapping) hash(domain, s string) string {
	mac := hmac.New(sha256.New, m.nameKey)
	mac.Write([]byte("consilium/deid/v1/name/" + domain + "\x00"))
	mac.Write([]byte(s))
	return hex.EncodeToString(mac.Sum(nil))
}

func (m *mapping) patientDir(key string) string {
	return m.prefix + "p/" + m.hash("patient", key) + "/"
}
func (m *mapping) indexName(pseudonym string) string {
	return m.prefix + "n/" + m.hash("pseudonym", pseudonym)
}

func (m *mapping) state(key string) *patientState {
	h := m.hash("patient", key)
	m.mu.Lock()
	defer m.mu.Unlock()
	st, ok := m.patients[h]
	if !ok {
		if len(m.patients) >= maxCachedKeys {
			// Everything is in the store; the cache only saves reads.
			for k := range m.patients {
				delete(m.patients, k)
				break
			}
		}
		st = &patientState{uids: map[string]string{}, rev: map[string]string{}}
		m.patients[h] = st
	}
	return st
}

// patient returns the recorded patient, creating it with mint when absent.
// The reverse index is written before the record, so a record never exists
// without its index entry.
func (m *mapping) patient(ctx context.Context, key string, mint func() (record, error)) (record, error) {
	st := m.state(key)
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.rec != nil {
		return *st.rec, nil
	}
	name := m.patientDir(key) + "record"
	for attempt := 0; attempt < maxPutAttempts; attempt++ {
		var got record
		err := m.getJSON(ctx, name, &got)
		if err == nil {
			if got.Key != key {
				return record{}, fmt.Errorf("deid: mapping record does not match its patient (name key changed?)")
			}
			st.rec = &got
			return got, nil
		}
		if !errors.Is(err, storage.ErrNotFound) {
			return record{}, err
		}
		rec, err := mint()
		if err != nil {
			return record{}, err
		}
		rec.Key = key
		if err := m.putJSON(ctx, m.indexName(rec.Pseudonym), indexEntry{Key: key}); err != nil && !errors.Is(err, storage.ErrExists) {
			return record{}, err
		}
		err = m.putJSON(ctx, name, rec)
		if err == nil {
			st.rec = &rec
			return rec, nil
		}
		if !errors.Is(err, storage.ErrExists) {
			return record{}, err
		}
		// Another instance recorded this patient first: read theirs.
	}
	return record{}, fmt.Errorf("deid: recording patient: too much contention")
}

// uids maps originals through the recorded mapping, minting and recording
// the missing ones in one segment.
func (m *mapping) uids(ctx context.Context, key string, originals []string, mint func(string) (string, error)) ([]string, error) {
	st := m.state(key)
	st.mu.Lock()
	defer st.mu.Unlock()
	if !st.loaded || missing(st, originals) {
		if err := m.loadSegments(ctx, key, st); err != nil {
			return nil, err
		}
	}
	for attempt := 0; attempt < maxPutAttempts; attempt++ {
		var seg segment
		seen := map[string]bool{}
		for _, o := range originals {
			if _, ok := st.uids[o]; ok || seen[o] {
				continue
			}
			seen[o] = true
			n, err := mint(o)
			if err != nil {
				return nil, err
			}
			seg.UIDs = append(seg.UIDs, [2]string{o, n})
		}
		if len(seg.UIDs) == 0 {
			out := make([]string, len(originals))
			for i, o := range originals {
				out[i] = st.uids[o]
			}
			return out, nil
		}
		name := fmt.Sprintf("%suids/%0*d", m.patientDir(key), segmentDigits, st.next)
		err := m.putJSON(ctx, name, seg)
		switch {
		case err == nil:
			st.add(seg)
			st.next++
		case errors.Is(err, storage.ErrExists):
			// Another instance appended first; adopt what it recorded.
			if err := m.loadSegments(ctx, key, st); err != nil {
				return nil, err
			}
		default:
			return nil, err
		}
	}
	return nil, fmt.Errorf("deid: recording UIDs: too much contention")
}

func missing(st *patientState, originals []string) bool {
	for _, o := range originals {
		if _, ok := st.uids[o]; !ok {
			return true
		}
	}
	return false
}

// loadSegments reads the segments from st.next on until the first absent
// one. Segments are immutable, so what is cached stays valid.
func (m *mapping) loadSegments(ctx context.Context, key string, st *patientState) error {
	dir := m.patientDir(key) + "uids/"
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		var seg segment
		err := m.getJSON(ctx, fmt.Sprintf("%s%0*d", dir, segmentDigits, st.next), &seg)
		if errors.Is(err, storage.ErrNotFound) {
			st.loaded = true
			return nil
		}
		if err != nil {
			return err
		}
		st.add(seg)
		st.next++
	}
}

func (st *patientState) add(seg segment) {
	for _, p := range seg.UIDs {
		if _, ok := st.uids[p[0]]; ok {
			continue // the first recording wins
		}
		st.uids[p[0]] = p[1]
		st.rev[p[1]] = p[0]
	}
}

func (m *mapping) patientKey(ctx context.Context, pseudonym string) (string, error) {
	var e indexEntry
	err := m.getJSON(ctx, m.indexName(pseudonym), &e)
	if errors.Is(err, storage.ErrNotFound) {
		return "", ErrUnknown
	}
	if err != nil {
		return "", err
	}
	return e.Key, nil
}

func (m *mapping) originalUIDs(ctx context.Context, pseudonym string, uids []string) ([]string, error) {
	key, err := m.patientKey(ctx, pseudonym)
	if err != nil {
		return nil, err
	}
	st := m.state(key)
	st.mu.Lock()
	defer st.mu.Unlock()
	out := make([]string, len(uids))
	for pass := 0; pass < 2; pass++ {
		ok := true
		for i, u := range uids {
			o, found := st.rev[u]
			if !found {
				ok = false
				break
			}
			out[i] = o
		}
		if ok {
			return out, nil
		}
		if pass == 0 {
			if err := m.loadSegments(ctx, key, st); err != nil {
				return nil, err
			}
		}
	}
	return nil, ErrUnknown
}

func (m *mapping) getJSON(ctx context.Context, name string, v any) error {
	rc, _, err := m.store.Get(ctx, name, storage.GetOptions{})
	if err != nil {
		return err
	}
	defer rc.Close()
	b, err := io.ReadAll(io.LimitReader(rc, maxMappingBytes+1))
	if err != nil {
		return fmt.Errorf("deid: reading mapping object: %w", err)
	}
	if len(b) > maxMappingBytes {
		return fmt.Errorf("deid: mapping object too large")
	}
	if err := json.Unmarshal(b, v); err != nil {
		return fmt.Errorf("deid: decoding mapping object: %w", err)
	}
	return nil
}

func (m *mapping) putJSON(ctx context.Context, name string, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	_, err = m.store.Put(ctx, name, bytes.NewReader(b), storage.PutOptions{
		Size:        int64(len(b)),
		IfAbsent:    true,
		ContentType: "application/json",
	})
	return err
}
