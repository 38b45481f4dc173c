package storage

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"golang.org/x/crypto/hkdf"
)

// keyringVersion is the keyring file format version.
const keyringVersion = 1

// kekSize is the size of key-encryption keys and of the root secret.
const kekSize = 32

// Keyring holds the gateway's storage secrets:
//
//   - key-encryption keys (KEKs), each with an id and a creation time, one
//     of them active. [NewEncrypted] wraps every object's data key with
//     the active KEK; [Keyring.Rotate] adds a new active one and [Rewrap]
//     re-wraps old data keys with it.
//   - a root secret that never rotates, from which [Keyring.Derive] gives
//     stable keys for keyed hashes (object names, pseudonyms). It never
//     rotates because values derived from it are stored in names.
//
// A Keyring is saved as a JSON file readable only by its owner (0600).
// It is safe for concurrent use.
type Keyring struct {
	mu     sync.RWMutex
	root   []byte
	active string
	keks   []kek
}

type kek struct {
	id      string
	created time.Time
	key     []byte
	// drained is when a complete [Rewrap] found no object still wrapped
	// by this key, after the key stopped being active. Zero if never.
	drained time.Time
}

// keyringFile is the JSON form of a Keyring.
type keyringFile struct {
	Version int       `json:"version"`
	Root    string    `json:"root"`
	Active  string    `json:"active"`
	Keys    []kekFile `json:"keys"`
}

type kekFile struct {
	ID      string    `json:"id"`
	Created time.Time `json:"created"`
	Key     string    `json:"key"`
	Drained time.Time `json:"drained,omitzero"`
}

// GenerateKeyring makes a new keyring with a fresh root secret and one
// active KEK, reading randomness from rand (crypto/rand.Reader in
// production).
func GenerateKeyring(rand io.Reader) (*Keyring, error) {
	root := make([]byte, kekSize)
	if _, err := io.ReadFull(rand, root); err != nil {
		return nil, fmt.Errorf("storage: generate keyring: %w", err)
	}
	k := &Keyring{root: root}
	if _, err := k.Rotate(rand); err != nil {
		return nil, err
	}
	return k, nil
}

// LoadKeyring reads a keyring saved by [Keyring.Save].
func LoadKeyring(path string) (*Keyring, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("storage: load keyring: %w", err)
	}
	k, err := parseKeyring(b)
	if err != nil {
		return nil, fmt.Errorf("storage: load keyring %s: %w", path, err)
	}
	return k, nil
}

func parseKeyring(b []byte) (*Keyring, error) {
	var f keyringFile
	if err := json.Unmarshal(b, &f); err != nil {
		return nil, fmt.Errorf("parse: %w", err)
	}
	if f.Version != keyringVersion {
		return nil, fmt.Errorf("unsupported keyring version %d", f.Version)
	}
	k := &Keyring{active: f.Active}
	var err error
	if k.root, err = decodeKey(f.Root); err != nil {
		return nil, fmt.Errorf("root secret: %w", err)
	}
	for _, kf := range f.Keys {
		if !validKEKID(kf.ID) {
			return nil, fmt.Errorf("invalid key id %q", kf.ID)
		}
		if slices.ContainsFunc(k.keks, func(e kek) bool { return e.id == kf.ID }) {
			return nil, fmt.Errorf("key id %q twice", kf.ID)
		}
		key, err := decodeKey(kf.Key)
		if err != nil {
			return nil, fmt.Errorf("key %s: %w", kf.ID, err)
		}
		k.keks = append(k.keks, kek{id: kf.ID, created: kf.Created, key: key, drained: kf.Drained})
	}
	if k.find(k.active) == nil {
		return nil, fmt.Errorf("active key %q is not in the keyring", f.Active)
	}
	return k, nil
}

func decodeKey(s string) ([]byte, error) {
	b, err := base64.StdEncoding.DecodeString(s)
	if err != nil {
		return nil, err
	}
	if len(b) != kekSize {
		return nil, fmt.Errorf("%d bytes, want %d", len(b), kekSize)
	}
	return b, nil
}

// validKEKID reports whether id looks like one Rotate makes: "k" and 16
// lower-case hex digits. Ids travel in object metadata, so they are kept
// short and plain.
func validKEKID(id string) bool {
	if len(id) != 17 || id[0] != 'k' {
		return false
	}
	for i := 1; i < len(id); i++ {
		if c := id[i]; !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return false
		}
	}
	return true
}

// Save writes the keyring to path atomically (temporary file, fsync,
// rename), readable only by its owner.
func (k *Keyring) Save(path string) error {
	k.mu.RLock()
	f := keyringFile{Version: keyringVersion, Root: base64.StdEncoding.EncodeToString(k.root), Active: k.active}
	for _, e := range k.keks {
		f.Keys = append(f.Keys, kekFile{ID: e.id, Created: e.created, Key: base64.StdEncoding.EncodeToString(e.key), Drained: e.drained})
	}
	k.mu.RUnlock()
	b, err := json.MarshalIndent(f, "", "  ")
	if err != nil {
		return fmt.Errorf("storage: save keyring: %w", err)
	}
	dir, name := filepath.Split(path)
	if dir == "" {
		dir = "."
	}
	if err := writeFileAtomic(dir, name, append(b, '\n'), 0o600); err != nil {
		return fmt.Errorf("storage: save keyring %s: %w", path, err)
	}
	return nil
}

