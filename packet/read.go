package packet

import (
	"archive/tar"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"

	"aead.dev/minisign"
	"filippo.io/age"
)

// Limits bound what a [Reader] accepts. Zero fields take the defaults.
type Limits struct {
	// MaxFiles is the most entries (default 200 000).
	MaxFiles int
	// MaxFileSize is the largest file (default 16 GiB).
	MaxFileSize int64
	// MaxTotalSize is the most content in all (default 1 TiB).
	MaxTotalSize int64
	// MaxManifestSize is the largest manifest.json (default 64 MiB).
	MaxManifestSize int64
}

const maxSignatureSize = 4 << 10

func (l Limits) withDefaults() Limits {
	if l.MaxFiles <= 0 {
		l.MaxFiles = 200_000
	}
	if l.MaxFileSize <= 0 {
		l.MaxFileSize = 16 << 30
	}
	if l.MaxTotalSize <= 0 {
		l.MaxTotalSize = 1 << 40
	}
	if l.MaxManifestSize <= 0 {
		l.MaxManifestSize = 64 << 20
	}
	return l
}

// Reader reads one packet: it decrypts it, checks the tar stream entry by
// entry as it goes (regular files with safe paths only, within [Limits]),
// hashes every file, and at the end verifies the manifest's signature and
// that every file is there with the size and SHA-256 the manifest gives,
// and nothing else. Use [Reader.Verify] or [Reader.Unpack], once.
type Reader struct {
	// Limits may be changed before Verify or Unpack.
	Limits Limits

	r    io.Reader
	pub  minisign.PublicKey
	used bool
}

// Open starts reading an encrypted packet from r. It reads the age header
// and fails if identity cannot decrypt it (the error wraps age's
// *age.NoIdentityMatchError); pub is the gateway's public key.
func Open(r io.Reader, identity age.Identity, pub minisign.PublicKey) (*Reader, error) {
	dr, err := age.Decrypt(r, identity)
	if err != nil {
		return nil, fmt.Errorf("packet: decrypting: %w", err)
	}
	return &Reader{r: streamReader{dr}, pub: pub}, nil
}

// Verify reads the whole packet and checks it without writing anything,
// and returns its manifest. Errors: ErrBadSignature, ErrIntegrity,
// ErrUnsafePath, ErrTooLarge, ErrMalformed, and decryption errors (a
// truncated or altered stream).
func (r *Reader) Verify(ctx context.Context) (*Manifest, error) {
	return r.read(ctx, nil)
}

// Unpack reads, checks and writes the packet's files under dir, which must
// not exist or be empty. Files go to a hidden directory next to dir first
// and are moved to dir only when everything verified, so dir never holds
// an unverified packet; on error nothing is left. Files are created 0600,
// directories 0700 (the content is medical data, even de-identified).
func (r *Reader) Unpack(ctx context.Context, dir string) (*Manifest, error) {
	dir = filepath.Clean(dir)
	if ents, err := os.ReadDir(dir); err == nil && len(ents) > 0 {
		return nil, fmt.Errorf("packet: %s is not empty", dir)
	} else if err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("packet: %w", err)
	}
	parent := filepath.Dir(dir)
	if err := os.MkdirAll(parent, 0o700); err != nil {
		return nil, fmt.Errorf("packet: %w", err)
	}
	tmp, err := os.MkdirTemp(parent, "."+filepath.Base(dir)+".partial-*")
	if err != nil {
		return nil, fmt.Errorf("packet: %w", err)
	}
	ok := false
	defer func() {
		if !ok {
			os.RemoveAll(tmp)
		}
	}()
	root, err := os.OpenRoot(tmp)
	if err != nil {
		return nil, fmt.Errorf("packet: %w", err)
	}
	defer root.Close()
	m, err := r.read(ctx, func(name string) (io.WriteCloser, error) {
		// os.Root refuses any path leaving tmp, whatever ValidPath let
		// through; O_EXCL refuses to write through anything already there.
		if d := path.Dir(name); d != "." {
			if err := root.MkdirAll(d, 0o700); err != nil {
				return nil, err
			}
		}
		return root.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	})
	if err != nil {
		return nil, err
	}
	if err := os.Remove(dir); err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("packet: %w", err)
	}
	if err := os.Rename(tmp, dir); err != nil {
		return nil, fmt.Errorf("packet: %w", err)
	}
	ok = true
	return m, nil
}

