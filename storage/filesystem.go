package storage

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"io/fs"
	"iter"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/consilium/consilium/storage/internal/objfile"
)

// On-disk layout of a [Filesystem] store. Object "a/b" is the file
// "a/b@obj" under the root: the suffix holds '@', which no valid name
// holds, so object "a" (file "a@obj") and objects under "a/" (folder "a")
// never collide. Every other entry holding '@' belongs to the store.
const (
	fsObjSuffix  = "@obj"
	fsTempPrefix = "@tmp-"
	fsLockDir    = "@locks"
	fsMarker     = "@consilium-store"
	fsLockCount  = 64
	// fsMarkerText is the marker file's content and format version.
	fsMarkerText = "consilium filesystem store v1\n"
)

// Filesystem is a [Store] kept in a local folder: the embedded default
// for single-node and development use.
//
// Each object is one file that holds a small header (ETag, content type,
// metadata, retention) followed by the object's bytes (see
// storage/internal/objfile). Writes go to a temporary file in the same
// folder, are fsynced, and are renamed into place, and the folder is
// fsynced, so a crash leaves either the old object or the new one. Every
// change of a name (put, delete, metadata update) takes an exclusive
// flock(2) on one of 64 lock files chosen by the name, so IfAbsent and
// IfMatch are race-free across goroutines and across processes that share
// the folder. Retained objects are made read-only (0444) and refuse
// delete and overwrite with [ErrLocked] until their retention ends.
//
// Temporary files left by a crash are named "@tmp-*"; they are never
// listed and may be removed when no process uses the store. Empty folders
// are left in place after deletes.
type Filesystem struct {
	root string
	log  *slog.Logger
	now  func() time.Time
}

var (
	_ Store           = (*Filesystem)(nil)
	_ MetadataUpdater = (*Filesystem)(nil)
)

// FilesystemOption configures [NewFilesystem].
type FilesystemOption func(*Filesystem)

// WithFilesystemLogger sets the logger (the default discards).
func WithFilesystemLogger(l *slog.Logger) FilesystemOption {
	return func(f *Filesystem) { f.log = l.With("component", "storage.filesystem") }
}

// WithFilesystemClock sets the clock used for modification times and for
// deciding whether retention has ended (tests use it).
func WithFilesystemClock(now func() time.Time) FilesystemOption {
	return func(f *Filesystem) { f.now = now }
}

// NewFilesystem opens the store in dir, creating dir if needed. A folder
// that exists, is not empty and was not made by NewFilesystem is refused,
// so that a mistyped path cannot scatter objects over unrelated files.
func NewFilesystem(dir string, opts ...FilesystemOption) (*Filesystem, error) {
	if dir == "" {
		return nil, errors.New("storage: filesystem: empty folder path")
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("storage: filesystem: %w", err)
	}
	f := &Filesystem{root: abs, log: slog.New(slog.DiscardHandler), now: time.Now}
	for _, o := range opts {
		o(f)
	}
	if err := f.init(); err != nil {
		return nil, fmt.Errorf("storage: filesystem %s: %w", abs, err)
	}
	return f, nil
}

func (f *Filesystem) init() error {
	if err := os.MkdirAll(f.root, 0o700); err != nil {
		return err
	}
	marker := filepath.Join(f.root, fsMarker)
	b, err := os.ReadFile(marker)
	switch {
	case err == nil:
		if string(b) != fsMarkerText {
			return fmt.Errorf("unsupported store format %q", strings.TrimSpace(string(b)))
		}
	case errors.Is(err, fs.ErrNotExist):
		entries, err := os.ReadDir(f.root)
		if err != nil {
			return err
		}
		if len(entries) > 0 {
			return errors.New("folder is not empty and holds no store")
		}
		if err := writeFileAtomic(f.root, fsMarker, []byte(fsMarkerText), 0o600); err != nil {
			return err
		}
	default:
		return err
	}
	return os.MkdirAll(filepath.Join(f.root, fsLockDir), 0o700)
}

// Root returns the folder the store lives in.
func (f *Filesystem) Root() string { return f.root }

func (f *Filesystem) path(name string) string {
	return filepath.Join(f.root, filepath.FromSlash(name)+fsObjSuffix)
}

