package storage

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"iter"
	"strings"

	"github.com/consilium/consilium/storage/internal/envelope"
	"github.com/minio/sio"
)

// ReservedMetadataPrefix starts the metadata keys the storage layer keeps
// for itself; Put on an [Encrypted] store refuses them from callers.
const ReservedMetadataPrefix = "consilium-"

// DARE 2.0 splits the plaintext into packages of up to 64 KiB, each
// stored with a 16-byte header and a 16-byte tag.
const (
	darePayload = 64 << 10
	darePackage = darePayload + 32
)

// Encrypted is a [Store] that encrypts every object before it reaches
// the backend (envelope encryption) and authenticates every byte it
// returns.
//
// Each object gets a random 32-byte data key. Its bytes are encrypted
// with DARE 2.0 (github.com/minio/sio: AES-256-GCM or ChaCha20-Poly1305
// in 64 KiB authenticated packages with sequence numbers and a final
// flag) under a key derived from the data key and the object name. The
// data key is wrapped with the keyring's active KEK (XChaCha20-Poly1305,
// the name and KEK id as associated data) and kept in the object's
// metadata, so that [Rewrap] can re-wrap it without touching the data.
//
// What it guarantees: a changed, reordered, truncated or extended byte,
// an object moved or swapped to another name, or a wrong keyring makes
// the read fail with an error wrapping [ErrIntegrity]. Reads stream, so
// the packages before a damaged one have already been returned when the
// damage is found: each returned byte is authentic, but a caller that
// must not act on part of an object has to read it to the end first.
// Range reads ([GetOptions]) fetch and decrypt only the packages that
// hold the range.
//
// What it does not protect: the caller's metadata and content type are
// stored in clear and unauthenticated (never put identifiers there), and
// object names are visible (use [Keyring.NameHash]). The plaintext size
// follows from the stored size. The backend's ETag is passed through.
type Encrypted struct {
	backend Store
	kr      *Keyring
	rand    io.Reader
}

var _ Store = (*Encrypted)(nil)

// NewEncrypted returns a store that encrypts objects into backend with
// data keys wrapped by kr's active KEK.
func NewEncrypted(backend Store, kr *Keyring) *Encrypted {
	return &Encrypted{backend: backend, kr: kr, rand: rand.Reader}
}

// Backend returns the store that holds the encrypted objects.
func (e *Encrypted) Backend() Store { return e.backend }

func integrityErr(op, name string, err error) error {
	return fmt.Errorf("storage: %s %s: %w: %w", op, name, ErrIntegrity, err)
}

// sioConfig is the DARE configuration for one object: version 2.0 only.
func sioConfig(key []byte, seq uint32) sio.Config {
	return sio.Config{Key: key, MinVersion: sio.Version20, MaxVersion: sio.Version20, SequenceNumber: seq}
}

// Put implements [Store.Put]. Metadata keys starting with
// [ReservedMetadataPrefix] are refused with [ErrInvalidMetadata].
func (e *Encrypted) Put(ctx context.Context, name string, r io.Reader, opts PutOptions) (Info, error) {
	if err := checkPut(name, opts); err != nil {
		return Info{}, err
	}
	for k := range opts.Metadata {
		if strings.HasPrefix(k, ReservedMetadataPrefix) {
			return Info{}, fmt.Errorf("storage: put %s: %w: key %q is reserved", name, ErrInvalidMetadata, k)
		}
	}
	// Read one byte first: whether the object is empty is part of the
	// authenticated envelope, and must be known before the backend is
	// given the metadata.
	var first [1]byte
	n, err := io.ReadFull(contextReader{ctx, r}, first[:])
	if err != nil && !errors.Is(err, io.EOF) {
		return Info{}, fmt.Errorf("storage: put %s: read source: %w", name, err)
	}
	empty := n == 0
	if empty && opts.Size > 0 {
		return Info{}, fmt.Errorf("storage: put %s: source gave 0 bytes, not the %d announced", name, opts.Size)
	}
	kekID, kek := e.kr.activeKEK()
	dataKey, env, err := envelope.New(e.rand, kekID, kek, name, empty)
	if err != nil {
		return Info{}, fmt.Errorf("storage: put %s: %w", name, err)
	}
	bopts := opts
	bopts.Metadata = cloneMeta(opts.Metadata)
	if bopts.Metadata == nil {
		bopts.Metadata = map[string]string{}
	}
	bopts.Metadata[envelope.MetaKey] = env.String()
	var src io.Reader = bytes.NewReader(nil)
	count := &countReader{want: opts.Size}
	if !empty {
		count.r = io.MultiReader(bytes.NewReader(first[:]), r)
		if opts.Size > 0 {
			es, err := sio.EncryptedSize(uint64(opts.Size))
			if err != nil {
				return Info{}, fmt.Errorf("storage: put %s: %w", name, err)
			}
			bopts.Size = int64(es)
		}
		src, err = sio.EncryptReader(count, sioConfig(envelope.ObjectKey(dataKey, name), 0))
		if err != nil {
			return Info{}, fmt.Errorf("storage: put %s: %w", name, err)
		}
	}
	info, err := e.backend.Put(ctx, name, src, bopts)
	if err != nil {
		return Info{}, err
	}
	info.Size = count.n
	info.Metadata = stripReserved(info.Metadata)
	return info, nil
}

