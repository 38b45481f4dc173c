package gateway_test

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"io"
	"mime"
	"mime/multipart"
	"net/http"
	"runtime"
	"runtime/metrics"
	"sync"
	"testing"
	"time"

	"github.com/consilium/consilium/gateway/gatewaytest"
)

// element appends one Explicit VR Little Endian element.
func element(b []byte, group, elem uint16, vr string, value []byte) []byte {
	if len(value)%2 == 1 {
		pad := byte(' ')
		if vr == "UI" || vr == "OB" {
			pad = 0
		}
		value = append(value, pad)
	}
	b = binary.LittleEndian.AppendUint16(b, group)
	b = binary.LittleEndian.AppendUint16(b, elem)
	b = append(b, vr...)
	switch vr {
	case "OB", "OW", "SQ", "UN", "UT":
		b = append(b, 0, 0)
		b = binary.LittleEndian.AppendUint32(b, uint32(len(value)))
	default:
		b = binary.LittleEndian.AppendUint16(b, uint16(len(value)))
	}
	return append(b, value...)
}

func us(v uint16) []byte { return binary.LittleEndian.AppendUint16(nil, v) }

// multiFrameHeader returns the bytes of a Multi-frame Grayscale Word
// Secondary Capture instance up to its Pixel Data value, and the value's
// length: rows x cols 16-bit frames.
func multiFrameHeader(sop string, rows, cols, frames int) ([]byte, int64) {
	const class = "1.2.840.10008.5.1.4.1.1.7.3"
	var meta []byte
	meta = element(meta, 0x0002, 0x0001, "OB", []byte{0, 1})
	meta = element(meta, 0x0002, 0x0002, "UI", []byte(class))
	meta = element(meta, 0x0002, 0x0003, "UI", []byte(sop))
	meta = element(meta, 0x0002, 0x0010, "UI", []byte("1.2.840.10008.1.2.1"))
	meta = element(meta, 0x0002, 0x0012, "UI", []byte("1.2.826.0.1.3680043.10.1"))
	b := make([]byte, 128, 1024)
	b = append(b, "DICM"...)
	b = element(b, 0x0002, 0x0000, "UL", binary.LittleEndian.AppendUint32(nil, uint32(len(meta))))
	b = append(b, meta...)
	b = element(b, 0x0008, 0x0016, "UI", []byte(class))
	b = element(b, 0x0008, 0x0018, "UI", []byte(sop))
	b = element(b, 0x0008, 0x0020, "DA", []byte("20250101"))
	b = element(b, 0x0008, 0x0060, "CS", []byte("OT"))
	b = element(b, 0x0010, 0x0010, "PN", []byte("Big^Study"))
	b = element(b, 0x0010, 0x0020, "LO", []byte("BIG1"))
	b = element(b, 0x0020, 0x000D, "UI", []byte(sop+".1"))
	b = element(b, 0x0020, 0x000E, "UI", []byte(sop+".2"))
	b = element(b, 0x0020, 0x0013, "IS", []byte("1"))
	b = element(b, 0x0028, 0x0002, "US", us(1))
	b = element(b, 0x0028, 0x0004, "CS", []byte("MONOCHROME2"))
	b = element(b, 0x0028, 0x0008, "IS", []byte(fmt.Sprint(frames)))
	b = element(b, 0x0028, 0x0010, "US", us(uint16(rows)))
	b = element(b, 0x0028, 0x0011, "US", us(uint16(cols)))
	b = element(b, 0x0028, 0x0100, "US", us(16))
	b = element(b, 0x0028, 0x0101, "US", us(16))
	b = element(b, 0x0028, 0x0102, "US", us(15))
	b = element(b, 0x0028, 0x0103, "US", us(0))
	n := int64(rows) * int64(cols) * 2 * int64(frames)
	b = binary.LittleEndian.AppendUint16(b, 0x7FE0)
	b = binary.LittleEndian.AppendUint16(b, 0x0010)
	b = append(b, "OW\x00\x00"...)
	b = binary.LittleEndian.AppendUint32(b, uint32(n))
	return b, n
}

// pixels yields n bytes of a cheap, position-dependent pattern.
type pixels struct{ off, n int64 }

