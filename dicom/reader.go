package dicom

import (
	"bufio"
	"bytes"
	"compress/flate"
	"encoding/binary"
	"errors"
	"io"

	"github.com/consilium/consilium/dicom/internal/wire"
)

// Reader limits.
const (
	// DefaultMaxHeaderBytes bounds the value bytes a Reader holds for the
	// elements it returns (everything but streamed Pixel Data).
	DefaultMaxHeaderBytes = 64 << 20
	// DefaultMaxDepth bounds sequence nesting.
	DefaultMaxDepth = 32

	maxMetaValue = 64 << 10
)

// ReaderOptions modify a [Reader].
type ReaderOptions struct {
	// AllowNoMeta accepts a bare dataset with no preamble and no File Meta
	// group, as older systems wrote them; its encoding is guessed (Explicit
	// or Implicit VR Little Endian) and it must start in group 0008. Leave
	// it false for anything received over the network: PS3.10 requires the
	// preamble and File Meta.
	AllowNoMeta bool
	// MaxHeaderBytes bounds the value bytes held in memory (0:
	// DefaultMaxHeaderBytes). Pixel Data is streamed and does not count.
	MaxHeaderBytes int64
	// MaxDepth bounds sequence nesting (0: DefaultMaxDepth).
	MaxDepth int
	// MaxPixelBytes, when positive, bounds the length of streamed Pixel
	// Data (after inflation): a deflated dataset can claim gigabytes from
	// a small input.
	MaxPixelBytes int64
}

// FileMeta is the File Meta Information (group 0002) of an instance.
type FileMeta struct {
	// Preamble reports whether the file had the 128-byte preamble and the
	// "DICM" prefix.
	Preamble bool
	// Elements are the group 0002 elements as read (empty for a bare
	// dataset).
	Elements []*Element

	TransferSyntaxUID          string
	MediaStorageSOPClassUID    string
	MediaStorageSOPInstanceUID string
	ImplementationClassUID     string
	ImplementationVersionName  string
}

// Reader reads a DICOM Part 10 stream element by element: preamble and
// File Meta on creation, then one top-level dataset element per call to
// [Reader.Next], sequences included. Pixel Data (7FE0,0010) and the float
// pixel data elements are not read into memory: Next returns them without a
// value and [Reader.PixelData] streams their bytes.
//
// Use a Reader to look at an instance without changing it (DICOMweb STOW-RS
// builds on it), or use [Inspect] to read and validate a whole instance in
// one call.
type Reader struct {
	dec   *wire.Decoder
	ts    TransferSyntax
	meta  FileMeta
	opts  ReaderOptions
	held  int64
	pixel io.Reader
	sum   Summary
	err   error
	slab  []Element // elements are allocated from it, a chunk at a time
	mem   *scratch  // when Rewrite owns the Reader
}

// newElement returns a zero Element. Elements come from chunks, one
// allocation per elementChunk elements; a caller holding one element keeps
// its chunk alive, which is bounded and small.
func (rd *Reader) newElement() *Element {
	if rd.mem != nil {
		return rd.mem.element()
	}
	if len(rd.slab) == 0 {
		rd.slab = make([]Element, elementChunk)
	}
	e := &rd.slab[0]
	rd.slab = rd.slab[1:]
	return e
}

const elementChunk = 32

// NewReader reads the preamble and File Meta from r and returns a Reader
// positioned at the first dataset element. It returns a [*ParseError] with
// reason ReasonNoPreamble, ReasonNoMeta, ReasonNoTransferSyntax,
// ReasonUnsupportedSyntax, ReasonMalformed or ReasonTruncated.
func NewReader(r io.Reader, opts ReaderOptions) (*Reader, error) {
	return newReader(r, opts, nil, nil)
}

// newReader is NewReader reading through buf (reset to read r) when it is
// not nil, and taking elements and values from mem when it is not nil, so
// that a caller that knows when the Reader and its elements are done with
// can reuse memory.
func newReader(r io.Reader, opts ReaderOptions, buf *bufio.Reader, mem *scratch) (*Reader, error) {
	if opts.MaxHeaderBytes <= 0 {
		opts.MaxHeaderBytes = DefaultMaxHeaderBytes
	}
	if opts.MaxDepth <= 0 {
		opts.MaxDepth = DefaultMaxDepth
	}
	var src io.Reader = buf
	if buf != nil {
		buf.Reset(r)
	} else {
		src = bufferFor(r)
	}
	rd := &Reader{dec: wire.NewDecoder(src, lookupVR), opts: opts, mem: mem}
	if mem != nil {
		rd.dec.SetArena(mem.vals)
	}
	if err := rd.readPreambleAndMeta(); err != nil {
		return nil, err
	}
	rd.sum.TransferSyntaxUID = rd.ts.UID
	rd.sum.meta = &rd.meta
	return rd, nil
}

