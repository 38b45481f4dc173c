package deid

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"

	"github.com/consilium/consilium/storage"
)

// MinSecretSize is the smallest secret [NewKeyed] accepts.
const MinSecretSize = 32

// ErrShortSecret is returned by [NewKeyed] for a secret shorter than
// [MinSecretSize] bytes.
var ErrShortSecret = errors.New("deid: secret too short")

// KeyedOptions are the optional parts of a [Keyed] source.
type KeyedOptions struct {
	// Store, when set, receives a record of every patient and UID issued,
	// so that the source can answer [Reverser] calls. Pass an encrypted
	// store: the records hold patient keys and original UIDs.
	Store storage.Store
	// NameKey keys the hashes in object names. Defaults to a key derived
	// from the secret.
	NameKey []byte
	// Prefix is put in front of every object name (default "deid/").
	Prefix string
}

// Keyed derives pseudonyms, offsets and UIDs from a secret with
// HMAC-SHA256: the same secret always gives the same values, in any
// process. Safe for concurrent use.
type Keyed struct {
	secret []byte
	rec    *mapping // nil without a store
	// domains holds, per domain, the HMAC state after the key and the
	// domain prefix: mac clones it instead of keying a new HMAC for each
	// of the dozen values of every instance. Never written after NewKeyed.
	domains map[string]hash.Cloner
}

var (
	_ Source   = (*Keyed)(nil)
	_ Reverser = (*Keyed)(nil)
)

// NewKeyed returns a keyed source. The gateway passes
// keyring.Derive("pseudonyms"); the CLI reads the secret from a file. It
// returns ErrShortSecret for a secret shorter than [MinSecretSize].
func NewKeyed(secret []byte, opts KeyedOptions) (*Keyed, error) {
	if len(secret) < MinSecretSize {
		return nil, fmt.Errorf("%w: %d bytes, want at least %d", ErrShortSecret, len(secret), MinSecretSize)
	}
	k := &Keyed{secret: append([]byte(nil), secret...), domains: map[string]hash.Cloner{}}
	for _, d := range []string{"pseudonym", "offset", "uid"} {
		m := hmac.New(sha256.New, k.secret)
		m.Reset() // keeps the keyed states, so Sum restores rather than recomputes
		m.Write([]byte("consilium/deid/v1/" + d + "\x00"))
		if c, ok := m.(hash.Cloner); ok {
			k.domains[d] = c
		}
	}
	if opts.Store != nil {
		nameKey := opts.NameKey
		if len(nameKey) == 0 {
			nameKey = k.mac("names", "")
		}
		prefix := opts.Prefix
		if prefix == "" {
			prefix = "deid/"
		}
		k.rec = newMapping(opts.Store, nameKey, prefix)
	}
	return k, nil
}

// mac is HMAC-SHA256(secret, "consilium/deid/v1/<domain>\x00" || s). The
// domain keeps the pseudonym, the offset and UIDs independent.
func (k *Keyed) mac(domain, s string) []byte {
	if base, ok := k.domains[domain]; ok {
		if m, err := base.Clone(); err == nil {
			io.WriteString(m, s)
			return m.Sum(nil)
		}
	}
	m := hmac.New(sha256.New, k.secret)
	m.Write([]byte("consilium/deid/v1/" + domain + "\x00"))
	m.Write([]byte(s))
	return m.Sum(nil)
}

func (k *Keyed) derive(key string) record {
	pseudonym := hex.EncodeToString(k.mac("pseudonym", key)[:16])
	n := binary.BigEndian.Uint64(k.mac("offset", key)[:8])
	return record{Key: key, Pseudonym: pseudonym, OffsetDays: -1 - int(n%maxOffsetDays)}
}

// Patient implements [Source].
func (k *Keyed) Patient(ctx context.Context, key string) (Patient, error) {
	if key == "" {
		return Patient{}, ErrNoPatientKey
	}
	rec := k.derive(key)
	if k.rec != nil {
		var err error
		rec, err = k.rec.patient(ctx, key, func() (record, error) { return rec, nil })
		if err != nil {
			return Patient{}, fmt.Errorf("deid: recording keyed patient: %w", err)
		}
	}
	return Patient{Pseudonym: rec.Pseudonym, OffsetDays: rec.OffsetDays}, nil
}

// UID returns the new UID for one original. It does not depend on the
// patient, and it is not recorded.
func (k *Keyed) UID(original string) string {
	var b [16]byte
	copy(b[:], k.mac("uid", original))
	return uidFromBytes(b, 8)
}

// UIDs implements [Source]. The new UID depends on the original only, so a
// UID referenced from two patients' files maps the same way.
func (k *Keyed) UIDs(ctx context.Context, key string, originals []string) ([]string, error) {
	if key == "" {
		return nil, ErrNoPatientKey
	}
	if k.rec == nil {
		out := make([]string, len(originals))
		for i, o := range originals {
			out[i] = k.UID(o)
		}
		return out, nil
	}
	// The patient must be recorded for the reverse lookup to find it.
	if _, err := k.Patient(ctx, key); err != nil {
		return nil, err
	}
	out, err := k.rec.uids(ctx, key, originals, func(o string) (string, error) { return k.UID(o), nil })
	if err != nil {
		return nil, fmt.Errorf("deid: recording keyed UIDs: %w", err)
	}
	return out, nil
}

// PatientKey implements [Reverser]. Without a store it returns ErrUnknown.
func (k *Keyed) PatientKey(ctx context.Context, pseudonym string) (string, error) {
	if k.rec == nil {
		return "", ErrUnknown
	}
	return k.rec.patientKey(ctx, pseudonym)
}

// OriginalUIDs implements [Reverser]. Without a store it returns
// ErrUnknown.
func (k *Keyed) OriginalUIDs(ctx context.Context, pseudonym string, uids []string) ([]string, error) {
	if k.rec == nil {
		return nil, ErrUnknown
	}
	return k.rec.originalUIDs(ctx, pseudonym, uids)
}
