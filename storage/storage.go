// Package storage is where every byte Consilium keeps ends up: a small
// object-store interface, two backends that satisfy it (MinIO for
// production, a local folder for the embedded default), and an envelope
// encryption layer that wraps either so that patient data is encrypted
// before it leaves the process.
//
// Start with [Store]. Backends are built with [NewFilesystem] and [NewMinIO];
// [NewEncrypted] wraps a backend with per-object data keys wrapped by a
// [Keyring]. Higher layers (FHIR, DICOMweb, cases, audit) only ever see a
// [Store].
//
// Object names are chosen by callers and must never contain anything that
// identifies a patient: use keyed hashes ([Keyring.Derive] gives the key).
//
// # Backends
//
// [Filesystem] keeps each object in one file (header and data) under a
// folder, written through a temporary file, fsync and rename, with
// flock(2) guarding IfAbsent and IfMatch across processes. [MinIO] keeps
// objects in a bucket and drives multipart uploads itself so that
// conditional puts stay atomic at any size and memory stays bounded.
// Names follow [ValidName]; metadata follows [ValidMetadata].
//
// # Encryption and keys
//
// [Encrypted] encrypts every object with its own data key (DARE 2.0 via
// github.com/minio/sio) and wraps that key with the active key of a
// [Keyring]; see its documentation for what is and is not protected.
// Keys rotate with [Keyring.Rotate], then [Rewrap] re-wraps old data keys
// in place (metadata only, through [MetadataUpdater]), then
// [Keyring.Retire] drops keys no object needs.
//
// # Testing
//
// Package storage/storagetest is the contract every Store meets; package
// internal/miniotest gives tests a real MinIO server.
package storage

import (
	"context"
	"errors"
	"io"
	"iter"
	"time"
)

// Errors that callers branch on. Backends translate their own errors into
// these so that callers can use errors.Is regardless of backend.
var (
	// ErrNotFound is returned by Get, Stat and Delete when no object has
	// the name.
	ErrNotFound = errors.New("storage: object not found")
	// ErrExists is returned by Put with PutOptions.IfAbsent when an object
	// with the name already exists.
	ErrExists = errors.New("storage: object already exists")
	// ErrPreconditionFailed is returned by Put with PutOptions.IfMatch when
	// the stored object's ETag differs (or the object is gone).
	ErrPreconditionFailed = errors.New("storage: precondition failed")
	// ErrIntegrity is returned (possibly from Read on a returned reader)
	// when stored bytes fail authentication: tampering, truncation, or an
	// object moved to another name.
	ErrIntegrity = errors.New("storage: integrity check failed")
	// ErrInvalidName is returned for names that are not valid object names.
	ErrInvalidName = errors.New("storage: invalid object name")
	// ErrLocked is returned when an object is under retention (object lock)
	// and the operation would delete or overwrite it.
	ErrLocked = errors.New("storage: object is locked")
)

// Store is an object store. Names are slash-separated paths of lower-case
// letters, digits and "._-" (see [ValidName]). Implementations are safe for
// concurrent use.
type Store interface {
	// Put stores the bytes read from r under name, replacing any existing
	// object unless opts say otherwise. The size need not be known in
	// advance. Nothing is visible under name until Put returns nil: a
	// failed or cancelled Put leaves the previous object (or none).
	// Returns ErrExists (IfAbsent) or ErrPreconditionFailed (IfMatch).
	Put(ctx context.Context, name string, r io.Reader, opts PutOptions) (Info, error)
	// Get opens the object for streaming. The caller closes the reader.
	// Returns ErrNotFound. Reads from the returned reader may fail with
	// ErrIntegrity.
	Get(ctx context.Context, name string, opts GetOptions) (io.ReadCloser, Info, error)
	// Stat returns the object's Info or ErrNotFound.
	Stat(ctx context.Context, name string) (Info, error)
	// List yields the objects whose names start with prefix, in
	// lexicographic order of name. Iteration stops at the first error.
	List(ctx context.Context, prefix string) iter.Seq2[Info, error]
	// Delete removes the object. Returns ErrNotFound or ErrLocked.
	Delete(ctx context.Context, name string) error
}

