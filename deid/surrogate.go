package deid

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"

	"github.com/consilium/consilium/storage"
)

// ErrNoStore is returned by [NewSurrogate] without a store or name key.
var ErrNoStore = errors.New("deid: surrogate source needs a store and a name key")

// SurrogateOptions are the optional parts of a [Surrogate] source.
type SurrogateOptions struct {
	// Prefix is put in front of every object name (default "deid/").
	Prefix string
}

// Surrogate issues random pseudonyms, offsets and UIDs and records them in
// a store, so they stay the same for the life of the patient's record and
// across gateway instances. Nothing it issues is derived from the patient's
// data (HIPAA 45 CFR 164.514(c)). Safe for concurrent use, also by several
// processes sharing one store.
type Surrogate struct {
	rec *mapping
}

var (
	_ Source   = (*Surrogate)(nil)
	_ Reverser = (*Surrogate)(nil)
)

// NewSurrogate returns a surrogate source recording into store. Pass an
// encrypted store: the records hold patient keys and original UIDs.
// nameKey (at least 32 bytes) keys the hashes that make the object names;
// the gateway passes a key derived from its keyring. It returns ErrNoStore
// when store is nil or nameKey is short.
func NewSurrogate(store storage.Store, nameKey []byte, opts SurrogateOptions) (*Surrogate, error) {
	if store == nil || len(nameKey) < MinSecretSize {
		return nil, ErrNoStore
	}
	prefix := opts.Prefix
	if prefix == "" {
		prefix = "deid/"
	}
	return &Surrogate{rec: newMapping(store, nameKey, prefix)}, nil
}

// Patient implements [Source].
func (s *Surrogate) Patient(ctx context.Context, key string) (Patient, error) {
	if key == "" {
		return Patient{}, ErrNoPatientKey
	}
	rec, err := s.rec.patient(ctx, key, func() (record, error) {
		var b [24]byte
		if _, err := rand.Read(b[:]); err != nil {
			return record{}, err
		}
		n := binary.BigEndian.Uint64(b[16:])
		return record{Pseudonym: hex.EncodeToString(b[:16]), OffsetDays: -1 - int(n%maxOffsetDays)}, nil
	})
	if err != nil {
		return Patient{}, fmt.Errorf("deid: surrogate patient: %w", err)
	}
	return Patient{Pseudonym: rec.Pseudonym, OffsetDays: rec.OffsetDays}, nil
}

// UIDs implements [Source]. New UIDs are random; each call that issues
// any costs one store write.
func (s *Surrogate) UIDs(ctx context.Context, key string, originals []string) ([]string, error) {
	if key == "" {
		return nil, ErrNoPatientKey
	}
	// Record the patient first so the reverse lookup finds the UIDs.
	if _, err := s.Patient(ctx, key); err != nil {
		return nil, err
	}
	out, err := s.rec.uids(ctx, key, originals, func(string) (string, error) { return randomUID() })
	if err != nil {
		return nil, fmt.Errorf("deid: surrogate UIDs: %w", err)
	}
	return out, nil
}

// PatientKey implements [Reverser].
func (s *Surrogate) PatientKey(ctx context.Context, pseudonym string) (string, error) {
	return s.rec.patientKey(ctx, pseudonym)
}

// OriginalUIDs implements [Reverser].
func (s *Surrogate) OriginalUIDs(ctx context.Context, pseudonym string, uids []string) ([]string, error) {
	return s.rec.originalUIDs(ctx, pseudonym, uids)
}
