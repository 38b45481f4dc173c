package packet

import (
	"bytes"
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"hash"
	"io"
	"os"
	"slices"
	"sync"
)

// spool holds one de-identified instance between de-identification and
// the tar stream, which needs its size up front. Small instances stay in
// memory; past the limit the spool moves to a temporary file, so a 1 GB
// instance costs disk, not memory. An already de-identified instance that
// is an io.ReaderAt of known size is read in place.
type spool struct {
	buf   []byte
	f     *os.File
	limit int64
	dir   string
	size  int64
	// h hashes what is written; an in-place spool is hashed by its
	// caller.
	h hash.Hash

	ra     io.ReaderAt // in place
	closer io.Closer
	pool   *bufPool
}

func (p *bufPool) newSpool(limit int64, dir string) *spool {
	return &spool{buf: p.get(), limit: limit, dir: dir, pool: p, h: sha256.New()}
}

// toFile moves the spool to a temporary file.
func (s *spool) toFile() error {
	f, err := os.CreateTemp(s.dir, "consilium-packet-*")
	if err != nil {
		return err
	}
	// The file holds de-identified data only; it is removed as soon as it
	// has gone into the tar stream (or on failure).
	s.f = f
	if _, err := f.Write(s.buf); err != nil {
		return err
	}
	s.pool.put(s.buf)
	s.buf = nil
	return nil
}

func (s *spool) Write(b []byte) (int, error) {
	if s.f == nil && int64(len(s.buf)+len(b)) > s.limit {
		if err := s.toFile(); err != nil {
			return 0, err
		}
	}
	s.size += int64(len(b))
	hashPieces(s.h, b)
	if s.f != nil {
		return s.f.Write(b)
	}
	s.buf = append(s.buf, b...)
	return len(b), nil
}

// ReadFrom reads r into the spool: into its memory directly, without an
// intermediate buffer (Rewrite copies Pixel Data this way).
func (s *spool) ReadFrom(r io.Reader) (int64, error) {
	var total int64
	for s.f == nil {
		if len(s.buf) == cap(s.buf) {
			if int64(cap(s.buf)) >= s.limit {
				if err := s.toFile(); err != nil {
					return total, err
				}
				break
			}
			s.buf = slices.Grow(s.buf, int(min(max(int64(cap(s.buf)), 64<<10), s.limit-int64(cap(s.buf)))))
		}
		// Hashed 64 KiB at a time: the hash's assembly loop cannot be
		// preempted, and a garbage collection waiting for it spins on
		// the other core.
		n, err := r.Read(s.buf[len(s.buf):cap(s.buf)])
		hashPieces(s.h, s.buf[len(s.buf):len(s.buf)+n])
		s.buf = s.buf[:len(s.buf)+n]
		s.size += int64(n)
		total += int64(n)
		if err == io.EOF {
			return total, nil
		}
		if err != nil {
			return total, err
		}
	}
	n, err := io.Copy(struct{ io.Writer }{s}, r)
	return total + n, err
}

// hashPieces hashes b 64 KiB at a time (see ReadFrom).
func hashPieces(h hash.Hash, b []byte) {
	for len(b) > 0 {
		n := min(len(b), 64<<10)
		h.Write(b[:n])
		b = b[n:]
	}
}

// sum returns the SHA-256 of what was written, in hex.
func (s *spool) sum() string { return hex.EncodeToString(s.h.Sum(nil)) }

// readerAt returns the content.
func (s *spool) readerAt() io.ReaderAt {
	switch {
	case s.ra != nil:
		return s.ra
	case s.f != nil:
		return s.f
	}
	return bytes.NewReader(s.buf)
}

// content returns the content from the start; an in-memory spool as a
// bytes.Reader, whose WriteTo hands the whole buffer to the tar stream in
// one write (which the pipe lends to the encrypting goroutine, uncopied).
func (s *spool) content() io.Reader {
	if s.ra == nil && s.f == nil {
		return bytes.NewReader(s.buf)
	}
	return s.reader()
}

// reader returns the content from the start.
func (s *spool) reader() io.Reader { return io.NewSectionReader(s.readerAt(), 0, s.size) }

// Close releases the spool and removes its file.
func (s *spool) Close() error {
	var err error
	if s.f != nil {
		err = errors.Join(s.f.Close(), os.Remove(s.f.Name()))
		s.f = nil
	}
	if s.closer != nil {
		err = errors.Join(err, s.closer.Close())
		s.closer = nil
	}
	if s.buf != nil {
		s.pool.put(s.buf)
		s.buf = nil
	}
	return err
}