type entry struct {
	size int64
	sum  string
}

func (r *Reader) read(ctx context.Context, sink func(name string) (io.WriteCloser, error)) (*Manifest, error) {
	if r.used {
		return nil, errors.New("packet: a Reader reads once")
	}
	r.used = true
	lim := r.Limits.withDefaults()
	tr := tar.NewReader(r.r)
	got := map[string]entry{}
	var manifest, sig []byte
	var total int64
	n := 0
	for {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, readErr("tar", err)
		}
		if n++; n > lim.MaxFiles {
			return nil, fmt.Errorf("%w: more than %d files", ErrTooLarge, lim.MaxFiles)
		}
		if hdr.Typeflag != tar.TypeReg && hdr.Typeflag != tar.TypeRegA {
			return nil, fmt.Errorf("%w: %q is not a regular file (type %q)", ErrUnsafePath, hdr.Name, hdr.Typeflag)
		}
		if err := ValidPath(hdr.Name); err != nil {
			return nil, err
		}
		if _, dup := got[hdr.Name]; dup || (hdr.Name == ManifestPath && manifest != nil) {
			return nil, fmt.Errorf("%w: %q twice", ErrMalformed, hdr.Name)
		}
		if sig != nil {
			return nil, fmt.Errorf("%w: %q after the signature", ErrMalformed, hdr.Name)
		}
		if hdr.Size < 0 || hdr.Size > lim.MaxFileSize {
			return nil, fmt.Errorf("%w: %q has %d bytes (limit %d)", ErrTooLarge, hdr.Name, hdr.Size, lim.MaxFileSize)
		}
		if total += hdr.Size; total > lim.MaxTotalSize {
			return nil, fmt.Errorf("%w: more than %d bytes", ErrTooLarge, lim.MaxTotalSize)
		}
		switch hdr.Name {
		case ManifestPath:
			if manifest, err = readSmall(tr, hdr, lim.MaxManifestSize); err != nil {
				return nil, err
			}
			if err := save(sink, hdr.Name, manifest); err != nil {
				return nil, err
			}
		case SignaturePath:
			if manifest == nil {
				return nil, fmt.Errorf("%w: signature before the manifest", ErrMalformed)
			}
			if sig, err = readSmall(tr, hdr, maxSignatureSize); err != nil {
				return nil, err
			}
			if err := save(sink, hdr.Name, sig); err != nil {
				return nil, err
			}
		default:
			if manifest != nil {
				return nil, fmt.Errorf("%w: %q after the manifest", ErrMalformed, hdr.Name)
			}
			e, err := copyFile(ctx, tr, hdr, sink)
			if err != nil {
				return nil, err
			}
			got[hdr.Name] = e
		}
	}
	if manifest == nil || sig == nil {
		return nil, fmt.Errorf("%w: no manifest and signature at the end", ErrMalformed)
	}
	// The tar stream ended; the rest of the age stream must be tar padding
	// and must end with age's final chunk, which proves nothing was cut.
	if err := drainZeros(r.r); err != nil {
		return nil, err
	}
	if !minisign.Verify(r.pub, manifest, sig) {
		return nil, ErrBadSignature
	}
	m, err := ParseManifest(manifest)
	if err != nil {
		return nil, err
	}
	if m.GatewayKeyID != KeyID(r.pub.ID()) {
		return nil, fmt.Errorf("%w: manifest names key %s, signed by %s", ErrMalformed, m.GatewayKeyID, KeyID(r.pub.ID()))
	}
	listed := map[string]bool{}
	for _, f := range m.Files {
		listed[f.Path] = true
		e, ok := got[f.Path]
		switch {
		case !ok:
			return nil, fmt.Errorf("%w: %s is missing", ErrIntegrity, f.Path)
		case e.size != f.Size:
			return nil, fmt.Errorf("%w: %s has %d bytes, the manifest says %d", ErrIntegrity, f.Path, e.size, f.Size)
		case e.sum != f.SHA256:
			return nil, fmt.Errorf("%w: %s has another SHA-256 than the manifest's", ErrIntegrity, f.Path)
		}
	}
	for p := range got {
		if !listed[p] {
			return nil, fmt.Errorf("%w: %s is not in the manifest", ErrIntegrity, p)
		}
	}
	return m, nil
}

