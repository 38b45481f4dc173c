// Package wire reads and writes DICOM data elements as they sit on the wire:
// tag, VR, length and raw value bytes, in Explicit or Implicit VR Little
// Endian or Explicit VR Big Endian (a deflated dataset is inflated by the
// caller before it reaches here).
//
// It exists because no DICOM library we can use gives what de-identification
// and DICOMweb need at the same time: github.com/suyashkumar/dicom v1.1.0
// decodes every value into Go types (re-encoding strings and numbers on
// write, so kept values are not byte-identical, and values in an unsupported
// character set fail), and it either reads Pixel Data into memory or skips it
// entirely, so pixel bytes cannot be copied through unchanged from a stream.
// This package does the minimum: it never interprets a value, it keeps the
// exact bytes, and it lets the caller stream a value of any length through
// without holding it.
//
// Start with [Decoder.ReadHeader] and [Encoder.WriteHeader].
package wire

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// Item and delimitation tags (group FFFE), which carry no VR.
const (
	ItemTag     uint32 = 0xFFFEE000
	ItemDelim   uint32 = 0xFFFEE00D
	SeqDelim    uint32 = 0xFFFEE0DD
	Undefined   uint32 = 0xFFFFFFFF
	itemGroup          = 0xFFFE
	maxEagerLen        = 1 << 16
)

// Values up to maxArenaValue bytes are carved from arenaSize chunks.
const (
	maxArenaValue = 256
	arenaSize     = 4 << 10
)

// Syntax is how elements are encoded.
type Syntax struct {
	Implicit  bool
	BigEndian bool
}

// The three encodings of PS3.5.
var (
	ExplicitLE = Syntax{}
	ImplicitLE = Syntax{Implicit: true}
	ExplicitBE = Syntax{BigEndian: true}
)

func (s Syntax) order() binary.ByteOrder {
	if s.BigEndian {
		return binary.BigEndian
	}
	return binary.LittleEndian
}

// Kind classifies an [Error].
type Kind int

// Kinds of error.
const (
	// Truncated: the input ended inside a header or value.
	Truncated Kind = iota + 1
	// Malformed: bytes that cannot be a valid element (bad VR, bad
	// length, an item where an element belongs).
	Malformed
	// TooLarge: a value or structure beyond the caller's limits.
	TooLarge
)

// Error is a tokenizing error at a byte offset of the (inflated) stream.
type Error struct {
	Offset int64
	Kind   Kind
	Msg    string
}

func (e *Error) Error() string { return fmt.Sprintf("%s at byte %d", e.Msg, e.Offset) }

// Errorf returns an *Error.
func Errorf(off int64, k Kind, format string, a ...any) error {
	return &Error{Offset: off, Kind: k, Msg: fmt.Sprintf(format, a...)}
}

// Header is an element header, or an item or delimiter header (VR "").
type Header struct {
	Tag uint32
	// VR is the explicit VR, or in implicit syntax what the dictionary
	// says ("UN" when it does not know). Empty for item tags.
	VR     string
	Length uint32
	// Offset is where the header starts in the stream.
	Offset int64
}

// Group returns the tag's group number.
func (h Header) Group() uint16 { return uint16(h.Tag >> 16) }

// IsItem reports whether h is an item or delimiter header.
func (h Header) IsItem() bool { return h.Tag>>16 == itemGroup }

// Decoder reads headers and values from a stream, counting bytes.
type Decoder struct {
	r      *bufio.Reader
	off    int64
	lookup func(uint32) string
	hdr    [12]byte // scratch for ReadHeader (a local would escape)
	arena  []byte   // small values are carved from it (see ReadValue)
}

// NewDecoder reads from r. lookup gives the VR of a tag for implicit VR
// syntax; it returns "UN" for tags it does not know.
func NewDecoder(r io.Reader, lookup func(uint32) string) *Decoder {
	br, ok := r.(*bufio.Reader)
	if !ok || br.Size() < 4096 {
		br = bufio.NewReaderSize(r, 64<<10)
	}
	return &Decoder{r: br, lookup: lookup}
}

// Reset makes d read from r, keeping its buffer, with the offset at
// zero.
func (d *Decoder) Reset(r io.Reader) {
	d.r.Reset(r)
	d.off = 0
}

// SetArena gives d memory to carve small values from (see ReadValue), for
// a caller that reuses it once it is done with the values.
func (d *Decoder) SetArena(b []byte) { d.arena = b }

