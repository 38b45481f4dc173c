package wire

import (
	"bytes"
	"errors"
	"io"
	"os"
	"path/filepath"
	"testing"
)

func lookup(uint32) string { return "UN" }

func TestRoundTrip(t *testing.T) {
	for _, s := range []Syntax{ExplicitLE, ImplicitLE, ExplicitBE} {
		var b bytes.Buffer
		enc := NewEncoder(&b, s)
		headers := []Header{
			{Tag: 0x00100010, VR: "PN", Length: 4},
			{Tag: 0x7FE00010, VR: "OB", Length: Undefined},
			{Tag: ItemTag, Length: 2},
			{Tag: SeqDelim},
			{Tag: 0x00091001, VR: "LO", Length: 0x10000}, // too long for LO: written as UN
		}
		for _, h := range headers {
			if err := enc.WriteHeader(h.Tag, h.VR, h.Length); err != nil {
				t.Fatal(err)
			}
		}
		dec := NewDecoder(bytes.NewReader(b.Bytes()), lookup)
		for i, want := range headers {
			got, err := dec.ReadHeader(s)
			if err != nil {
				t.Fatalf("%v header %d: %v", s, i, err)
			}
			if got.Tag != want.Tag || got.Length != want.Length {
				t.Errorf("%v header %d: got %+v, want %+v", s, i, got, want)
			}
			if !s.Implicit && !got.IsItem() && i < 2 && got.VR != want.VR {
				t.Errorf("%v header %d: VR %s", s, i, got.VR)
			}
		}
		if _, err := dec.ReadHeader(s); err != io.EOF {
			t.Errorf("end: %v", err)
		}
	}
}

func TestErrors(t *testing.T) {
	tests := []struct {
		name string
		in   []byte
		s    Syntax
		kind Kind
	}{
		{"cut tag", []byte{0x10, 0x00}, ExplicitLE, Truncated},
		{"bad VR", []byte{0x10, 0x00, 0x10, 0x00, 'z', 'z', 0, 0}, ExplicitLE, Malformed},
		{"cut length", []byte{0x10, 0x00, 0x10, 0x00, 'O', 'B', 0, 0, 1}, ExplicitLE, Truncated},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := NewDecoder(bytes.NewReader(tt.in), lookup).ReadHeader(tt.s)
			var we *Error
			if !errors.As(err, &we) || we.Kind != tt.kind {
				t.Fatalf("err = %v, want kind %d", err, tt.kind)
			}
		})
	}
	dec := NewDecoder(bytes.NewReader(make([]byte, 10)), lookup)
	if _, err := dec.ReadValue(1<<30, 1<<20); err == nil {
		t.Error("value over the limit accepted")
	}
	if _, err := dec.ReadValue(100<<10, 1<<20); err == nil {
		t.Error("value longer than the input accepted")
	}
}

// FuzzDecoder reads headers and values until the input ends or fails: no
// panic, offsets only grow, errors are *Error or io.EOF.
func FuzzDecoder(f *testing.F) {
	files, _ := filepath.Glob("../../../../shared/testdata/dicom/*/*.dcm")
	for _, p := range files {
		b, err := os.ReadFile(p)
		if err == nil && len(b) > 132 {
			f.Add(b[132:min(len(b), 8<<10)], uint8(0))
		}
	}
	f.Fuzz(func(t *testing.T, b []byte, mode uint8) {
		s := []Syntax{ExplicitLE, ImplicitLE, ExplicitBE}[mode%3]
		dec := NewDecoder(bytes.NewReader(b), lookup)
		last := int64(-1)
		for {
			h, err := dec.ReadHeader(s)
			if err == io.EOF {
				return
			}
			var we *Error
			if err != nil {
				if !errors.As(err, &we) {
					t.Fatalf("error %T %v", err, err)
				}
				return
			}
			if h.Offset <= last || dec.Offset() <= h.Offset {
				t.Fatalf("offsets do not advance: %d %d %d", last, h.Offset, dec.Offset())
			}
			last = h.Offset
			if h.Length != Undefined && !h.IsItem() {
				if _, err := dec.ReadValue(h.Length, 1<<20); err != nil {
					if !errors.As(err, &we) {
						t.Fatalf("error %T %v", err, err)
					}
					return
				}
			}
		}
	})
}

func TestParseVR(t *testing.T) {
	for a := range 256 {
		for b := range 256 {
			want := ""
			for _, v := range vrs {
				if v[0] == byte(a) && v[1] == byte(b) {
					want = v
				}
			}
			got, ok := ParseVR(byte(a), byte(b))
			if got != want || ok != (want != "") {
				t.Fatalf("ParseVR(%q, %q) = %q, %v; want %q", byte(a), byte(b), got, ok, want)
			}
		}
	}
}