// countReader counts the plaintext and fails at its end if a size was
// announced and not met.
type countReader struct {
	r    io.Reader
	n    int64
	want int64
}

func (c *countReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	if c.want > 0 && c.n > c.want {
		return n, fmt.Errorf("source gave more than the %d bytes announced", c.want)
	}
	if err == io.EOF && c.want > 0 && c.n != c.want {
		return n, fmt.Errorf("source gave %d bytes, not the %d announced", c.n, c.want)
	}
	return n, err
}

func stripReserved(m map[string]string) map[string]string {
	out := make(map[string]string, len(m))
	for k, v := range m {
		if !strings.HasPrefix(k, ReservedMetadataPrefix) {
			out[k] = v
		}
	}
	return out
}

// envelopeOf parses the envelope of the backend object described by
// info and returns it with the plaintext size.
func envelopeOf(info Info) (*envelope.Envelope, int64, error) {
	s, ok := info.Metadata[envelope.MetaKey]
	if !ok {
		return nil, 0, errors.New("object is not encrypted (no envelope)")
	}
	env, err := envelope.Parse(s)
	if err != nil {
		return nil, 0, err
	}
	if env.Empty != (info.Size == 0) {
		return nil, 0, fmt.Errorf("object of %d bytes does not match its envelope", info.Size)
	}
	size, err := sio.DecryptedSize(uint64(info.Size))
	if err != nil {
		return nil, 0, err
	}
	return env, int64(size), nil
}

// objectKey unwraps the data key of name and derives its object key.
func (e *Encrypted) objectKey(name string, env *envelope.Envelope) ([]byte, error) {
	kek, ok := e.kr.kek(env.KEKID)
	if !ok {
		return nil, fmt.Errorf("%w %s", ErrUnknownKey, env.KEKID)
	}
	dataKey, err := env.Unwrap(kek, name)
	if err != nil {
		return nil, err
	}
	return envelope.ObjectKey(dataKey, name), nil
}

// plainInfo turns the backend's Info into the caller's.
func plainInfo(info Info, size int64) Info {
	info.Size = size
	info.Metadata = stripReserved(info.Metadata)
	return info
}

// Get implements [Store.Get]. Reads from the returned reader fail with an
// error wrapping [ErrIntegrity] at the first package that does not
// authenticate.
func (e *Encrypted) Get(ctx context.Context, name string, opts GetOptions) (io.ReadCloser, Info, error) {
	if err := ValidName(name); err != nil {
		return nil, Info{}, err
	}
	if opts.Offset < 0 || opts.Length < 0 {
		return nil, Info{}, fmt.Errorf("storage: get %s: %w: negative offset or length", name, ErrInvalidRange)
	}
	if opts.Offset == 0 && opts.Length == 0 {
		rc, info, err := e.backend.Get(ctx, name, GetOptions{})
		if err != nil {
			return nil, Info{}, err
		}
		r, size, err := e.open(name, info, rc, 0, 0, -1)
		if err != nil {
			rc.Close()
			return nil, Info{}, err
		}
		return r, plainInfo(info, size), nil
	}
	// A range: the plaintext size (from the backend's size) says which
	// packages to fetch. If the object changes between the Stat and the
	// ranged Get the ETags differ and the pair is tried again.
	for attempt := 0; ; attempt++ {
		st, err := e.backend.Stat(ctx, name)
		if err != nil {
			return nil, Info{}, err
		}
		env, size, err := envelopeOf(st)
		if err != nil {
			return nil, Info{}, integrityErr("get", name, err)
		}
		off, n, err := checkRange(opts, size)
		if err != nil {
			return nil, Info{}, fmt.Errorf("storage: get %s: %w", name, err)
		}
		if size == 0 {
			// Nothing to read, but the key (and so the empty flag) is
			// still checked.
			if _, err := e.objectKey(name, env); err != nil {
				return nil, Info{}, integrityErr("get", name, err)
			}
			return io.NopCloser(bytes.NewReader(nil)), plainInfo(st, 0), nil
		}
		// Fetch from the package holding the first byte; a read at the
		// very end still fetches the last package, so that a truncated
		// object is noticed.
		first := min(off, size-1) / darePayload
		cOff := first * darePackage
		cLen := int64(0) // to the end
		if off+n < size {
			last := (off + n - 1) / darePayload
			cLen = (last+1)*darePackage - cOff
		}
		rc, info, err := e.backend.Get(ctx, name, GetOptions{Offset: cOff, Length: cLen})
		if err != nil {
			return nil, Info{}, err
		}
		if info.ETag != st.ETag {
			rc.Close()
			if attempt < 3 {
				continue
			}
			return nil, Info{}, fmt.Errorf("storage: get %s: object keeps changing", name)
		}
		limit := n
		if cLen == 0 {
			limit = -1 // read to the end, so the final package is checked
		}
		r, _, err := e.open(name, info, rc, uint32(first), off-first*darePayload, limit)
		if err != nil {
			rc.Close()
			return nil, Info{}, err
		}
		return r, plainInfo(info, size), nil
	}
}