func (p *pixels) Read(b []byte) (int, error) {
	if p.off >= p.n {
		return 0, io.EOF
	}
	if int64(len(b)) > p.n-p.off {
		b = b[:p.n-p.off]
	}
	for i := range b {
		x := uint64(p.off + int64(i))
		b[i] = byte(x ^ x>>8 ^ x>>17)
	}
	p.off += int64(len(b))
	return len(b), nil
}

// memoryPeak samples the Go runtime's memory in use (heap, stacks, GC
// metadata and the rest of what the runtime has mapped and not returned)
// until stop is called, and returns the peak.
func memoryPeak() (stop func() uint64) {
	samples := []metrics.Sample{{Name: "/memory/classes/total:bytes"}, {Name: "/memory/classes/heap/released:bytes"}}
	var peak uint64
	var mu sync.Mutex
	done := make(chan struct{})
	finished := make(chan struct{})
	read := func() {
		metrics.Read(samples)
		v := samples[0].Value.Uint64() - samples[1].Value.Uint64()
		mu.Lock()
		peak = max(peak, v)
		mu.Unlock()
	}
	go func() {
		defer close(finished)
		t := time.NewTicker(5 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-done:
				read()
				return
			case <-t.C:
				read()
			}
		}
	}()
	return func() uint64 {
		close(done)
		<-finished
		mu.Lock()
		defer mu.Unlock()
		return peak
	}
}

// TestGigabyteInstanceStreams stores and retrieves a ~1 GB multi-frame
// instance through a gateway in this process, over TLS, and checks that
// memory stays under 150 MB throughout. The measure is the whole
// process's Go memory, so it includes the test's client (which streams
// too): the gateway's own share is smaller.
func TestGigabyteInstanceStreams(t *testing.T) {
	if testing.Short() {
		t.Skip("a 1 GB round trip; skipped with -short")
	}
	const limit = 150 << 20
	g := gatewaytest.Start(t, nil, gatewaytest.Config{})
	c := g.Client(t, "st-marys")
	c.Timeout = 0 // a gigabyte under -race takes a while
	const sop = "1.2.826.0.1.3680043.10.1.999.1"
	header, pixelLen := multiFrameHeader(sop, 512, 512, 2048)
	size := int64(len(header)) + pixelLen
	t.Logf("instance of %d bytes (%d frames of 512x512x16)", size, 2048)

	runtime.GC()
	stop := memoryPeak()
	start := time.Now()
	sent := sha256.New()
	src := io.TeeReader(io.MultiReader(bytes.NewReader(header), &pixels{n: pixelLen}), sent)
	ans := stow(t, c, g.URL, "/dicomweb/studies", src)
	if ans.Status != http.StatusOK || len(ans.Referenced) != 1 {
		t.Fatalf("STOW: %+v", ans)
	}
	stowTime := time.Since(start)

	start = time.Now()
	resp, err := c.Get(ans.Referenced[0].RetrieveURL)
	if err != nil {
		t.Fatal(err)
	}
	_, params, _ := mime.ParseMediaType(resp.Header.Get("Content-Type"))
	part, err := multipart.NewReader(resp.Body, params["boundary"]).NextPart()
	if err != nil {
		t.Fatal(err)
	}
	got := sha256.New()
	n, err := io.Copy(got, part)
	resp.Body.Close()
	if err != nil {
		t.Fatal(err)
	}
	wadoTime := time.Since(start)
	peak := stop()
	if n != size || !bytes.Equal(got.Sum(nil), sent.Sum(nil)) {
		t.Fatalf("retrieved %d bytes (of %d) that differ", n, size)
	}
	t.Logf("STOW %v (%.0f MB/s), WADO %v (%.0f MB/s), peak Go memory %.1f MB",
		stowTime.Round(time.Millisecond), float64(size)/1e6/stowTime.Seconds(),
		wadoTime.Round(time.Millisecond), float64(size)/1e6/wadoTime.Seconds(), float64(peak)/(1<<20))
	if peak > limit {
		t.Fatalf("peak memory %.1f MB exceeds %d MB", float64(peak)/(1<<20), limit>>20)
	}
}
