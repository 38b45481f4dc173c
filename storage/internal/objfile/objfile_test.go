package objfile

import (
	"bytes"
	"errors"
	"maps"
	"testing"
	"time"
)

func TestRoundTrip(t *testing.T) {
	now := time.Date(2026, 1, 2, 3, 4, 5, 6, time.UTC)
	tests := []struct {
		name string
		h    Header
	}{
		{"minimal", Header{ETag: "e1", ModTime: now}},
		{"full", Header{ETag: "e2", ContentType: "application/dicom", Metadata: map[string]string{"a": "b"},
			ModTime: now, RetentionMode: "COMPLIANCE", RetainUntil: now.Add(time.Hour)}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b, err := tt.h.Marshal()
			if err != nil {
				t.Fatal(err)
			}
			data := []byte("payload")
			h, off, err := Read(bytes.NewReader(append(b, data...)))
			if err != nil {
				t.Fatal(err)
			}
			if off != int64(len(b)) {
				t.Errorf("data offset %d, want %d", off, len(b))
			}
			if h.ETag != tt.h.ETag || h.ContentType != tt.h.ContentType || !maps.Equal(h.Metadata, tt.h.Metadata) ||
				!h.ModTime.Equal(tt.h.ModTime) || h.RetentionMode != tt.h.RetentionMode || !h.RetainUntil.Equal(tt.h.RetainUntil) {
				t.Errorf("got %+v, want %+v", h, tt.h)
			}
		})
	}
}

func TestReadRejects(t *testing.T) {
	good, err := (&Header{ETag: "x"}).Marshal()
	if err != nil {
		t.Fatal(err)
	}
	tests := map[string][]byte{
		"empty":        nil,
		"short magic":  good[:4],
		"bad magic":    append([]byte("XNSLOBJ\x01"), good[8:]...),
		"zero length":  append(append([]byte{}, good[:8]...), 0, 0, 0, 0),
		"huge length":  append(append([]byte{}, good[:8]...), 0x7f, 0, 0, 0),
		"short header": good[:len(good)-1],
		"no etag":      mustPrefix(t, `{"content_type":"x"}`),
		"unknown":      mustPrefix(t, `{"etag":"x","other":1}`),
		"trailing":     mustPrefix(t, `{"etag":"x"}{}`),
		"not json":     mustPrefix(t, `etag`),
	}
	for name, b := range tests {
		t.Run(name, func(t *testing.T) {
			if _, _, err := Read(bytes.NewReader(b)); !errors.Is(err, ErrFormat) {
				t.Errorf("Read = %v, want ErrFormat", err)
			}
		})
	}
}

func mustPrefix(t testing.TB, js string) []byte {
	b, err := (&Header{ETag: "x"}).Marshal()
	if err != nil {
		t.Fatal(err)
	}
	b = b[:8]
	return append(append(b, 0, 0, 0, byte(len(js))), js...)
}

// FuzzRead checks that no file content makes Read panic or return a
// header it cannot encode again.
func FuzzRead(f *testing.F) {
	for _, h := range []Header{{ETag: "a"}, {ETag: "b", Metadata: map[string]string{"k": "v"}, RetentionMode: "GOVERNANCE", RetainUntil: time.Unix(1e9, 0)}} {
		b, err := h.Marshal()
		if err != nil {
			f.Fatal(err)
		}
		f.Add(append(b, "data"...))
	}
	f.Add([]byte("CNSLOBJ\x01\x00\x00\x00\x02{}"))
	f.Fuzz(func(t *testing.T, b []byte) {
		if len(b) > 1<<20 {
			return
		}
		h, off, err := Read(bytes.NewReader(b))
		if err != nil {
			return
		}
		if off > int64(len(b)) {
			t.Fatalf("data offset %d past input of %d bytes", off, len(b))
		}
		if _, err := h.Marshal(); err != nil {
			t.Fatalf("parsed header does not encode: %v", err)
		}
	})
}