// copyFile hashes one entry, writing it to the sink when there is one.
func copyFile(ctx context.Context, tr *tar.Reader, hdr *tar.Header, sink func(string) (io.WriteCloser, error)) (entry, error) {
	h := sha256.New()
	var w io.Writer = h
	var out io.WriteCloser
	if sink != nil {
		var err error
		if out, err = sink(hdr.Name); err != nil {
			return entry{}, fmt.Errorf("packet: writing %s: %w", hdr.Name, err)
		}
		w = io.MultiWriter(out, h)
	}
	n, err := io.Copy(w, ctxReader{ctx, tr})
	if out != nil {
		if cerr := out.Close(); err == nil && cerr != nil {
			err = fmt.Errorf("packet: writing %s: %w", hdr.Name, cerr)
		}
	}
	if err != nil {
		return entry{}, readErr(hdr.Name, err)
	}
	return entry{size: n, sum: hexSum(h)}, nil
}

func readSmall(tr *tar.Reader, hdr *tar.Header, limit int64) ([]byte, error) {
	if hdr.Size > limit {
		return nil, fmt.Errorf("%w: %s has %d bytes (limit %d)", ErrTooLarge, hdr.Name, hdr.Size, limit)
	}
	b, err := io.ReadAll(io.LimitReader(tr, limit+1))
	if err != nil {
		return nil, readErr(hdr.Name, err)
	}
	return b, nil
}

func save(sink func(string) (io.WriteCloser, error), name string, b []byte) error {
	if sink == nil {
		return nil
	}
	w, err := sink(name)
	if err != nil {
		return fmt.Errorf("packet: writing %s: %w", name, err)
	}
	_, err = w.Write(b)
	if cerr := w.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("packet: writing %s: %w", name, err)
	}
	return nil
}

// drainZeros reads r to its end and fails on anything but zero bytes.
func drainZeros(r io.Reader) error {
	buf := make([]byte, 32<<10)
	for {
		n, err := r.Read(buf)
		for _, c := range buf[:n] {
			if c != 0 {
				return fmt.Errorf("%w: data after the end of the tar stream", ErrMalformed)
			}
		}
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return readErr("end of stream", err)
		}
	}
}

// streamError marks an error of the decrypting reader: age reports an
// altered or truncated ciphertext as a read error of the plaintext.
type streamError struct{ err error }

func (e *streamError) Error() string { return e.err.Error() }
func (e *streamError) Unwrap() error { return e.err }

type streamReader struct{ r io.Reader }

func (s streamReader) Read(p []byte) (int, error) {
	n, err := s.r.Read(p)
	if err != nil && err != io.EOF {
		err = &streamError{err}
	}
	return n, err
}

// readErr classifies an error met reading what: a damaged or truncated
// encrypted stream is ErrIntegrity, cancellation stays itself, anything
// else (the tar layer) is ErrMalformed.
func readErr(what string, err error) error {
	var se *streamError
	switch {
	case errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded):
		return err
	case errors.As(err, &se):
		return fmt.Errorf("%w: %s: the encrypted stream is damaged or truncated: %v", ErrIntegrity, what, se.err)
	}
	return fmt.Errorf("%w: %s: %v", ErrMalformed, what, err)
}

type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}
