// Package envelope is the format and the key handling of one encrypted
// object: its data key, wrapped by a key-encryption key (KEK), and the
// derivation of the key that encrypts its bytes.
//
// An object's bytes are encrypted with DARE 2.0 (github.com/minio/sio)
// under ObjectKey(dataKey, name); the data key is random per object and
// is wrapped with XChaCha20-Poly1305 under a KEK, with the format
// version, the KEK id, the empty flag and the object name as associated
// data. The envelope travels in the object's metadata under MetaKey as
//
//	1.<kek id>.<e|n>.<base64url(nonce || wrapped key)>
//
// so that re-wrapping under a new KEK rewrites metadata only. Binding the
// name into both the wrapping and the object key means an object copied
// or swapped to another name fails to decrypt.
package envelope

import (
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"strings"

	"golang.org/x/crypto/chacha20poly1305"
	"golang.org/x/crypto/hkdf"
)

// Version is the envelope format version.
const Version = 1

// MetaKey is the metadata key that holds the envelope.
const MetaKey = "consilium-envelope"

// KeySize is the size of data keys and KEKs.
const KeySize = 32

const (
	nonceSize   = chacha20poly1305.NonceSizeX
	wrappedSize = KeySize + chacha20poly1305.Overhead
	// maxLen bounds what Parse looks at.
	maxLen = 256
)

// ErrFormat is returned by Parse for a malformed envelope.
var ErrFormat = errors.New("envelope: malformed")

// ErrAuth is returned by Unwrap when the wrapped key does not
// authenticate: a wrong KEK, a changed envelope, or another name.
var ErrAuth = errors.New("envelope: wrapped key does not authenticate")

// Envelope is the wrapped data key of one object.
type Envelope struct {
	// KEKID names the key-encryption key that wraps the data key.
	KEKID string
	// Empty records that the object has no bytes. It is authenticated,
	// so an emptied (truncated to nothing) object is detected.
	Empty   bool
	Nonce   [nonceSize]byte
	Wrapped [wrappedSize]byte
}

// validID reports whether id can be a KEK id: 1 to 64 bytes of
// lower-case letters, digits and '-'.
func validID(id string) bool {
	if id == "" || len(id) > 64 {
		return false
	}
	for i := 0; i < len(id); i++ {
		if c := id[i]; !('a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '-') {
			return false
		}
	}
	return true
}

// String encodes the envelope for the object's metadata.
func (e *Envelope) String() string {
	flag := "n"
	if e.Empty {
		flag = "e"
	}
	blob := append(e.Nonce[:len(e.Nonce):len(e.Nonce)], e.Wrapped[:]...)
	return fmt.Sprintf("%d.%s.%s.%s", Version, e.KEKID, flag, base64.RawURLEncoding.EncodeToString(blob))
}

// Parse decodes an envelope written by String.
func Parse(s string) (*Envelope, error) {
	if len(s) > maxLen {
		return nil, fmt.Errorf("%w: %d bytes", ErrFormat, len(s))
	}
	parts := strings.Split(s, ".")
	if len(parts) != 4 {
		return nil, fmt.Errorf("%w: %d fields", ErrFormat, len(parts))
	}
	if parts[0] != "1" {
		return nil, fmt.Errorf("%w: unsupported version %q", ErrFormat, parts[0])
	}
	e := &Envelope{KEKID: parts[1]}
	if !validID(e.KEKID) {
		return nil, fmt.Errorf("%w: key id", ErrFormat)
	}
	switch parts[2] {
	case "e":
		e.Empty = true
	case "n":
	default:
		return nil, fmt.Errorf("%w: flag %q", ErrFormat, parts[2])
	}
	// The decoder skips CR and LF; an envelope must be one exact token.
	if strings.ContainsFunc(parts[3], func(r rune) bool {
		return !('a' <= r && r <= 'z' || 'A' <= r && r <= 'Z' || '0' <= r && r <= '9' || r == '-' || r == '_')
	}) {
		return nil, fmt.Errorf("%w: wrapped key encoding", ErrFormat)
	}
	blob, err := base64.RawURLEncoding.Strict().DecodeString(parts[3])
	if err != nil || len(blob) != nonceSize+wrappedSize {
		return nil, fmt.Errorf("%w: wrapped key", ErrFormat)
	}
	copy(e.Nonce[:], blob)
	copy(e.Wrapped[:], blob[nonceSize:])
	return e, nil
}

// aad is the associated data of the wrapping: everything the envelope
// says, and the object's name.
func (e *Envelope) aad(name string) []byte {
	flag := byte('n')
	if e.Empty {
		flag = 'e'
	}
	return fmt.Appendf(nil, "consilium storage envelope\x00%d\x00%s\x00%c\x00%s", Version, e.KEKID, flag, name)
}

// New makes a random data key for the object name and wraps it with kek
// (whose id is kekID). It returns the data key and its envelope.
func New(rand io.Reader, kekID string, kek []byte, name string, empty bool) ([]byte, *Envelope, error) {
	dataKey := make([]byte, KeySize)
	if _, err := io.ReadFull(rand, dataKey); err != nil {
		return nil, nil, fmt.Errorf("envelope: data key: %w", err)
	}
	e, err := Wrap(rand, kekID, kek, name, empty, dataKey)
	if err != nil {
		return nil, nil, err
	}
	return dataKey, e, nil
}

// Wrap wraps dataKey for the object name with kek.
func Wrap(rand io.Reader, kekID string, kek []byte, name string, empty bool, dataKey []byte) (*Envelope, error) {
	if !validID(kekID) {
		return nil, fmt.Errorf("envelope: invalid key id %q", kekID)
	}
	if len(dataKey) != KeySize {
		return nil, errors.New("envelope: data key size")
	}
	aead, err := chacha20poly1305.NewX(kek)
	if err != nil {
		return nil, fmt.Errorf("envelope: %w", err)
	}
	e := &Envelope{KEKID: kekID, Empty: empty}
	if _, err := io.ReadFull(rand, e.Nonce[:]); err != nil {
		return nil, fmt.Errorf("envelope: nonce: %w", err)
	}
	aead.Seal(e.Wrapped[:0], e.Nonce[:], dataKey, e.aad(name))
	return e, nil
}

// Unwrap returns the data key of the object name, or ErrAuth.
func (e *Envelope) Unwrap(kek []byte, name string) ([]byte, error) {
	aead, err := chacha20poly1305.NewX(kek)
	if err != nil {
		return nil, fmt.Errorf("envelope: %w", err)
	}
	key, err := aead.Open(nil, e.Nonce[:], e.Wrapped[:], e.aad(name))
	if err != nil {
		return nil, ErrAuth
	}
	return key, nil
}

// ObjectKey derives the key that encrypts the bytes of the object name
// from its data key (HKDF-SHA256).
func ObjectKey(dataKey []byte, name string) []byte {
	out := make([]byte, KeySize)
	r := hkdf.New(sha256.New, dataKey, nil, []byte("consilium storage object key v1\x00"+name))
	if _, err := io.ReadFull(r, out); err != nil {
		panic("envelope: hkdf: " + err.Error()) // cannot happen for 32 bytes
	}
	return out
}