// lock takes the exclusive lock that guards changes to name. flock(2)
// locks belong to the open file description, so two goroutines of one
// process exclude each other as two processes do.
func (f *Filesystem) lock(ctx context.Context, name string) (unlock func(), err error) {
	h := fnv.New32a()
	h.Write([]byte(name))
	p := filepath.Join(f.root, fsLockDir, fmt.Sprintf("%02d", h.Sum32()%fsLockCount))
	lf, err := os.OpenFile(p, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("open lock: %w", err)
	}
	for {
		err = syscall.Flock(int(lf.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if err == nil {
			break
		}
		if !errors.Is(err, syscall.EWOULDBLOCK) && !errors.Is(err, syscall.EINTR) {
			lf.Close()
			return nil, fmt.Errorf("lock: %w", err)
		}
		// Poll rather than block so that a cancelled context is obeyed.
		select {
		case <-ctx.Done():
			lf.Close()
			return nil, ctx.Err()
		case <-time.After(time.Millisecond):
		}
	}
	return func() { lf.Close() }, nil
}

// open opens the object file and reads its header. The file is returned
// open at the start of the data, with the data's offset in the file.
func (f *Filesystem) open(name string) (*os.File, *objfile.Header, int64, error) {
	fl, err := os.Open(f.path(name))
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, nil, 0, ErrNotFound
		}
		return nil, nil, 0, err
	}
	h, off, err := objfile.Read(fl)
	if err != nil {
		fl.Close()
		return nil, nil, 0, err
	}
	return fl, h, off, nil
}

func (f *Filesystem) info(name string, h *objfile.Header, size int64) Info {
	return Info{
		Name:        name,
		Size:        size,
		ModTime:     h.ModTime,
		ETag:        h.ETag,
		ContentType: contentTypeOrDefault(h.ContentType),
		Metadata:    h.Metadata,
	}
}

