package dicom

import (
	"bytes"
	"encoding/binary"
	"io"

	"github.com/consilium/consilium/dicom/internal/wire"
)

// ImplementationClassUID identifies files this package writes (PS3.7
// D.3.3.2). It is a UUID-derived UID, so it needs no registered root.
const ImplementationClassUID = "2.25.228237012350693100819667680811489660572"

// ImplementationVersionName goes with ImplementationClassUID.
const ImplementationVersionName = "CONSILIUM_1"

// writeMeta writes the preamble, "DICM" and a File Meta group.
func writeMeta(w io.Writer, sopClass, sopInstance, tsUID string) error {
	var body bytes.Buffer
	enc := wire.NewEncoder(&body, wire.ExplicitLE)
	put := func(t Tag, vr string, v []byte) {
		_ = enc.WriteHeader(uint32(t), vr, uint32(len(v)))
		body.Write(v)
	}
	put(tagMetaVersion, "OB", []byte{0, 1})
	put(tagMediaStorageSOPClassUID, "UI", padValue("UI", sopClass))
	put(tagMediaStorageSOPInstanceUID, "UI", padValue("UI", sopInstance))
	put(tagTransferSyntaxUID, "UI", padValue("UI", tsUID))
	put(tagImplementationClassUID, "UI", padValue("UI", ImplementationClassUID))
	put(tagImplementationVersionName, "SH", padValue("SH", ImplementationVersionName))

	var head bytes.Buffer
	head.Write(make([]byte, 128))
	head.WriteString("DICM")
	var gl [4]byte
	binary.LittleEndian.PutUint32(gl[:], uint32(body.Len()))
	_ = wire.NewEncoder(&head, wire.ExplicitLE).WriteHeader(uint32(tagMetaGroupLength), "UL", 4)
	head.Write(gl[:])
	if _, err := w.Write(head.Bytes()); err != nil {
		return err
	}
	_, err := w.Write(body.Bytes())
	return err
}

// padValue returns s as a value of the VR, padded to even length (NUL for
// UI, space for other text).
func padValue(vr, s string) []byte {
	b := []byte(s)
	if len(b)%2 == 1 {
		if vr == "UI" {
			b = append(b, 0)
		} else {
			b = append(b, ' ')
		}
	}
	return b
}

// writeElements encodes elements; sequences and items get undefined
// lengths (valid in every transfer syntax, and it needs no length
// bookkeeping).
func writeElements(enc *wire.Encoder, elems []*Element) error {
	for _, e := range elems {
		if err := writeElement(enc, e); err != nil {
			return err
		}
	}
	return nil
}

func writeElement(enc *wire.Encoder, e *Element) error {
	if e.VR == "SQ" {
		if err := enc.WriteHeader(uint32(e.Tag), "SQ", wire.Undefined); err != nil {
			return err
		}
		for _, it := range e.Items {
			if err := enc.WriteHeader(wire.ItemTag, "", wire.Undefined); err != nil {
				return err
			}
			if err := writeElements(enc, it.Elements); err != nil {
				return err
			}
			if err := enc.WriteHeader(wire.ItemDelim, "", 0); err != nil {
				return err
			}
		}
		return enc.WriteHeader(wire.SeqDelim, "", 0)
	}
	if e.Length == UndefinedLength {
		// Encapsulated pixel data inside a sequence, kept as encoded.
		if err := enc.WriteHeader(uint32(e.Tag), e.VR, wire.Undefined); err != nil {
			return err
		}
		_, err := enc.Write(e.Value)
		return err
	}
	v := e.Value
	if outBE := enc.Syntax().BigEndian; outBE != e.bigEndian {
		v = swapBytes(e.VR, v)
	}
	if err := enc.WriteHeader(uint32(e.Tag), e.VR, uint32(len(v))); err != nil {
		return err
	}
	_, err := enc.Write(v)
	return err
}

// swapBytes converts a binary value between byte orders. It is only
// needed for elements read from a UN sequence (always little endian) and
// written into a big endian dataset.
func swapBytes(vr string, v []byte) []byte {
	var size int
	switch vr {
	case "US", "SS", "OW", "AT":
		size = 2
	case "UL", "SL", "FL", "OL", "OF":
		size = 4
	case "FD", "OD", "SV", "UV", "OV":
		size = 8
	default:
		return v
	}
	out := bytes.Clone(v)
	for i := 0; i+size <= len(out); i += size {
		for a, b := i, i+size-1; a < b; a, b = a+1, b-1 {
			out[a], out[b] = out[b], out[a]
		}
	}
	return out
}
