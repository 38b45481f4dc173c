package packet

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
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

	ra     io.ReaderAt // in place
	closer io.Closer
	pool   *bufPool
}

func (p *bufPool) newSpool(limit int64, dir string) *spool {
	return &spool{buf: p.get(), limit: limit, dir: dir, pool: p}
}

func (s *spool) Write(b []byte) (int, error) {
	if s.f == nil && int64(len(s.buf)+len(b)) > s.limit {
		f, err := os.CreateTemp(s.dir, "consilium-packet-*")
		if err != nil {
			return 0, err
		}
		// The file holds de-identified data only; it is removed as soon
		// as it has gone into the tar stream (or on failure).
		s.f = f
		if _, err := f.Write(s.buf); err != nil {
			return 0, err
		}
		s.pool.put(s.buf)
		s.buf = nil
	}
	s.size += int64(len(b))
	if s.f != nil {
		return s.f.Write(b)
	}
	s.buf = append(s.buf, b...)
	return len(b), nil
}

// ReadFrom copies r into the spool.
func (s *spool) ReadFrom(r io.Reader) (int64, error) {
	return io.Copy(struct{ io.Writer }{s}, r)
}

// reader returns the content from the start.
func (s *spool) reader() io.Reader {
	switch {
	case s.ra != nil:
		return io.NewSectionReader(s.ra, 0, s.size)
	case s.f != nil:
		return io.NewSectionReader(s.f, 0, s.size)
	}
	return bytes.NewReader(s.buf)
}

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

// bufPool recycles the memory of spools: a packet of 300 instances of
// 512 KiB would otherwise allocate 150 MB for the garbage collector.
type bufPool struct{ free chan []byte }

func newBufPool(n int) *bufPool { return &bufPool{free: make(chan []byte, n)} }

func (p *bufPool) get() []byte {
	select {
	case b := <-p.free:
		return b[:0]
	default:
		return nil
	}
}

func (p *bufPool) put(b []byte) {
	if cap(b) == 0 {
		return
	}
	select {
	case p.free <- b[:0]:
	default:
	}
}

// chunkPipe carries the tar stream to the encrypting goroutine in chunks,
// so that building (hashing, de-identification) and encryption run on two
// cores at once. Unlike io.Pipe it buffers: the writer fills a chunk while
// the reader encrypts the previous ones.
type chunkPipe struct {
	ctx   context.Context
	ch    chan []byte
	free  chan []byte
	cur   []byte
	size  int
	total int64
}

func newChunkPipe(ctx context.Context, size, depth int) *chunkPipe {
	return &chunkPipe{ctx: ctx, ch: make(chan []byte, depth), free: make(chan []byte, depth+2), size: size}
}

func (p *chunkPipe) Write(b []byte) (int, error) {
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
	case p.ch <- p.cur:
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
	for {
		select {
		case c, ok := <-p.ch:
			if !ok {
				return nil
			}
			if _, err := w.Write(c); err != nil {
				return err
			}
			select {
			case p.free <- c:
			default:
			}
		case <-p.ctx.Done():
			return p.ctx.Err()
		}
	}
}