// current returns the header of the stored object, or nil if there is
// none.
func (f *Filesystem) current(name string) (*objfile.Header, error) {
	fl, h, _, err := f.open(name)
	if errors.Is(err, ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	fl.Close()
	return h, nil
}

func newETag() string {
	var b [16]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// Put implements [Store.Put].
func (f *Filesystem) Put(ctx context.Context, name string, r io.Reader, opts PutOptions) (Info, error) {
	if err := checkPut(name, opts); err != nil {
		return Info{}, err
	}
	h := &objfile.Header{
		ETag:        newETag(),
		ContentType: opts.ContentType,
		Metadata:    cloneMeta(opts.Metadata),
		ModTime:     f.now().UTC(),
	}
	if opts.Retention != nil {
		h.RetentionMode = string(opts.Retention.Mode)
		h.RetainUntil = opts.Retention.Until.UTC()
	}
	size, err := f.write(ctx, name, h, func(w io.Writer) (int64, error) {
		n, err := io.Copy(w, contextReader{ctx, r})
		if err != nil {
			return n, fmt.Errorf("read source: %w", err)
		}
		if opts.Size > 0 && n != opts.Size {
			return n, fmt.Errorf("source gave %d bytes, not the %d announced", n, opts.Size)
		}
		return n, nil
	}, func(old *objfile.Header) error {
		switch {
		case old != nil && old.Locked(f.now()):
			return ErrLocked
		case opts.IfAbsent && old != nil:
			return ErrExists
		case opts.IfMatch != "" && (old == nil || old.ETag != opts.IfMatch):
			return ErrPreconditionFailed
		}
		return nil
	})
	if err != nil {
		return Info{}, fmt.Errorf("storage: put %s: %w", name, err)
	}
	return f.info(name, h, size), nil
}

// write writes a new object file for name (header h, then what body
// writes) to a temporary file, then, holding the name's lock, asks check
// whether the stored object (nil if none) may be replaced and renames the
// new file into place.
func (f *Filesystem) write(ctx context.Context, name string, h *objfile.Header,
	body func(io.Writer) (int64, error), check func(old *objfile.Header) error,
) (int64, error) {
	final := f.path(name)
	dir := filepath.Dir(final)
	if err := mkdirAllSync(f.root, dir); err != nil {
		return 0, err
	}
	tmp, err := os.CreateTemp(dir, fsTempPrefix+"*")
	if err != nil {
		return 0, err
	}
	committed := false
	defer func() {
		if !committed {
			tmp.Close()
			if err := os.Remove(tmp.Name()); err != nil && !errors.Is(err, fs.ErrNotExist) {
				f.log.Warn("remove temporary file", "path", tmp.Name(), "err", err)
			}
		}
	}()
	hb, err := h.Marshal()
	if err != nil {
		return 0, err
	}
	if _, err := tmp.Write(hb); err != nil {
		return 0, err
	}
	size, err := body(tmp)
	if err != nil {
		return 0, err
	}
	mode := os.FileMode(0o600)
	if h.RetentionMode != "" {
		mode = 0o444
	}
	if err := tmp.Chmod(mode); err != nil {
		return 0, err
	}
	if err := tmp.Sync(); err != nil {
		return 0, err
	}
	if err := tmp.Close(); err != nil {
		return 0, err
	}
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	unlock, err := f.lock(ctx, name)
	if err != nil {
		return 0, err
	}
	defer unlock()
	old, err := f.current(name)
	if err != nil {
		return 0, err
	}
	if err := check(old); err != nil {
		return 0, err
	}
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	if err := os.Rename(tmp.Name(), final); err != nil {
		return 0, err
	}
	committed = true
	if err := syncDir(dir); err != nil {
		return 0, fmt.Errorf("sync folder: %w", err)
	}
	return size, nil
}

// Get implements [Store.Get].
func (f *Filesystem) Get(ctx context.Context, name string, opts GetOptions) (io.ReadCloser, Info, error) {
	if err := ValidName(name); err != nil {
		return nil, Info{}, err
	}
	if err := ctx.Err(); err != nil {
		return nil, Info{}, err
	}
	fl, h, dataOff, err := f.open(name)
	if err != nil {
		return nil, Info{}, fmt.Errorf("storage: get %s: %w", name, err)
	}
	st, err := fl.Stat()
	if err != nil {
		fl.Close()
		return nil, Info{}, fmt.Errorf("storage: get %s: %w", name, err)
	}
	size := st.Size() - dataOff
	off, n, err := checkRange(opts, size)
	if err != nil {
		fl.Close()
		return nil, Info{}, fmt.Errorf("storage: get %s: %w", name, err)
	}
	return &fileReader{f: fl, r: io.NewSectionReader(fl, dataOff+off, n)}, f.info(name, h, size), nil
}

type fileReader struct {
	f *os.File
	r io.Reader
}

func (r *fileReader) Read(p []byte) (int, error) { return r.r.Read(p) }
func (r *fileReader) Close() error               { return r.f.Close() }

// Stat implements [Store.Stat].
func (f *Filesystem) Stat(ctx context.Context, name string) (Info, error) {
	if err := ValidName(name); err != nil {
		return Info{}, err
	}
	if err := ctx.Err(); err != nil {
		return Info{}, err
	}
	info, err := f.stat(name)
	if err != nil {
		return Info{}, fmt.Errorf("storage: stat %s: %w", name, err)
	}
	return info, nil
}

func (f *Filesystem) stat(name string) (Info, error) {
	fl, h, dataOff, err := f.open(name)
	if err != nil {
		return Info{}, err
	}
	defer fl.Close()
	st, err := fl.Stat()
	if err != nil {
		return Info{}, err
	}
	return f.info(name, h, st.Size()-dataOff), nil
}

// List implements [Store.List]. It walks only the folder that the prefix
// points into, reading each folder once and sorting its entries so that
// names come out in lexicographic order without holding the whole
// listing in memory.
func (f *Filesystem) List(ctx context.Context, prefix string) iter.Seq2[Info, error] {
	return func(yield func(Info, error) bool) {
		if err := ValidPrefix(prefix); err != nil {
			yield(Info{}, err)
			return
		}
		dirPart, leaf := "", prefix
		if i := strings.LastIndexByte(prefix, '/'); i >= 0 {
			dirPart, leaf = prefix[:i], prefix[i+1:]
		}
		if dirPart != "" && ValidName(dirPart) != nil {
			return // e.g. "a//": no name can start so
		}
		base := dirPart
		if base != "" {
			base += "/"
		}
		f.walk(ctx, base, leaf, yield)
	}
}

// walk yields the objects in folder rel (a name prefix ending in '/' or
// empty) whose next segment starts with leaf. It returns false when the
// caller stopped or an error was yielded.
func (f *Filesystem) walk(ctx context.Context, rel, leaf string, yield func(Info, error) bool) bool {
	if err := ctx.Err(); err != nil {
		yield(Info{}, err)
		return false
	}
	entries, err := os.ReadDir(filepath.Join(f.root, filepath.FromSlash(rel)))
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return true
		}
		yield(Info{}, fmt.Errorf("storage: list %s: %w", rel, err))
		return false
	}
	type item struct {
		key string // sort key: segment, plus "/" for folders
		dir bool
	}
	items := make([]item, 0, len(entries))
	for _, e := range entries {
		n := e.Name()
		switch {
		case e.IsDir():
			if validSegment(n) == nil && strings.HasPrefix(n, leaf) {
				items = append(items, item{n + "/", true})
			}
		case strings.HasSuffix(n, fsObjSuffix):
			seg := strings.TrimSuffix(n, fsObjSuffix)
			if validSegment(seg) == nil && strings.HasPrefix(seg, leaf) {
				items = append(items, item{seg, false})
			}
		}
	}
	entries = nil
	// Sorting a folder's own entries with "/" after folder names gives
	// global lexicographic order: everything under "x/" sorts between
	// sibling "x" and any sibling greater than "x/".
	slices.SortFunc(items, func(a, b item) int { return strings.Compare(a.key, b.key) })
	for _, it := range items {
		if it.dir {
			if !f.walk(ctx, rel+it.key, "", yield) {
				return false
			}
			continue
		}
		name := rel + it.key
		info, err := f.stat(name)
		if errors.Is(err, ErrNotFound) {
			continue // deleted since the folder was read
		}
		if err != nil {
			yield(Info{}, fmt.Errorf("storage: list %s: %w", name, err))
			return false
		}
		if !yield(info, nil) {
			return false
		}
	}
	return true
}