// Offset is the number of bytes consumed so far.
func (d *Decoder) Offset() int64 { return d.off }

// SetOffset changes what Offset reports, for a decoder that continues
// another (for example on the inflated part of a deflated file).
func (d *Decoder) SetOffset(off int64) { d.off = off }

// Peek returns the next n bytes without consuming them. It may return
// fewer bytes with an error at the end of the input.
func (d *Decoder) Peek(n int) ([]byte, error) { return d.r.Peek(n) }

// Read implements io.Reader.
func (d *Decoder) Read(p []byte) (int, error) {
	n, err := d.r.Read(p)
	d.off += int64(n)
	return n, err
}

// ReadHeader reads the next header. It returns io.EOF, and only io.EOF,
// when the input ends exactly before a header.
func (d *Decoder) ReadHeader(s Syntax) (Header, error) {
	if b, _ := d.r.Peek(12); len(b) == 12 {
		// The common case, without a call per header field: the whole
		// header is buffered.
		if h, n, ok := d.parseHeader(s, b); ok {
			d.r.Discard(n)
			d.off += int64(n)
			return h, nil
		}
	}
	start := d.off
	b := &d.hdr
	if err := d.full(b[:4]); err != nil {
		if errors.Is(err, io.EOF) {
			return Header{}, io.EOF
		}
		return Header{}, Errorf(start, Truncated, "truncated element header")
	}
	o := s.order()
	tag := uint32(o.Uint16(b[0:2]))<<16 | uint32(o.Uint16(b[2:4]))
	h := Header{Tag: tag, Offset: start}
	if tag>>16 == itemGroup || s.Implicit {
		if err := d.full(b[4:8]); err != nil {
			return Header{}, Errorf(start, Truncated, "truncated element header")
		}
		h.Length = o.Uint32(b[4:8])
		if tag>>16 != itemGroup {
			h.VR = d.lookup(tag)
		}
		return h, nil
	}
	if err := d.full(b[4:8]); err != nil {
		return Header{}, Errorf(start, Truncated, "truncated element header")
	}
	vr, ok := ParseVR(b[4], b[5])
	if !ok {
		return Header{}, Errorf(start, Malformed, "invalid VR bytes %q", b[4:6])
	}
	h.VR = vr
	if LongLength(vr) {
		if err := d.full(b[8:12]); err != nil {
			return Header{}, Errorf(start, Truncated, "truncated element header")
		}
		h.Length = o.Uint32(b[8:12])
	} else {
		h.Length = uint32(o.Uint16(b[6:8]))
	}
	return h, nil
}

// parseHeader parses the header at the start of b (12 bytes) and returns
// its length; ok is false when the VR bytes are invalid (ReadHeader then
// reports the error).
func (d *Decoder) parseHeader(s Syntax, b []byte) (h Header, n int, ok bool) {
	o := s.order()
	tag := uint32(o.Uint16(b[0:2]))<<16 | uint32(o.Uint16(b[2:4]))
	h = Header{Tag: tag, Offset: d.off}
	if tag>>16 == itemGroup || s.Implicit {
		h.Length = o.Uint32(b[4:8])
		if tag>>16 != itemGroup {
			h.VR = d.lookup(tag)
		}
		return h, 8, true
	}
	vr, ok := ParseVR(b[4], b[5])
	if !ok {
		return Header{}, 0, false
	}
	h.VR = vr
	if LongLength(vr) {
		h.Length = o.Uint32(b[8:12])
		return h, 12, true
	}
	h.Length = uint32(o.Uint16(b[6:8]))
	return h, 8, true
}

func (d *Decoder) full(p []byte) error {
	n, err := io.ReadFull(d.r, p)
	d.off += int64(n)
	if err != nil && n > 0 {
		return io.ErrUnexpectedEOF
	}
	return err
}

