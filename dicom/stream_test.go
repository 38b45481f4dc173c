package dicom_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"sync/atomic"
	"testing"
	"time"

	"github.com/consilium/consilium/dicom"
)

// patternReader yields n bytes of a cheap, non-constant pattern.
type patternReader struct {
	left int64
	x    uint64
}

func (p *patternReader) Read(b []byte) (int, error) {
	if p.left == 0 {
		return 0, io.EOF
	}
	if int64(len(b)) > p.left {
		b = b[:p.left]
	}
	for i := range b {
		p.x = p.x*6364136223846793005 + 1442695040888963407
		b[i] = byte(p.x >> 56)
	}
	p.left -= int64(len(b))
	return len(b), nil
}

// largeInstance streams a CT instance whose native Pixel Data is size
// bytes, without ever holding it.
func largeInstance(size int64, rows, cols uint16) io.Reader {
	head := instance(dicom.ExplicitVRLittleEndian, base(
		us(0x00280002, 1), us(0x00280010, rows), us(0x00280011, cols), us(0x00280100, 16),
		s(0x00280008, "IS", "1"),
	))
	var ph bytes.Buffer
	ph.Write([]byte{0xE0, 0x7F, 0x10, 0x00, 'O', 'W', 0, 0})
	ph.Write(binary.LittleEndian.AppendUint32(nil, uint32(size)))
	return io.MultiReader(bytes.NewReader(head), &ph, &patternReader{left: size, x: 1})
}

// TestRewriteStreamsLargeFile de-identifies an instance with 1 GiB of
// pixel data (256 MiB with -short) through a pipe, checks that the pixel
// bytes come out identical, and that memory stays bounded: nothing may
// allocate anywhere near the file's size.
func TestRewriteStreamsLargeFile(t *testing.T) {
	size, rows := int64(1<<30), uint16(16384)
	if testing.Short() {
		size, rows = 256<<20, 4096
	}
	cols := uint16(size / 2 / int64(rows))
	want := sha256.New()
	if _, err := io.Copy(want, &patternReader{left: size, x: 1}); err != nil {
		t.Fatal(err)
	}

	d := newDeidentifier(t, "basic", keyedSource(t))
	pr, pw := io.Pipe()
	got := sha256.New()
	var pixels int64
	done := make(chan error, 1)
	go func() {
		rd, err := dicom.NewReader(pr, dicom.ReaderOptions{})
		if err != nil {
			done <- err
			return
		}
		for {
			_, err := rd.Next()
			if err == io.EOF {
				done <- nil
				return
			}
			if err != nil {
				done <- err
				return
			}
			if p := rd.PixelData(); p != nil {
				n, err := io.Copy(got, p)
				pixels += n
				if err != nil {
					done <- err
					return
				}
			}
		}
	}()

	var peak atomic.Uint64
	stop := make(chan struct{})
	go func() {
		var m runtime.MemStats
		for {
			select {
			case <-stop:
				return
			case <-time.After(20 * time.Millisecond):
				runtime.ReadMemStats(&m)
				if m.HeapInuse > peak.Load() {
					peak.Store(m.HeapInuse)
				}
			}
		}
	}()
	runtime.GC()
	var before runtime.MemStats
	runtime.ReadMemStats(&before)

	rep, err := d.Rewrite(context.Background(), pw, largeInstance(size, rows, cols), dicom.PatientIDKey)
	pw.CloseWithError(err)
	if err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	close(stop)
	var after runtime.MemStats
	runtime.ReadMemStats(&after)

	if pixels != size || rep.PixelBytes != size {
		t.Fatalf("pixel bytes: read %d, report %d, want %d", pixels, rep.PixelBytes, size)
	}
	if !bytes.Equal(got.Sum(nil), want.Sum(nil)) {
		t.Fatal("pixel data changed")
	}
	allocated := after.TotalAlloc - before.TotalAlloc
	t.Logf("%d MiB streamed; allocated %d KiB in total, peak heap in use %d KiB", size>>20, allocated>>10, peak.Load()>>10)
	if allocated > 64<<20 || peak.Load() > 128<<20 {
		t.Errorf("memory not bounded: %d bytes allocated, %d peak heap for a %d-byte file", allocated, peak.Load(), size)
	}
}

// BenchmarkRewrite de-identifies a 512x512 16-bit CT slice (the
// benchmark series' shape) from memory to memory.
func BenchmarkRewrite(b *testing.B) {
	const size = 512 * 512 * 2
	in, err := io.ReadAll(largeInstance(size, 512, 512))
	if err != nil {
		b.Fatal(err)
	}
	d := newDeidentifier(b, "basic", keyedSource(b))
	var out bytes.Buffer
	b.SetBytes(int64(len(in)))
	b.ReportAllocs()
	for b.Loop() {
		out.Reset()
		if _, err := d.Rewrite(context.Background(), &out, bytes.NewReader(in), dicom.PatientIDKey); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "instances/s")
}

// BenchmarkRewriteFile de-identifies a real CT header (CT_small.dcm: 179
// private elements, nested sequences, 32 KB of pixel data) from file to
// file, as the CLI does: the header work dominates, the pixel data is
// copied by the kernel.
func BenchmarkRewriteFile(b *testing.B) {
	in, err := os.Open(filepath.Join(sharedDir(b), "testdata", "dicom", "modality", "ct", "CT_small.dcm"))
	if err != nil {
		b.Fatal(err)
	}
	defer in.Close()
	out, err := os.Create(filepath.Join(b.TempDir(), "out.dcm"))
	if err != nil {
		b.Fatal(err)
	}
	defer out.Close()
	d := newDeidentifier(b, "basic", keyedSource(b))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := in.Seek(0, io.SeekStart); err != nil {
			b.Fatal(err)
		}
		if err := out.Truncate(0); err != nil {
			b.Fatal(err)
		}
		if _, err := out.Seek(0, io.SeekStart); err != nil {
			b.Fatal(err)
		}
		if _, err := d.Rewrite(context.Background(), out, in, testKey); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "instances/s")
}

// TestRewriteFileToFile checks the kernel-copy path (source and
// destination both files) against the in-memory one.
func TestRewriteFileToFile(t *testing.T) {
	valid, _ := corpus(t)
	d := newDeidentifier(t, "basic", keyedSource(t))
	for _, p := range valid {
		in, err := os.Open(p)
		if err != nil {
			t.Fatal(err)
		}
		outPath := filepath.Join(t.TempDir(), "out.dcm")
		out, err := os.Create(outPath)
		if err != nil {
			t.Fatal(err)
		}
		_, err = d.Rewrite(context.Background(), out, in, testKey)
		in.Close()
		out.Close()
		if err != nil {
			t.Fatalf("%s: %v", rel(t, p), err)
		}
		viaFiles, _ := os.ReadFile(outPath)
		b, _ := os.ReadFile(p)
		var viaMemory bytes.Buffer
		if _, err := d.Rewrite(context.Background(), &viaMemory, bytes.NewReader(b), testKey); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(viaFiles, viaMemory.Bytes()) {
			if s, _ := dicom.Inspect(bytes.NewReader(b), dicom.ReaderOptions{AllowNoMeta: true}); s.SOPInstanceUID != "" {
				t.Errorf("%s: file-to-file output differs from the in-memory one", rel(t, p))
			}
		}
	}
}