// Delete implements [Store.Delete].
func (f *Filesystem) Delete(ctx context.Context, name string) error {
	if err := ValidName(name); err != nil {
		return err
	}
	if err := f.delete(ctx, name); err != nil {
		return fmt.Errorf("storage: delete %s: %w", name, err)
	}
	return nil
}

func (f *Filesystem) delete(ctx context.Context, name string) error {
	unlock, err := f.lock(ctx, name)
	if err != nil {
		return err
	}
	defer unlock()
	old, err := f.current(name)
	if err != nil {
		return err
	}
	if old == nil {
		return ErrNotFound
	}
	if old.Locked(f.now()) {
		return ErrLocked
	}
	p := f.path(name)
	if err := os.Remove(p); err != nil {
		return err
	}
	return syncDir(filepath.Dir(p))
}

// UpdateMetadata implements [MetadataUpdater]. It writes a new object
// file with the new header and the same bytes, copied inside the kernel
// (copy_file_range, a reflink on file systems that have them), and
// renames it into place, so the data is never read into the process. The
// ETag changes.
func (f *Filesystem) UpdateMetadata(ctx context.Context, name string, meta map[string]string, ifMatch string) error {
	if err := ValidName(name); err != nil {
		return err
	}
	if err := ValidMetadata("", meta); err != nil {
		return fmt.Errorf("storage: update metadata %s: %w", name, err)
	}
	src, h, dataOff, err := f.open(name)
	if err != nil {
		return fmt.Errorf("storage: update metadata %s: %w", name, err)
	}
	defer src.Close()
	oldETag := h.ETag
	nh := *h
	nh.ETag = newETag()
	nh.Metadata = cloneMeta(meta)
	_, err = f.write(ctx, name, &nh, func(w io.Writer) (int64, error) {
		if _, err := src.Seek(dataOff, io.SeekStart); err != nil {
			return 0, err
		}
		return io.Copy(w, src)
	}, func(old *objfile.Header) error {
		switch {
		case old == nil:
			if ifMatch != "" {
				return ErrPreconditionFailed
			}
			return ErrNotFound
		case old.ETag != oldETag || ifMatch != "" && old.ETag != ifMatch:
			// Changed since we copied it, or not the version asked for.
			return ErrPreconditionFailed
		case old.Locked(f.now()):
			return ErrLocked
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("storage: update metadata %s: %w", name, err)
	}
	return nil
}

func cloneMeta(m map[string]string) map[string]string {
	if len(m) == 0 {
		return nil
	}
	out := make(map[string]string, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

// contextReader stops reading once ctx is done, so that a cancelled Put
// stops between two reads of its source.
type contextReader struct {
	ctx context.Context
	r   io.Reader
}

func (c contextReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}

// mkdirAllSync creates dir and its missing parents below root, fsyncing
// each parent so that the new folders survive a crash.
func mkdirAllSync(root, dir string) error {
	if _, err := os.Stat(dir); err == nil {
		return nil
	}
	parent := filepath.Dir(dir)
	if parent != root && len(parent) > len(root) {
		if err := mkdirAllSync(root, parent); err != nil {
			return err
		}
	}
	if err := os.Mkdir(dir, 0o700); err != nil && !errors.Is(err, fs.ErrExist) {
		return err
	}
	return syncDir(parent)
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// writeFileAtomic writes data to dir/name through a temporary file,
// fsync and rename.
func writeFileAtomic(dir, name string, data []byte, mode os.FileMode) error {
	tmp, err := os.CreateTemp(dir, "."+name+".tmp-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Chmod(mode); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp.Name(), filepath.Join(dir, name)); err != nil {
		return err
	}
	return syncDir(dir)
}
