package storage_test

import (
	"context"
	"crypto/sha256"
	"io"
	"math/rand/v2"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/consilium/consilium/storage"
)

// genReader yields n pseudo-random bytes, made on the fly, and hashes
// them as they go.
type genReader struct {
	rng  *rand.ChaCha8
	left int64
	hash interface{ Write([]byte) (int, error) }
}

func (g *genReader) Read(p []byte) (int, error) {
	if g.left == 0 {
		return 0, io.EOF
	}
	if int64(len(p)) > g.left {
		p = p[:g.left]
	}
	g.rng.Read(p)
	g.hash.Write(p)
	g.left -= int64(len(p))
	return len(p), nil
}

// heapPeak samples the heap in use every few milliseconds until stopped
// and returns the highest value seen.
func heapPeak() (stop func() uint64) {
	var peak atomic.Uint64
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		var ms runtime.MemStats
		t := time.NewTicker(5 * time.Millisecond)
		defer t.Stop()
		for {
			runtime.ReadMemStats(&ms)
			if ms.HeapInuse > peak.Load() {
				peak.Store(ms.HeapInuse)
			}
			select {
			case <-done:
				return
			case <-t.C:
			}
		}
	})
	return func() uint64 { close(done); wg.Wait(); return peak.Load() }
}

// TestEncryptedGiB streams 1 GiB through the encrypted store, in and
// out, and checks both the bytes (SHA-256) and that the heap never holds
// more than 64 MB: nothing is buffered whole.
func TestEncryptedGiB(t *testing.T) {
	if testing.Short() {
		t.Skip("streams 1 GiB in and out of each backend; skipped with -short")
	}
	const (
		size     = 1 << 30
		heapCap  = 64 << 20
		objName  = "big/gib"
		seedText = "consilium 1 GiB round trip seed!"
	)
	for _, be := range backends {
		t.Run(be.name, func(t *testing.T) {
			ctx := context.Background()
			s := storage.NewEncrypted(be.new(t), newKeyring(t))
			runtime.GC()
			stop := heapPeak()
			start := time.Now()
			in := sha256.New()
			var seed [32]byte
			copy(seed[:], seedText)
			// Unknown size: the hardest case for bounded memory.
			src := struct{ io.Reader }{&genReader{rng: rand.NewChaCha8(seed), left: size, hash: in}}
			info, err := s.Put(ctx, objName, src, storage.PutOptions{ContentType: "application/dicom"})
			if err != nil {
				stop()
				t.Fatal(err)
			}
			put := time.Since(start)
			rc, _, err := s.Get(ctx, objName, storage.GetOptions{})
			if err != nil {
				stop()
				t.Fatal(err)
			}
			out := sha256.New()
			n, err := io.Copy(out, rc)
			rc.Close()
			peak := stop()
			if err != nil {
				t.Fatal(err)
			}
			if n != size || info.Size != size {
				t.Fatalf("read %d bytes, Put reported %d, want %d", n, info.Size, size)
			}
			if string(in.Sum(nil)) != string(out.Sum(nil)) {
				t.Fatal("SHA-256 of the bytes read differs from the bytes written")
			}
			total := time.Since(start)
			t.Logf("1 GiB: put %v (%.0f MB/s), get %v (%.0f MB/s), peak heap in use %.1f MiB",
				put.Round(time.Millisecond), size/put.Seconds()/1e6,
				(total - put).Round(time.Millisecond), size/(total-put).Seconds()/1e6, float64(peak)/(1<<20))
			if peak > heapCap {
				t.Errorf("peak heap in use %d bytes, over the %d bytes allowed", peak, heapCap)
			}
			if err := s.Delete(ctx, objName); err != nil {
				t.Error(err)
			}
		})
	}
}
