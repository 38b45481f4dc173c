package storage_test

import (
	"bytes"
	"context"
	"io"
	"testing"

	"github.com/consilium/consilium/storage"
	"github.com/consilium/consilium/storage/storagetest"
	"github.com/minio/minio-go/v7"
)

// BenchmarkPutGet64MiB compares, against one MinIO server in one run, a
// 64 MiB put and get through the encrypted store with the same through
// plain minio-go (PutObject and GetObject, default options). The ratio
// of the two is the cost of encryption and of this package.
//
//	go test -run '^$' -bench PutGet64MiB -count 6 ./storage/
func BenchmarkPutGet64MiB(b *testing.B) {
	const size = 64 << 20
	data := storagetest.Pattern(42, size)
	ctx := context.Background()
	m := newMinIO(b, false)
	kr := newKeyring(b)

	b.Run("encrypted", func(b *testing.B) {
		s := storage.NewEncrypted(m, kr)
		b.SetBytes(size)
		for b.Loop() {
			if _, err := s.Put(ctx, "bench/obj", bytes.NewReader(data), storage.PutOptions{Size: size}); err != nil {
				b.Fatal(err)
			}
			rc, _, err := s.Get(ctx, "bench/obj", storage.GetOptions{})
			if err != nil {
				b.Fatal(err)
			}
			if n, err := io.Copy(io.Discard, rc); err != nil || n != size {
				b.Fatalf("read %d bytes: %v", n, err)
			}
			rc.Close()
		}
	})
	b.Run("plain", func(b *testing.B) {
		c := m.Client()
		b.SetBytes(size)
		for b.Loop() {
			if _, err := c.PutObject(ctx, m.Bucket(), "bench/plain", bytes.NewReader(data), size, minio.PutObjectOptions{}); err != nil {
				b.Fatal(err)
			}
			obj, err := c.GetObject(ctx, m.Bucket(), "bench/plain", minio.GetObjectOptions{})
			if err != nil {
				b.Fatal(err)
			}
			if n, err := io.Copy(io.Discard, obj); err != nil || n != size {
				b.Fatalf("read %d bytes: %v", n, err)
			}
			obj.Close()
		}
	})
}