// bufPool recycles the memory of spools, across packets: a packet of
// 300 instances of 512 KiB would otherwise allocate (and the runtime zero
// and later return to the system) 150 MB.
type bufPool struct{ p *sync.Pool }

// spoolBufs is shared by every Build: buffers are plain memory, owned by
// one spool at a time.
var spoolBufs = sync.Pool{New: func() any { return new([]byte) }}

func newBufPool() *bufPool { return &bufPool{p: &spoolBufs} }

func (p *bufPool) get() []byte {
	b := p.p.Get().(*[]byte)
	return (*b)[:0]
}

// maxPooled is the largest buffer kept for reuse.
const maxPooled = 16 << 20

func (p *bufPool) put(b []byte) {
	if cap(b) == 0 || cap(b) > maxPooled {
		return
	}
	p.p.Put(&b)
}

// chunkPipe carries the tar stream to the encrypting goroutine in chunks,
// so that building (hashing, de-identification) and encryption run on two
// cores at once. Unlike io.Pipe it buffers: the writer fills a chunk while
// the reader encrypts the previous ones.
type chunkPipe struct {
	ctx   context.Context
	ch    chan chunk
	free  chan []byte
	cur   []byte
	size  int
	total int64
	done  chan struct{}
	// gone is closed when the reader stops: it no longer touches any
	// chunk.
	gone chan struct{}
}

// chunk is a buffer of the pipe, or a caller's buffer lent to the reader
// (done is then closed once the reader is done with it).
type chunk struct {
	b    []byte
	done chan struct{}
}

func newChunkPipe(ctx context.Context, size, depth int) *chunkPipe {
	return &chunkPipe{ctx: ctx, ch: make(chan chunk, depth), free: make(chan []byte, depth+2), size: size, done: make(chan struct{}, 1), gone: make(chan struct{})}
}

// Write copies b into chunks; a write of a chunk or more (an instance
// spooled in memory) is lent to the reader instead, without a copy, and
// Write returns once the reader has encrypted it.
func (p *chunkPipe) Write(b []byte) (int, error) {
	if len(b) >= p.size {
		if err := p.send(); err != nil {
			return 0, err
		}
		select {
		case p.ch <- chunk{b: b, done: p.done}:
		case <-p.ctx.Done():
			return 0, p.ctx.Err()
		}
		// Wait until the reader is done with b, or has stopped for good:
		// only then may the caller reuse b.
		select {
		case <-p.done:
		case <-p.gone:
			return 0, cmp.Or(p.ctx.Err(), errors.New("packet: the encrypting goroutine stopped"))
		}
		p.total += int64(len(b))
		return len(b), nil
	}
	n := 0
	for len(b) > 0 {
		if p.cur == nil {
			select {
			case c := <-p.free:
				p.cur = c[:0]
			default:
				p.cur = make([]byte, 0, p.size)
			}
		}
		k := copy(p.cur[len(p.cur):cap(p.cur)], b)
		p.cur = p.cur[:len(p.cur)+k]
		b, n = b[k:], n+k
		if len(p.cur) == cap(p.cur) {
			if err := p.send(); err != nil {
				return n, err
			}
		}
	}
	p.total += int64(n)
	return n, nil
}

func (p *chunkPipe) send() error {
	if len(p.cur) == 0 {
		return nil
	}
	select {
	case p.ch <- chunk{b: p.cur}:
		p.cur = nil
		return nil
	case <-p.ctx.Done():
		return p.ctx.Err()
	}
}

// Flush hands the partial chunk to the reader.
func (p *chunkPipe) Flush() error { return p.send() }

// Close flushes and tells the reader the stream is complete.
func (p *chunkPipe) Close() error {
	if err := p.send(); err != nil {
		return err
	}
	close(p.ch)
	return nil
}

// drain writes every chunk to w until the writer closes the pipe (nil) or
// ctx ends (its error).
func (p *chunkPipe) drain(w io.Writer) error {
	defer close(p.gone)
	for {
		select {
		case c, ok := <-p.ch:
			if !ok {
				return nil
			}
			_, err := w.Write(c.b)
			if c.done != nil {
				c.done <- struct{}{}
			} else {
				select {
				case p.free <- c.b:
				default:
				}
			}
			if err != nil {
				return err
			}
		case <-p.ctx.Done():
			return p.ctx.Err()
		}
	}
}