func (rd *Reader) readPreambleAndMeta() error {
	dec := rd.dec
	b, _ := dec.Peek(132)
	if len(b) == 132 && string(b[128:132]) == "DICM" {
		if err := dec.CopyValue(io.Discard, 132); err != nil {
			return fromWire(err, 0)
		}
		rd.meta.Preamble = true
	} else if !rd.opts.AllowNoMeta {
		return parseErr(ReasonNoPreamble, 0, 0, `no "DICM" prefix after a 128-byte preamble`)
	}
	b, _ = dec.Peek(8)
	hasMeta := len(b) >= 2 && binary.LittleEndian.Uint16(b) == 0x0002
	switch {
	case hasMeta:
		if err := rd.readMeta(); err != nil {
			return err
		}
	case rd.meta.Preamble:
		return parseErr(ReasonNoMeta, dec.Offset(), 0, "no File Meta Information group")
	default:
		// A bare dataset (AllowNoMeta): it must start in group 0008, in
		// Explicit or Implicit VR Little Endian.
		if len(b) < 8 || binary.LittleEndian.Uint16(b) != 0x0008 {
			return parseErr(ReasonNoPreamble, 0, 0, "neither a Part 10 file nor a bare dataset starting in group 0008")
		}
		uid := ImplicitVRLittleEndian
		if _, ok := wire.ParseVR(b[4], b[5]); ok {
			uid = ExplicitVRLittleEndian
		}
		rd.ts, _ = LookupTransferSyntax(uid)
		return nil
	}
	if rd.meta.TransferSyntaxUID == "" {
		return parseErr(ReasonNoTransferSyntax, dec.Offset(), tagTransferSyntaxUID, "File Meta has no Transfer Syntax UID")
	}
	ts, ok := LookupTransferSyntax(rd.meta.TransferSyntaxUID)
	if !ok {
		return parseErr(ReasonUnsupportedSyntax, dec.Offset(), tagTransferSyntaxUID, "transfer syntax not supported")
	}
	rd.ts = ts
	if ts.Deflated {
		inflated := wire.NewDecoder(flate.NewReader(dec), lookupVR)
		inflated.SetOffset(dec.Offset())
		rd.dec = inflated
	}
	return nil
}

func (rd *Reader) readMeta() error {
	dec := rd.dec
	for {
		b, _ := dec.Peek(2)
		if len(b) < 2 || binary.LittleEndian.Uint16(b) != 0x0002 {
			return nil
		}
		h, err := dec.ReadHeader(wire.ExplicitLE)
		if err != nil {
			return fromWire(err, 0)
		}
		t := Tag(h.Tag)
		if h.Length == wire.Undefined || h.VR == "SQ" {
			return parseErr(ReasonMalformed, h.Offset, t, "sequence or undefined length in File Meta")
		}
		v, err := dec.ReadValue(h.Length, maxMetaValue)
		if err != nil {
			return fromWire(err, t)
		}
		e := &Element{Tag: t, VR: h.VR, Value: v, Length: h.Length, Offset: h.Offset}
		rd.meta.Elements = append(rd.meta.Elements, e)
		switch t {
		case tagTransferSyntaxUID:
			rd.meta.TransferSyntaxUID = e.String()
		case tagMediaStorageSOPClassUID:
			rd.meta.MediaStorageSOPClassUID = e.String()
		case tagMediaStorageSOPInstanceUID:
			rd.meta.MediaStorageSOPInstanceUID = e.String()
		case tagImplementationClassUID:
			rd.meta.ImplementationClassUID = e.String()
		case tagImplementationVersionName:
			rd.meta.ImplementationVersionName = e.String()
		}
	}
}

// Meta returns the File Meta Information.
func (rd *Reader) Meta() *FileMeta { return &rd.meta }

// TransferSyntax returns the dataset's transfer syntax (for a bare
// dataset, the guessed one).
func (rd *Reader) TransferSyntax() TransferSyntax { return rd.ts }

// Summary returns the key attributes of the top-level elements read so
// far. After Next has returned Pixel Data it is complete for all but
// trailing elements.
func (rd *Reader) Summary() Summary { return rd.sum }

