package dicom_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"testing"

	"github.com/consilium/consilium/deid"
	"github.com/consilium/consilium/dicom"
)

const fuzzMaxInput = 1 << 20

// addCorpusSeeds seeds a fuzz target with every corpus file (large ones cut
// to their first 64 KiB, which still holds their header).
func addCorpusSeeds(f *testing.F) {
	valid, invalid := corpus(f)
	for _, p := range append(valid, invalid...) {
		b, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		if len(b) > 256<<10 {
			b = b[:64<<10]
		}
		f.Add(b)
	}
	f.Add(instance(dicom.ExplicitVRBigEndian, base(us(0x00280010, 2))))
	f.Add(instance(dicom.ImplicitVRLittleEndian, base(sq(0x00081140, item(s(0x00081155, "UI", "1.2.3"))))))
}

var fuzzOpts = dicom.ReaderOptions{AllowNoMeta: true, MaxHeaderBytes: 4 << 20, MaxPixelBytes: 16 << 20}

// FuzzInspect: any input gives a summary or a ParseError, never a panic
// or another error.
func FuzzInspect(f *testing.F) {
	addCorpusSeeds(f)
	f.Fuzz(func(t *testing.T, b []byte) {
		if len(b) > fuzzMaxInput {
			return
		}
		_, err := dicom.Inspect(bytes.NewReader(b), fuzzOpts)
		if err != nil && !errors.Is(err, dicom.ErrInvalid) {
			t.Fatalf("error is not a ParseError: %v", err)
		}
	})
}

// FuzzRewrite: de-identification never panics; what it writes is a
// Part 10 instance the reader reads to the end, whose pixel data has the
// length of the input's, and which de-identifies again.
func FuzzRewrite(f *testing.F) {
	addCorpusSeeds(f)
	src := keyedSource(f)
	p := "basic,clean-descriptors,retain-long-modified-dates,retain-safe-private"
	prof, err := deid.ParseDICOMProfile(p)
	if err != nil {
		f.Fatal(err)
	}
	d, err := dicom.NewDeidentifier(dicom.Options{Profile: prof, Source: src, Reader: fuzzOpts})
	if err != nil {
		f.Fatal(err)
	}
	key := func(dicom.Summary) (string, error) { return "fuzz", nil }
	f.Fuzz(func(t *testing.T, b []byte) {
		if len(b) > fuzzMaxInput {
			return
		}
		var out bytes.Buffer
		rep, err := d.Rewrite(context.Background(), &out, bytes.NewReader(b), key)
		if err != nil {
			if !errors.Is(err, dicom.ErrInvalid) {
				t.Fatalf("error is not a ParseError: %v", err)
			}
			return
		}
		rd, err := dicom.NewReader(bytes.NewReader(out.Bytes()), dicom.ReaderOptions{})
		if err != nil {
			t.Fatalf("output unreadable: %v", err)
		}
		var pixels int64
		for {
			_, err := rd.Next()
			if err == io.EOF {
				break
			}
			if err != nil {
				t.Fatalf("output unreadable: %v", err)
			}
			if pd := rd.PixelData(); pd != nil {
				n, err := io.Copy(io.Discard, pd)
				if err != nil {
					t.Fatalf("output pixel data: %v", err)
				}
				pixels += n
			}
		}
		if pixels != rep.PixelBytes {
			t.Fatalf("output has %d pixel bytes, report says %d", pixels, rep.PixelBytes)
		}
		if _, err := d.Rewrite(context.Background(), io.Discard, bytes.NewReader(out.Bytes()), key); err != nil {
			t.Fatalf("output does not de-identify again: %v", err)
		}
		// The streaming path (no Seek) agrees with the by-range path.
		var streamed bytes.Buffer
		rep2, err := d.Rewrite(context.Background(), &streamed, struct{ io.Reader }{bytes.NewReader(b)}, key)
		if err != nil {
			t.Fatalf("streaming path fails where the range path did not: %v", err)
		}
		if rep2.PixelBytes != rep.PixelBytes || (rep2.SOPInstanceUID == rep.SOPInstanceUID && !bytes.Equal(streamed.Bytes(), out.Bytes())) {
			t.Fatalf("streaming and range paths differ")
		}
	})
}