// Rotate adds a new KEK, makes it the active one and returns its id.
// Objects written from now on are wrapped with it; run [Rewrap] to
// re-wrap older ones. Save the keyring before writing with it.
func (k *Keyring) Rotate(rand io.Reader) (newID string, err error) {
	key := make([]byte, kekSize)
	if _, err := io.ReadFull(rand, key); err != nil {
		return "", fmt.Errorf("storage: rotate keyring: %w", err)
	}
	var idb [8]byte
	if _, err := io.ReadFull(rand, idb[:]); err != nil {
		return "", fmt.Errorf("storage: rotate keyring: %w", err)
	}
	id := "k" + hex.EncodeToString(idb[:])
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.find(id) != nil {
		return "", errors.New("storage: rotate keyring: key id collision")
	}
	k.keks = append(k.keks, kek{id: id, created: time.Now().UTC(), key: key})
	k.active = id
	return id, nil
}

// ActiveID returns the id of the active KEK.
func (k *Keyring) ActiveID() string {
	k.mu.RLock()
	defer k.mu.RUnlock()
	return k.active
}

// KeyInfo describes one KEK, without its secret.
type KeyInfo struct {
	ID      string
	Created time.Time
	Active  bool
	// Drained is when a complete Rewrap last found no object wrapped by
	// this key (zero if never); only drained keys can be retired.
	Drained time.Time
}

// Keys lists the KEKs, oldest first.
func (k *Keyring) Keys() []KeyInfo {
	k.mu.RLock()
	defer k.mu.RUnlock()
	out := make([]KeyInfo, 0, len(k.keks))
	for _, e := range k.keks {
		out = append(out, KeyInfo{ID: e.id, Created: e.created, Active: e.id == k.active, Drained: e.drained})
	}
	return out
}

// Retire removes a KEK that no object needs any more. It refuses, with
// [ErrKeyInUse], the active KEK and any KEK that a complete [Rewrap]
// (over the whole store, started after the key stopped being active) has
// not found unused: objects wrapped only by a retired key can never be
// read again. In a deployment of several gateways, every gateway must
// have loaded the rotated keyring before that Rewrap starts, or one may
// still be wrapping new objects with the old key. Save the keyring
// afterwards.
func (k *Keyring) Retire(id string) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	e := k.find(id)
	switch {
	case e == nil:
		return fmt.Errorf("storage: retire %s: %w", id, ErrUnknownKey)
	case id == k.active:
		return fmt.Errorf("storage: retire %s: %w: it is the active key (rotate first)", id, ErrKeyInUse)
	case e.drained.IsZero():
		return fmt.Errorf("storage: retire %s: %w: no complete rewrap has found it unused", id, ErrKeyInUse)
	}
	k.keks = slices.DeleteFunc(k.keks, func(e kek) bool { return e.id == id })
	return nil
}

// markDrained records that a complete rewrap started at start found no
// object wrapped by the keys in unused. A key that was still active when
// the walk started is not marked.
func (k *Keyring) markDrained(unused []string, start time.Time, activeAtStart string) {
	k.mu.Lock()
	defer k.mu.Unlock()
	for i := range k.keks {
		e := &k.keks[i]
		if e.id != activeAtStart && e.id != k.active && slices.Contains(unused, e.id) {
			e.drained = start
		}
	}
}

func (k *Keyring) find(id string) *kek {
	for i := range k.keks {
		if k.keks[i].id == id {
			return &k.keks[i]
		}
	}
	return nil
}

// kek returns the key with the given id.
func (k *Keyring) kek(id string) ([]byte, bool) {
	k.mu.RLock()
	defer k.mu.RUnlock()
	if e := k.find(id); e != nil {
		return e.key, true
	}
	return nil, false
}

// activeKEK returns the active key and its id.
func (k *Keyring) activeKEK() (string, []byte) {
	k.mu.RLock()
	defer k.mu.RUnlock()
	return k.active, k.find(k.active).key
}

// Derive returns a stable 32-byte secret for purpose (for example
// "object-names" or "pseudonyms"), derived from the keyring's root
// secret with HKDF-SHA256. The same keyring and purpose always give the
// same secret; different purposes give independent ones. Rotation does
// not change it.
func (k *Keyring) Derive(purpose string) []byte {
	out := make([]byte, 32)
	r := hkdf.New(sha256.New, k.root, []byte("consilium keyring v1"), []byte(purpose))
	if _, err := io.ReadFull(r, out); err != nil {
		panic("storage: hkdf: " + err.Error()) // cannot happen for 32 bytes
	}
	return out
}

// NameHash returns a keyed hash of value, to put in object names in
// place of an identifier: 32 lower-case hex digits of
// HMAC-SHA256(Derive("object-names"), kind || 0 || value). kind keeps
// hashes of different sorts of identifier apart ("patient", "study").
func (k *Keyring) NameHash(kind, value string) string {
	mac := hmac.New(sha256.New, k.Derive("object-names"))
	mac.Write([]byte(kind))
	mac.Write([]byte{0})
	mac.Write([]byte(value))
	return hex.EncodeToString(mac.Sum(nil))[:32]
}