// Offset returns the number of bytes consumed (after inflation, for a
// deflated dataset: then it counts inflated bytes after the File Meta).
func (rd *Reader) Offset() int64 { return rd.dec.Offset() }

// Next returns the next top-level element, or io.EOF after the last one.
// Any unread bytes of the previous element's Pixel Data are skipped (and
// checked). Errors are [*ParseError]s and are sticky.
func (rd *Reader) Next() (*Element, error) {
	if rd.err != nil {
		return nil, rd.err
	}
	if rd.pixel != nil {
		if _, err := io.Copy(io.Discard, rd.pixel); err != nil {
			return nil, rd.fail(err)
		}
		rd.pixel = nil
	}
	syn := rd.ts.wire()
	h, err := rd.dec.ReadHeader(syn)
	if err == io.EOF {
		rd.err = io.EOF
		return nil, io.EOF
	}
	if err != nil {
		return nil, rd.fail(fromWire(err, 0))
	}
	if h.IsItem() {
		return nil, rd.fail(parseErr(ReasonMalformed, h.Offset, Tag(h.Tag), "item or delimiter outside a sequence"))
	}
	t := Tag(h.Tag)
	if isPixelData(t) {
		e := rd.newElement()
		*e = Element{Tag: t, VR: h.VR, Length: h.Length, Offset: h.Offset, bigEndian: syn.BigEndian}
		if h.Length == wire.Undefined {
			if t != tagPixelData {
				return nil, rd.fail(parseErr(ReasonMalformed, h.Offset, t, "undefined length"))
			}
			rd.pixel = &fragmentStream{rd: rd, syn: syn}
		} else {
			if rd.opts.MaxPixelBytes > 0 && int64(h.Length) > rd.opts.MaxPixelBytes {
				return nil, rd.fail(parseErr(ReasonTooLarge, h.Offset, t, "pixel data of %d bytes exceeds the limit of %d", h.Length, rd.opts.MaxPixelBytes))
			}
			rd.pixel = &valueStream{rd: rd, left: int64(h.Length), t: t}
		}
		rd.sum.observe(e)
		return e, nil
	}
	e, err := rd.readElement(rd.dec, h, syn, 0)
	if err != nil {
		return nil, rd.fail(err)
	}
	rd.sum.observe(e)
	return e, nil
}

// PixelData streams the value of the Pixel Data element that Next just
// returned: the value bytes of native pixel data, or for encapsulated pixel
// data the item stream exactly as encoded (item headers, fragments and the
// sequence delimiter). Reads fail with a [*ParseError] if the stream is
// truncated or the item structure is broken. It returns nil when Next did
// not just return pixel data.
func (rd *Reader) PixelData() io.Reader {
	if rd.pixel == nil {
		return nil
	}
	return rd.pixel
}

// bufferFor buffers a source. A seekable one (a file) gets a small
// buffer: its Pixel Data is usually copied by range, not read, so reading
// far ahead of the header is wasted.
func bufferFor(r io.Reader) io.Reader {
	if seekable(r) {
		return bufio.NewReaderSize(r, seekableBuffer)
	}
	return r
}

// Buffer sizes: seekableBuffer for files (a header rarely exceeds it),
// streamBuffer for streams, whose Pixel Data goes through the buffer.
const (
	seekableBuffer = 16 << 10
	streamBuffer   = 64 << 10
)

func seekable(r io.Reader) bool {
	_, at := r.(io.ReaderAt)
	_, sk := r.(io.Seeker)
	return at && sk
}

// resync continues reading from r, which starts at byte off of the
// stream, after a caller copied the pixel data by range (see Rewrite). The
// buffer is kept.
func (rd *Reader) resync(r io.Reader, off int64) {
	rd.dec.Reset(r)
	rd.dec.SetOffset(off)
	rd.pixel = nil
}

func (rd *Reader) fail(err error) error {
	rd.err = err
	return err
}

func (rd *Reader) take(n int64, off int64, t Tag) error {
	if rd.held+n > rd.opts.MaxHeaderBytes {
		return parseErr(ReasonTooLarge, off, t, "header values exceed %d bytes", rd.opts.MaxHeaderBytes)
	}
	rd.held += n
	return nil
}

