package cases

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"iter"
	"strings"

	"github.com/consilium/consilium/storage"
)

// Object names. Case ids are random; principal ids are not patient data.
const (
	casePrefix      = "cases/"
	opinionPrefix   = "opinions/"
	packetPrefix    = "packets/"
	directoryPrefix = "principals/"
	// maxRecord bounds one stored JSON record.
	maxRecord = 4 << 20
	// updateAttempts bounds how often Update retries a lost race.
	updateAttempts = 16
)

// Store keeps cases and opinions in a storage.Store (pass an encrypted
// one: a case names the hospital's patient) and packets in another (they
// are age-encrypted already: the raw backend will do). Safe for
// concurrent use.
type Store struct {
	s       storage.Store
	packets storage.Store
}

// NewStore returns a Store keeping cases and opinions in s and packets in
// packets.
func NewStore(s, packets storage.Store) *Store { return &Store{s: s, packets: packets} }

// Create stores a new case. It fails if the id is taken.
func (st *Store) Create(ctx context.Context, c *Case) error {
	if !ValidID(c.ID) {
		return fmt.Errorf("%w: case id %q", ErrInvalid, c.ID)
	}
	b, err := json.Marshal(c)
	if err != nil {
		return err
	}
	if _, err := st.s.Put(ctx, casePrefix+c.ID, bytes.NewReader(b), storage.PutOptions{
		Size: int64(len(b)), IfAbsent: true, ContentType: "application/json",
	}); err != nil {
		return fmt.Errorf("cases: storing case: %w", err)
	}
	return nil
}

// Get returns the case with id, or ErrNotFound.
func (st *Store) Get(ctx context.Context, id string) (*Case, error) {
	c, _, err := st.get(ctx, id)
	return c, err
}

func (st *Store) get(ctx context.Context, id string) (*Case, string, error) {
	if !ValidID(id) {
		return nil, "", ErrNotFound
	}
	var c Case
	etag, err := readJSON(ctx, st.s, casePrefix+id, &c)
	if err != nil {
		return nil, "", err
	}
	return &c, etag, nil
}

// Update applies change to the current case and stores the result if
// nobody changed the case meanwhile, retrying on a lost race. change may
// be called more than once; an error from it stops the update and is
// returned as is.
func (st *Store) Update(ctx context.Context, id string, change func(*Case) error) (*Case, error) {
	for range updateAttempts {
		c, etag, err := st.get(ctx, id)
		if err != nil {
			return nil, err
		}
		if err := change(c); err != nil {
			return nil, err
		}
		b, err := json.Marshal(c)
		if err != nil {
			return nil, err
		}
		_, err = st.s.Put(ctx, casePrefix+id, bytes.NewReader(b), storage.PutOptions{
			Size: int64(len(b)), IfMatch: etag, ContentType: "application/json",
		})
		if errors.Is(err, storage.ErrPreconditionFailed) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("cases: storing case: %w", err)
		}
		return c, nil
	}
	return nil, ErrConflict
}

// List yields every case, in no particular order.
func (st *Store) List(ctx context.Context) iter.Seq2[*Case, error] {
	return func(yield func(*Case, error) bool) {
		for info, err := range st.s.List(ctx, casePrefix) {
			if err != nil {
				yield(nil, fmt.Errorf("cases: listing: %w", err))
				return
			}
			c, err := st.Get(ctx, strings.TrimPrefix(info.Name, casePrefix))
			if errors.Is(err, ErrNotFound) {
				continue
			}
			if !yield(c, err) || err != nil {
				return
			}
		}
	}
}

// readJSON reads a bounded JSON record into v and returns its ETag.
func readJSON(ctx context.Context, s storage.Store, name string, v any) (string, error) {
	rc, info, err := s.Get(ctx, name, storage.GetOptions{})
	if errors.Is(err, storage.ErrNotFound) {
		return "", ErrNotFound
	}
	if err != nil {
		return "", fmt.Errorf("cases: reading %s: %w", name, err)
	}
	defer rc.Close()
	b, err := io.ReadAll(io.LimitReader(rc, maxRecord+1))
	if err != nil {
		return "", fmt.Errorf("cases: reading %s: %w", name, err)
	}
	if len(b) > maxRecord {
		return "", fmt.Errorf("cases: %s is larger than %d bytes", name, maxRecord)
	}
	if err := json.Unmarshal(b, v); err != nil {
		return "", fmt.Errorf("cases: decoding %s: %w", name, err)
	}
	return info.ETag, nil
}

// putJSON stores v as a JSON record.
func putJSON(ctx context.Context, s storage.Store, name string, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	if _, err := s.Put(ctx, name, bytes.NewReader(b), storage.PutOptions{Size: int64(len(b)), ContentType: "application/json"}); err != nil {
		return fmt.Errorf("cases: storing %s: %w", name, err)
	}
	return nil
}