// open checks the envelope of the backend object described by info and
// returns a reader of its plaintext from rc, which holds the ciphertext
// from package seq on: skip bytes are dropped, then limit bytes are
// returned (all, if limit < 0).
func (e *Encrypted) open(name string, info Info, rc io.ReadCloser, seq uint32, skip, limit int64) (io.ReadCloser, int64, error) {
	env, size, err := envelopeOf(info)
	if err != nil {
		return nil, 0, integrityErr("get", name, err)
	}
	key, err := e.objectKey(name, env)
	if err != nil {
		return nil, 0, integrityErr("get", name, err)
	}
	if env.Empty {
		return &decReader{r: bytes.NewReader(nil), c: rc, name: name}, 0, nil
	}
	dr, err := sio.DecryptReader(rc, sioConfig(key, seq))
	if err != nil {
		return nil, 0, fmt.Errorf("storage: get %s: %w", name, err)
	}
	d := &decReader{r: dr, c: rc, name: name}
	if skip > 0 {
		if _, err := io.CopyN(io.Discard, d, skip); err != nil {
			return nil, 0, err
		}
	}
	if limit >= 0 {
		d.r = io.LimitReader(dr, limit)
	}
	return d, size, nil
}

// decReader turns DARE errors into ErrIntegrity and keeps the first
// error, so that nothing is read past a failed package.
type decReader struct {
	r    io.Reader
	c    io.Closer
	name string
	err  error
}

func (d *decReader) Read(p []byte) (int, error) {
	if d.err != nil {
		return 0, d.err
	}
	n, err := d.r.Read(p)
	if err != nil {
		var se sio.Error
		if errors.As(err, &se) {
			err = integrityErr("get", d.name, err)
		}
		d.err = err
	}
	return n, err
}

func (d *decReader) Close() error { return d.c.Close() }

// Stat implements [Store.Stat]. It checks that the object carries a
// well-formed envelope (ErrIntegrity otherwise) but does not unwrap its
// key; Get does.
func (e *Encrypted) Stat(ctx context.Context, name string) (Info, error) {
	info, err := e.backend.Stat(ctx, name)
	if err != nil {
		return Info{}, err
	}
	_, size, err := envelopeOf(info)
	if err != nil {
		return Info{}, integrityErr("stat", name, err)
	}
	return plainInfo(info, size), nil
}

// List implements [Store.List]. An object whose envelope or size is not
// valid is listed with Size -1 (reading it fails with ErrIntegrity), so
// that one damaged object does not hide the others.
func (e *Encrypted) List(ctx context.Context, prefix string) iter.Seq2[Info, error] {
	return func(yield func(Info, error) bool) {
		for info, err := range e.backend.List(ctx, prefix) {
			if err != nil {
				yield(Info{}, err)
				return
			}
			_, size, err := envelopeOf(info)
			if err != nil {
				size = -1
			}
			if !yield(plainInfo(info, size), nil) {
				return
			}
		}
	}
}

// Delete implements [Store.Delete].
func (e *Encrypted) Delete(ctx context.Context, name string) error {
	return e.backend.Delete(ctx, name)
}
