package dicom

import (
	"bytes"
	"encoding/binary"
	"strconv"
	"strings"
)

// UndefinedLength is the length of undefined-length sequences, items and
// encapsulated Pixel Data.
const UndefinedLength uint32 = 0xFFFFFFFF

// Element is one data element with its raw value.
type Element struct {
	Tag Tag
	// VR is the explicit VR, or the dictionary VR in implicit VR data. A
	// sequence read from a UN element (PS3.5 6.2.2) has VR "SQ".
	VR string
	// Value holds the value bytes exactly as read (padding included), in
	// the byte order of the dataset. It is nil for sequences and for Pixel
	// Data streamed by [Reader.PixelData]. For encapsulated Pixel Data
	// inside a sequence (an icon image) it holds the raw item stream,
	// delimiter included.
	Value []byte
	// Items are the items of a sequence.
	Items []*Item
	// Length is the length as encoded; UndefinedLength for
	// undefined-length sequences and encapsulated Pixel Data.
	Length uint32
	// Offset is where the element's header starts in the stream (after
	// inflation, for a deflated dataset).
	Offset int64

	bigEndian bool // byte order of Value
}

// Item is one item of a sequence.
type Item struct {
	Elements []*Element
	Offset   int64
}

// IsSequence reports whether e is a sequence.
func (e *Element) IsSequence() bool { return e.VR == "SQ" }

// String returns a text value without its trailing padding (spaces and
// NULs) and, except for LT, ST, UT and UR, without leading spaces. The
// bytes are returned as they are, in the dataset's Specific Character Set.
func (e *Element) String() string {
	b := bytes.TrimRight(e.Value, " \x00")
	switch e.VR {
	case "LT", "ST", "UT", "UR":
	default:
		b = bytes.TrimLeft(b, " ")
	}
	return string(b)
}

// Strings returns the values of a multi-valued text element, each trimmed
// as by String.
func (e *Element) Strings() []string {
	if len(e.Value) == 0 {
		return nil
	}
	parts := strings.Split(string(e.Value), `\`)
	for i, p := range parts {
		parts[i] = strings.Trim(p, " \x00")
	}
	return parts
}

func (e *Element) order() binary.ByteOrder {
	if e.bigEndian {
		return binary.BigEndian
	}
	return binary.LittleEndian
}

// Int returns the first value of a numeric element (US, SS, UL, SL, IS),
// and false when there is none or it does not parse.
func (e *Element) Int() (int64, bool) {
	o := e.order()
	switch e.VR {
	case "US":
		if len(e.Value) >= 2 {
			return int64(o.Uint16(e.Value)), true
		}
	case "SS":
		if len(e.Value) >= 2 {
			return int64(int16(o.Uint16(e.Value))), true
		}
	case "UL":
		if len(e.Value) >= 4 {
			return int64(o.Uint32(e.Value)), true
		}
	case "SL":
		if len(e.Value) >= 4 {
			return int64(int32(o.Uint32(e.Value))), true
		}
	case "IS", "DS":
		s := e.Strings()
		if len(s) > 0 {
			n, err := strconv.ParseInt(s[0], 10, 64)
			return n, err == nil
		}
	}
	return 0, false
}

// Find returns the first element with tag t in the list, or nil.
func Find(elems []*Element, t Tag) *Element {
	for _, e := range elems {
		if e.Tag == t {
			return e
		}
	}
	return nil
}