// readElement reads the rest of the element whose header is h.
func (rd *Reader) readElement(dec *wire.Decoder, h wire.Header, syn wire.Syntax, depth int) (*Element, error) {
	t := Tag(h.Tag)
	e := rd.newElement()
	*e = Element{Tag: t, VR: h.VR, Length: h.Length, Offset: h.Offset, bigEndian: syn.BigEndian}
	switch {
	case h.VR == "SQ":
		items, err := rd.readSequence(dec, h, syn, depth+1)
		if err != nil {
			return nil, err
		}
		e.Items = items
	case h.Length == wire.Undefined && t == tagPixelData:
		// Encapsulated pixel data inside a sequence (an icon image):
		// small, kept raw.
		raw, err := rd.readFragmentsRaw(dec, syn, t)
		if err != nil {
			return nil, err
		}
		e.Value = raw
	case h.Length == wire.Undefined && (h.VR == "UN" || syn.Implicit):
		// PS3.5 6.2.2: a UN (or unknown implicit) element of undefined
		// length is a sequence in Implicit VR Little Endian.
		items, err := rd.readSequence(dec, h, wire.ImplicitLE, depth+1)
		if err != nil {
			return nil, err
		}
		e.VR, e.Items, e.bigEndian = "SQ", items, false
	case h.Length == wire.Undefined:
		return nil, parseErr(ReasonMalformed, h.Offset, t, "undefined length for VR %s", h.VR)
	default:
		if err := rd.take(int64(h.Length), h.Offset, t); err != nil {
			return nil, err
		}
		v, err := dec.ReadValue(h.Length, rd.opts.MaxHeaderBytes)
		if err != nil {
			return nil, fromWire(err, t)
		}
		e.Value = v
		if h.VR == "UN" && lookupVR(h.Tag) == "SQ" {
			// A known sequence sent as UN with a defined length: its
			// value is an Implicit VR Little Endian sequence. If it does
			// not parse, it stays an opaque UN value.
			sub := wire.NewDecoder(bytes.NewReader(v), lookupVR)
			sub.SetOffset(dec.Offset() - int64(len(v)))
			items, err := rd.readSequence(sub, wire.Header{Tag: h.Tag, VR: "SQ", Length: h.Length, Offset: h.Offset}, wire.ImplicitLE, depth+1)
			if err == nil {
				e.VR, e.Items, e.Value, e.bigEndian = "SQ", items, nil, false
			}
		}
	}
	return e, nil
}

func (rd *Reader) readSequence(dec *wire.Decoder, h wire.Header, syn wire.Syntax, depth int) ([]*Item, error) {
	t := Tag(h.Tag)
	if depth > rd.opts.MaxDepth {
		return nil, parseErr(ReasonTooLarge, h.Offset, t, "sequences nested deeper than %d", rd.opts.MaxDepth)
	}
	var items []*Item
	if h.Length == wire.Undefined {
		for {
			ih, err := dec.ReadHeader(syn)
			if err != nil {
				return nil, truncatedAt(err, dec, t, "sequence without delimiter")
			}
			switch ih.Tag {
			case wire.SeqDelim:
				return items, nil
			case wire.ItemTag:
				it, err := rd.readItem(dec, ih, syn, depth)
				if err != nil {
					return nil, err
				}
				items = append(items, it)
			default:
				return nil, parseErr(ReasonMalformed, ih.Offset, t, "expected an item in the sequence")
			}
		}
	}
	end := dec.Offset() + int64(h.Length)
	for dec.Offset() < end {
		ih, err := dec.ReadHeader(syn)
		if err != nil {
			return nil, truncatedAt(err, dec, t, "sequence shorter than its length")
		}
		if ih.Tag != wire.ItemTag {
			return nil, parseErr(ReasonMalformed, ih.Offset, t, "expected an item in the sequence")
		}
		it, err := rd.readItem(dec, ih, syn, depth)
		if err != nil {
			return nil, err
		}
		items = append(items, it)
	}
	if dec.Offset() != end {
		return nil, parseErr(ReasonMalformed, dec.Offset(), t, "items overrun the sequence length")
	}
	return items, nil
}

func (rd *Reader) readItem(dec *wire.Decoder, ih wire.Header, syn wire.Syntax, depth int) (*Item, error) {
	it := &Item{Offset: ih.Offset}
	undefined := ih.Length == wire.Undefined
	end := dec.Offset() + int64(ih.Length)
	for undefined || dec.Offset() < end {
		h, err := dec.ReadHeader(syn)
		if err != nil {
			return nil, truncatedAt(err, dec, 0, "item without delimiter")
		}
		if h.Tag == wire.ItemDelim {
			if undefined {
				return it, nil
			}
			continue // tolerated: a delimiter inside a defined-length item
		}
		if h.IsItem() {
			return nil, parseErr(ReasonMalformed, h.Offset, 0, "unexpected item tag inside an item")
		}
		e, err := rd.readElement(dec, h, syn, depth)
		if err != nil {
			return nil, err
		}
		it.Elements = append(it.Elements, e)
	}
	if dec.Offset() != end {
		return nil, parseErr(ReasonMalformed, dec.Offset(), 0, "elements overrun the item length")
	}
	return it, nil
}