// ReadValue reads an n-byte value. It refuses values over max bytes
// (TooLarge) and grows its buffer as bytes arrive, so a huge declared
// length on a short input fails without a huge allocation.
func (d *Decoder) ReadValue(n uint32, max int64) ([]byte, error) {
	start := d.off
	if int64(n) > max {
		return nil, Errorf(start, TooLarge, "value of %d bytes exceeds the limit of %d", n, max)
	}
	if n == 0 {
		return []byte{}, nil
	}
	if n <= maxArenaValue {
		// Header values are mostly a few bytes long: one allocation per
		// arenaSize bytes instead of one per value. Each value is capped
		// at its length, so appending to it copies.
		if int(n) > len(d.arena) {
			d.arena = make([]byte, arenaSize)
		}
		b := d.arena[:n:n]
		d.arena = d.arena[n:]
		if err := d.full(b); err != nil {
			return nil, Errorf(start, Truncated, "truncated value (%d bytes declared)", n)
		}
		return b, nil
	}
	if n <= maxEagerLen {
		b := make([]byte, n)
		if err := d.full(b); err != nil {
			return nil, Errorf(start, Truncated, "truncated value (%d bytes declared)", n)
		}
		return b, nil
	}
	b := make([]byte, 0, maxEagerLen)
	for uint32(len(b)) < n {
		chunk := min(int(n)-len(b), 1<<20)
		b = append(b, make([]byte, chunk)...)
		if err := d.full(b[len(b)-chunk:]); err != nil {
			return nil, Errorf(start, Truncated, "truncated value (%d bytes declared)", n)
		}
	}
	return b, nil
}

// CopyValue copies an n-byte value to w without holding it.
func (d *Decoder) CopyValue(w io.Writer, n int64) error {
	start := d.off
	c, err := io.CopyN(w, d, n)
	if err != nil {
		if errors.Is(err, io.EOF) {
			return Errorf(start, Truncated, "truncated value (%d bytes declared, %d present)", n, c)
		}
		return err
	}
	return nil
}

// Encoder writes headers in one syntax.
type Encoder struct {
	w io.Writer
	s Syntax
	b [12]byte
}

// NewEncoder writes to w in syntax s.
func NewEncoder(w io.Writer, s Syntax) *Encoder { return &Encoder{w: w, s: s} }

// Syntax returns the encoder's syntax.
func (e *Encoder) Syntax() Syntax { return e.s }

// WriteHeader writes an element, item or delimiter header. In explicit
// syntax a value too long for a VR's 16-bit length is written as UN.
func (e *Encoder) WriteHeader(tag uint32, vr string, length uint32) error {
	o := e.s.order()
	o.PutUint16(e.b[0:2], uint16(tag>>16))
	o.PutUint16(e.b[2:4], uint16(tag))
	if tag>>16 == itemGroup || e.s.Implicit {
		o.PutUint32(e.b[4:8], length)
		_, err := e.w.Write(e.b[:8])
		return err
	}
	if !LongLength(vr) && length > 0xFFFF {
		vr = "UN"
	}
	if vr == "" || len(vr) != 2 {
		vr = "UN"
	}
	e.b[4], e.b[5] = vr[0], vr[1]
	if LongLength(vr) {
		e.b[6], e.b[7] = 0, 0
		o.PutUint32(e.b[8:12], length)
		_, err := e.w.Write(e.b[:12])
		return err
	}
	o.PutUint16(e.b[6:8], uint16(length))
	_, err := e.w.Write(e.b[:8])
	return err
}

// Write writes raw bytes (a value).
func (e *Encoder) Write(p []byte) (int, error) { return e.w.Write(p) }

// vrs lists every VR of PS3.5 Table 6.2-1.
var vrs = [...]string{
	"AE", "AS", "AT", "CS", "DA", "DS", "DT", "FD", "FL", "IS", "LO", "LT",
	"OB", "OD", "OF", "OL", "OV", "OW", "PN", "SH", "SL", "SQ", "SS", "ST",
	"SV", "TM", "UC", "UI", "UL", "UN", "UR", "US", "UT", "UV",
}

// ParseVR returns the VR spelled by two bytes, as a shared constant string.
func ParseVR(a, b byte) (string, bool) {
	if a < 'A' || a > 'Z' || b < 'A' || b > 'Z' {
		return "", false
	}
	i := vrIndex[a-'A'][b-'A']
	if i == 0 {
		return "", false
	}
	return vrs[i-1], true
}

// vrIndex maps the two letters of a VR to 1 + its index in vrs (0: not
// a VR): ParseVR runs for every element header.
var vrIndex = func() (t [26][26]uint8) {
	for i, v := range vrs {
		t[v[0]-'A'][v[1]-'A'] = uint8(i + 1)
	}
	return t
}()

// LongLength reports whether an explicit-VR header of this VR has a 32-bit
// length (PS3.5 Table 7.1-1).
func LongLength(vr string) bool {
	switch vr {
	case "OB", "OD", "OF", "OL", "OV", "OW", "SQ", "SV", "UC", "UN", "UR", "UT", "UV":
		return true
	}
	return false
}
