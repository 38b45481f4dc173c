// Package objfile is the on-disk format of one object in the filesystem
// backend: a fixed magic, a length-prefixed JSON header (ETag, content
// type, metadata, retention, write time), then the object's bytes. Keeping
// the header in the same file as the data makes a Put, a metadata update
// and a delete each a single atomic rename or unlink.
//
// Layout:
//
//	"CNSLOBJ" 0x01      8 bytes magic and format version
//	uint32 big endian  header length N (1..MaxHeaderLen)
//	N bytes            header, JSON
//	...                data, to the end of the file
package objfile

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"time"
)

// Magic starts every object file; its last byte is the format version.
var Magic = [8]byte{'C', 'N', 'S', 'L', 'O', 'B', 'J', 1}

// MaxHeaderLen bounds the header so that a corrupt length cannot make a
// reader allocate much.
const MaxHeaderLen = 64 << 10

// prefixLen is the size of the magic and the length field.
const prefixLen = len(Magic) + 4

// ErrFormat is returned for a file that is not a valid object file.
var ErrFormat = errors.New("objfile: not a valid object file")

// Header is what the filesystem backend keeps with an object's bytes.
type Header struct {
	ETag        string            `json:"etag"`
	ContentType string            `json:"content_type,omitempty"`
	Metadata    map[string]string `json:"metadata,omitempty"`
	ModTime     time.Time         `json:"mod_time"`
	// RetentionMode and RetainUntil record an object lock; empty and
	// zero when the object has none.
	RetentionMode string    `json:"retention_mode,omitempty"`
	RetainUntil   time.Time `json:"retain_until,omitzero"`
}

// Locked reports whether the object is under retention at now.
func (h *Header) Locked(now time.Time) bool {
	return h.RetentionMode != "" && now.Before(h.RetainUntil)
}

// Marshal returns the encoded magic, length and header: the bytes that
// precede the data.
func (h *Header) Marshal() ([]byte, error) {
	js, err := json.Marshal(h)
	if err != nil {
		return nil, fmt.Errorf("objfile: encode header: %w", err)
	}
	if len(js) > MaxHeaderLen {
		return nil, fmt.Errorf("objfile: header of %d bytes is longer than %d", len(js), MaxHeaderLen)
	}
	out := make([]byte, prefixLen, prefixLen+len(js))
	copy(out, Magic[:])
	binary.BigEndian.PutUint32(out[len(Magic):], uint32(len(js)))
	return append(out, js...), nil
}

// Read reads the prefix and header from r and returns the header and the
// offset at which the data starts. Errors wrap ErrFormat when the bytes
// are not an object file, or are an I/O error from r.
func Read(r io.Reader) (*Header, int64, error) {
	var prefix [prefixLen]byte
	if _, err := io.ReadFull(r, prefix[:]); err != nil {
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			return nil, 0, fmt.Errorf("%w: short prefix", ErrFormat)
		}
		return nil, 0, fmt.Errorf("objfile: read prefix: %w", err)
	}
	if !bytes.Equal(prefix[:len(Magic)], Magic[:]) {
		return nil, 0, fmt.Errorf("%w: bad magic", ErrFormat)
	}
	n := binary.BigEndian.Uint32(prefix[len(Magic):])
	if n == 0 || n > MaxHeaderLen {
		return nil, 0, fmt.Errorf("%w: header length %d", ErrFormat, n)
	}
	buf := make([]byte, n)
	if _, err := io.ReadFull(r, buf); err != nil {
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			return nil, 0, fmt.Errorf("%w: short header", ErrFormat)
		}
		return nil, 0, fmt.Errorf("objfile: read header: %w", err)
	}
	h, err := parse(buf)
	if err != nil {
		return nil, 0, err
	}
	return h, int64(prefixLen) + int64(n), nil
}

func parse(buf []byte) (*Header, error) {
	dec := json.NewDecoder(bytes.NewReader(buf))
	dec.DisallowUnknownFields()
	var h Header
	if err := dec.Decode(&h); err != nil {
		return nil, fmt.Errorf("%w: header: %v", ErrFormat, err)
	}
	if dec.More() {
		return nil, fmt.Errorf("%w: data after header", ErrFormat)
	}
	if h.ETag == "" {
		return nil, fmt.Errorf("%w: header without etag", ErrFormat)
	}
	if h.RetentionMode != "" && h.RetainUntil.IsZero() {
		return nil, fmt.Errorf("%w: retention without an end", ErrFormat)
	}
	return &h, nil
}