// readFragmentsRaw reads an encapsulated pixel data item stream into
// memory, exactly as encoded.
func (rd *Reader) readFragmentsRaw(dec *wire.Decoder, syn wire.Syntax, t Tag) ([]byte, error) {
	var buf bytes.Buffer
	enc := wire.NewEncoder(&buf, syn)
	for {
		ih, err := dec.ReadHeader(syn)
		if err != nil {
			return nil, truncatedAt(err, dec, t, "pixel data without sequence delimiter")
		}
		if err := rd.take(8, ih.Offset, t); err != nil {
			return nil, err
		}
		_ = enc.WriteHeader(ih.Tag, "", ih.Length)
		switch {
		case ih.Tag == wire.SeqDelim:
			return buf.Bytes(), nil
		case ih.Tag != wire.ItemTag || ih.Length == wire.Undefined:
			return nil, parseErr(ReasonMalformed, ih.Offset, t, "bad item in encapsulated pixel data")
		}
		if err := rd.take(int64(ih.Length), ih.Offset, t); err != nil {
			return nil, err
		}
		if err := dec.CopyValue(&buf, int64(ih.Length)); err != nil {
			return nil, fromWire(err, t)
		}
	}
}

func truncatedAt(err error, dec *wire.Decoder, t Tag, what string) error {
	if errors.Is(err, io.EOF) {
		return parseErr(ReasonTruncated, dec.Offset(), t, "%s", what)
	}
	return fromWire(err, t)
}

// valueStream streams native pixel data.
type valueStream struct {
	rd   *Reader
	left int64
	t    Tag
}

func (s *valueStream) Read(p []byte) (int, error) {
	if s.left == 0 {
		return 0, io.EOF
	}
	if int64(len(p)) > s.left {
		p = p[:s.left]
	}
	n, err := s.rd.dec.Read(p)
	s.left -= int64(n)
	if err == io.EOF {
		if s.left > 0 {
			return n, s.rd.fail(parseErr(ReasonTruncated, s.rd.dec.Offset(), s.t, "pixel data shorter than its length"))
		}
		err = nil
	}
	return n, err
}

// fragmentStream streams encapsulated pixel data as encoded, checking the
// item structure as it goes.
type fragmentStream struct {
	rd     *Reader
	syn    wire.Syntax
	hdr    [8]byte
	hdrOff int
	hdrN   int
	left   int64
	total  int64
	done   bool
}

func (s *fragmentStream) Read(p []byte) (int, error) {
	dec := s.rd.dec
	for {
		if s.hdrOff < s.hdrN {
			n := copy(p, s.hdr[s.hdrOff:s.hdrN])
			s.hdrOff += n
			return n, nil
		}
		if s.left > 0 {
			if int64(len(p)) > s.left {
				p = p[:s.left]
			}
			n, err := dec.Read(p)
			s.left -= int64(n)
			if err == io.EOF {
				if s.left > 0 {
					return n, s.rd.fail(parseErr(ReasonTruncated, dec.Offset(), tagPixelData, "pixel data fragment shorter than its length"))
				}
				err = nil
			}
			return n, err
		}
		if s.done {
			return 0, io.EOF
		}
		ih, err := dec.ReadHeader(s.syn)
		if err != nil {
			return 0, s.rd.fail(truncatedAt(err, dec, tagPixelData, "pixel data without sequence delimiter"))
		}
		switch {
		case ih.Tag == wire.SeqDelim:
			s.done = true
		case ih.Tag != wire.ItemTag || ih.Length == wire.Undefined:
			return 0, s.rd.fail(parseErr(ReasonMalformed, ih.Offset, tagPixelData, "bad item in encapsulated pixel data"))
		default:
			s.left = int64(ih.Length)
			s.total += s.left
			if max := s.rd.opts.MaxPixelBytes; max > 0 && s.total > max {
				return 0, s.rd.fail(parseErr(ReasonTooLarge, ih.Offset, tagPixelData, "pixel data exceeds the limit of %d bytes", max))
			}
		}
		var b bytes.Buffer
		_ = wire.NewEncoder(&b, s.syn).WriteHeader(ih.Tag, "", ih.Length)
		s.hdrN = copy(s.hdr[:], b.Bytes())
		s.hdrOff = 0
	}
}