// Info describes a stored object.
type Info struct {
	// Name is the object's name.
	Name string
	// Size is the object's size in bytes as the caller sees it (the
	// plaintext size on an encrypted store). -1 when unknown.
	Size int64
	// ModTime is when the object was last written.
	ModTime time.Time
	// ETag is an opaque version token, suitable for PutOptions.IfMatch.
	ETag string
	// ContentType is the media type given at Put, if any.
	ContentType string
	// Metadata holds the caller's metadata given at Put. Keys are lower
	// case. Never put identifiers here.
	Metadata map[string]string
}

// PutOptions modify Put.
type PutOptions struct {
	// Size is the number of bytes r will yield, or 0 when unknown. It is a
	// hint that lets backends pick an upload strategy; a mismatch is an
	// error.
	Size int64
	// IfAbsent makes Put fail with ErrExists when the name is taken
	// (create-if-absent, for optimistic concurrency).
	IfAbsent bool
	// IfMatch makes Put fail with ErrPreconditionFailed unless the stored
	// object's ETag equals it (compare-and-swap).
	IfMatch string
	// ContentType is stored with the object.
	ContentType string
	// Metadata is stored with the object (small; no identifiers).
	Metadata map[string]string
	// Retention, when set, puts the object under retention (object lock on
	// MinIO, a read-only file on the filesystem backend).
	Retention *Retention
}

// GetOptions modify Get.
type GetOptions struct {
	// Offset is the first byte to return.
	Offset int64
	// Length is the number of bytes to return from Offset; 0 means to the
	// end of the object.
	Length int64
}

// RetentionMode is an object-lock mode.
type RetentionMode string

// Retention modes, as S3 object lock defines them.
const (
	// Governance retention can be lifted by a privileged user.
	Governance RetentionMode = "GOVERNANCE"
	// Compliance retention cannot be lifted by anyone until it expires.
	Compliance RetentionMode = "COMPLIANCE"
)

// Retention is an object lock on a single object.
type Retention struct {
	Mode  RetentionMode
	Until time.Time
}

// More errors that callers branch on, added after the first set.
var (
	// ErrInvalidMetadata is returned by Put when the content type or
	// metadata cannot be stored (see [ValidMetadata]), or uses a key the
	// storage layer reserves for itself.
	ErrInvalidMetadata = errors.New("storage: invalid metadata")
	// ErrInvalidRange is returned by Get when GetOptions ask for bytes
	// that do not exist: a negative offset or length, or an offset past
	// the end of the object. A range that starts inside the object and
	// runs past its end is cut at the end instead.
	ErrInvalidRange = errors.New("storage: invalid range")
	// ErrUnknownKey is returned when an encrypted object names a
	// key-encryption key the keyring does not hold (a wrong keyring, or a
	// key retired too early). It comes wrapped together with ErrIntegrity.
	ErrUnknownKey = errors.New("storage: unknown key-encryption key")
	// ErrKeyInUse is returned by [Keyring.Retire] for a key that objects
	// may still depend on.
	ErrKeyInUse = errors.New("storage: key-encryption key may still be in use")
)

// MetadataUpdater is an optional ability of a [Store]: replace an
// object's metadata without rewriting its bytes through the caller. Key
// rotation ([Rewrap]) needs it. Both built-in backends have it.
type MetadataUpdater interface {
	// UpdateMetadata replaces the object's metadata with meta, keeping
	// its data and content type. When ifMatch is not empty the update
	// only happens if the object's ETag equals it (ErrPreconditionFailed
	// otherwise). The object's ETag may change. Returns ErrNotFound,
	// ErrPreconditionFailed or ErrLocked (under retention).
	UpdateMetadata(ctx context.Context, name string, meta map[string]string, ifMatch string) error
}
