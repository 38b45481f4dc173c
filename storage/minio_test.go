package storage_test

import (
	"context"
	"errors"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/consilium/consilium/internal/miniotest"
	"github.com/consilium/consilium/storage"
	"github.com/consilium/consilium/storage/storagetest"
	"github.com/minio/minio-go/v7"
)

func TestMain(m *testing.M) { os.Exit(miniotest.Main(m)) }

func minioConfig(t testing.TB, lock bool) storage.MinIOConfig {
	t.Helper()
	srv := miniotest.Start(t)
	return storage.MinIOConfig{
		Endpoint: srv.Endpoint, AccessKey: srv.AccessKey, SecretKey: srv.SecretKey,
		Bucket: srv.Bucket, UseTLS: srv.UseTLS, ObjectLock: lock,
	}
}

func newMinIO(t testing.TB, lock bool, opts ...storage.MinIOOption) *storage.MinIO {
	t.Helper()
	s, err := storage.NewMinIO(context.Background(), minioConfig(t, lock), opts...)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestMinIOContract(t *testing.T) {
	storagetest.Run(t, func(t *testing.T) storage.Store { return newMinIO(t, false) })
}

func TestMinIOContractPrefixLocked(t *testing.T) {
	// A prefix, and a versioned (object-lock) bucket, where overwrites
	// and deletes go through versions.
	storagetest.Run(t, func(t *testing.T) storage.Store {
		cfg := minioConfig(t, true)
		cfg.Prefix = "tenant-a/"
		s, err := storage.NewMinIO(context.Background(), cfg)
		if err != nil {
			t.Fatal(err)
		}
		return s
	})
}

func TestMinIOConfigValidate(t *testing.T) {
	good := storage.MinIOConfig{Endpoint: "127.0.0.1:9000", AccessKey: "a", SecretKey: "s", Bucket: "consilium"}
	if err := good.Validate(); err != nil {
		t.Fatalf("valid config: %v", err)
	}
	tests := map[string]func(c *storage.MinIOConfig){
		"no endpoint":     func(c *storage.MinIOConfig) { c.Endpoint = "" },
		"scheme":          func(c *storage.MinIOConfig) { c.Endpoint = "http://127.0.0.1:9000" },
		"no secret":       func(c *storage.MinIOConfig) { c.SecretKey = "" },
		"no bucket":       func(c *storage.MinIOConfig) { c.Bucket = "" },
		"bucket case":     func(c *storage.MinIOConfig) { c.Bucket = "Consilium" },
		"bucket short":    func(c *storage.MinIOConfig) { c.Bucket = "ab" },
		"prefix no slash": func(c *storage.MinIOConfig) { c.Prefix = "a" },
		"prefix invalid":  func(c *storage.MinIOConfig) { c.Prefix = "A/" },
		"ca without tls":  func(c *storage.MinIOConfig) { c.CAFile = "ca.pem" },
	}
	for name, mutate := range tests {
		t.Run(name, func(t *testing.T) {
			c := good
			mutate(&c)
			if err := c.Validate(); err == nil {
				t.Error("Validate accepted it")
			}
		})
	}
}

func TestMinIOObjectLockRequiresLockedBucket(t *testing.T) {
	cfg := minioConfig(t, false)
	if _, err := storage.NewMinIO(context.Background(), cfg); err != nil {
		t.Fatal(err)
	}
	cfg.ObjectLock = true
	_, err := storage.NewMinIO(context.Background(), cfg)
	if err == nil || !strings.Contains(err.Error(), "object lock") {
		t.Fatalf("NewMinIO with ObjectLock on an unlocked bucket = %v, want a clear refusal", err)
	}
}

func TestMinIORetention(t *testing.T) {
	ctx := context.Background()
	s := newMinIO(t, true)
	until := time.Now().Add(time.Hour)
	storagetest.Put(t, s, "audit/0001", []byte("entry"), storage.PutOptions{
		Retention: &storage.Retention{Mode: storage.Governance, Until: until},
	})
	if err := s.Delete(ctx, "audit/0001"); !errors.Is(err, storage.ErrLocked) {
		t.Errorf("Delete of retained object = %v, want ErrLocked", err)
	}
	if _, err := s.Put(ctx, "audit/0001", strings.NewReader("changed"), storage.PutOptions{}); !errors.Is(err, storage.ErrLocked) {
		t.Errorf("overwrite of retained object = %v, want ErrLocked", err)
	}
	if err := s.UpdateMetadata(ctx, "audit/0001", map[string]string{"a": "b"}, ""); !errors.Is(err, storage.ErrLocked) {
		t.Errorf("UpdateMetadata of retained object = %v, want ErrLocked", err)
	}
	// The server itself refuses to delete the locked version, whatever
	// this package checks.
	oi, err := s.Client().StatObject(ctx, s.Bucket(), "audit/0001", minio.StatObjectOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if oi.VersionID == "" {
		t.Fatal("object in a locked bucket has no version id")
	}
	if mode := oi.Metadata.Get("X-Amz-Object-Lock-Mode"); mode != "GOVERNANCE" {
		t.Errorf("lock mode = %q, want GOVERNANCE", mode)
	}
	err = s.Client().RemoveObject(ctx, s.Bucket(), "audit/0001", minio.RemoveObjectOptions{VersionID: oi.VersionID})
	var er minio.ErrorResponse
	if !errors.As(err, &er) || !strings.Contains(er.Message, "WORM") {
		t.Errorf("server-side delete of locked version = %v, want a WORM refusal", err)
	}
	if got, _ := storagetest.Get(t, s, "audit/0001", storage.GetOptions{}); string(got) != "entry" {
		t.Errorf("retained object changed to %q", got)
	}
	// Retention that has ended no longer blocks: a Put with a short
	// retention, then the wait.
	storagetest.Put(t, s, "audit/short", []byte("x"), storage.PutOptions{
		Retention: &storage.Retention{Mode: storage.Governance, Until: time.Now().Add(2 * time.Second)},
	})
	if err := s.Delete(ctx, "audit/short"); !errors.Is(err, storage.ErrLocked) {
		t.Errorf("Delete during retention = %v, want ErrLocked", err)
	}
	time.Sleep(3 * time.Second)
	if err := s.Delete(ctx, "audit/short"); err != nil {
		t.Errorf("Delete after retention ended: %v", err)
	}
	if _, err := s.Stat(ctx, "audit/short"); !errors.Is(err, storage.ErrNotFound) {
		t.Errorf("Stat after Delete = %v", err)
	}
	// Retention on a bucket without object lock is refused by the server.
	plain := newMinIO(t, false)
	if _, err := plain.Put(ctx, "x", strings.NewReader("x"), storage.PutOptions{
		Retention: &storage.Retention{Mode: storage.Governance, Until: until},
	}); err == nil {
		t.Error("retention on a bucket without object lock succeeded")
	}
}

func TestMinIODeleteRemovesAllVersions(t *testing.T) {
	ctx := context.Background()
	s := newMinIO(t, true)
	storagetest.Put(t, s, "v/x", []byte("one"), storage.PutOptions{})
	storagetest.Put(t, s, "v/x", []byte("two"), storage.PutOptions{})
	if err := s.Delete(ctx, "v/x"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Stat(ctx, "v/x"); !errors.Is(err, storage.ErrNotFound) {
		t.Fatalf("an older version resurfaced after Delete: %v", err)
	}
	n := 0
	for oi := range s.Client().ListObjects(ctx, s.Bucket(), minio.ListObjectsOptions{Prefix: "v/", WithVersions: true}) {
		if oi.Err != nil {
			t.Fatal(oi.Err)
		}
		n++
	}
	if n != 0 {
		t.Errorf("%d versions left after Delete", n)
	}
}

func TestMinIOUpdateMetadata(t *testing.T) {
	ctx := context.Background()
	for _, lock := range []bool{false, true} {
		s := newMinIO(t, lock)
		data := storagetest.Pattern(9, 100_000)
		i1 := storagetest.Put(t, s, "m/x", data, storage.PutOptions{ContentType: "application/dicom", Metadata: map[string]string{"a": "1"}})
		if err := s.UpdateMetadata(ctx, "m/x", map[string]string{"b": "2"}, "wrong"); !errors.Is(err, storage.ErrPreconditionFailed) {
			t.Errorf("UpdateMetadata with a stale ETag = %v", err)
		}
		if err := s.UpdateMetadata(ctx, "m/x", map[string]string{"b": "2"}, i1.ETag); err != nil {
			t.Fatal(err)
		}
		got, info := storagetest.Get(t, s, "m/x", storage.GetOptions{})
		if string(got) != string(data) || info.ContentType != "application/dicom" || info.Metadata["b"] != "2" || info.Metadata["a"] != "" {
			t.Errorf("after UpdateMetadata (lock %t): data equal %t, info %+v", lock, string(got) == string(data), info)
		}
		if err := s.UpdateMetadata(ctx, "m/missing", nil, ""); !errors.Is(err, storage.ErrNotFound) {
			t.Errorf("UpdateMetadata of missing object = %v", err)
		}
		if lock {
			n := 0
			for oi := range s.Client().ListObjects(ctx, s.Bucket(), minio.ListObjectsOptions{Prefix: "m/x", WithVersions: true}) {
				if oi.Err == nil {
					n++
				}
			}
			if n != 1 {
				t.Errorf("%d versions after UpdateMetadata on a versioned bucket, want 1", n)
			}
		}
	}
}

// TestMinIOCancelledPutLeavesNoUpload checks that a multipart upload cut
// short by its context is aborted on the server, not left as parts.
func TestMinIOCancelledPutLeavesNoUpload(t *testing.T) {
	s := newMinIO(t, false)
	ctx, cancel := context.WithCancel(context.Background())
	data := storagetest.Pattern(3, 40<<20)
	r := &cancelAfter{data: data, after: 30 << 20, cancel: cancel}
	if _, err := s.Put(ctx, "c/x", r, storage.PutOptions{}); err == nil {
		t.Fatal("cancelled Put succeeded")
	}
	// The check below can see uploads: one left on purpose is listed.
	core := minio.Core{Client: s.Client()}
	id, err := core.NewMultipartUpload(context.Background(), s.Bucket(), "c/control", minio.PutObjectOptions{})
	if err != nil {
		t.Fatal(err)
	}
	// MinIO lists the uploads of one object name at a time.
	uploads := func(name string) (n int) {
		for u := range s.Client().ListIncompleteUploads(context.Background(), s.Bucket(), name, false) {
			if u.Err != nil {
				t.Fatal(u.Err)
			}
			n++
		}
		return n
	}
	if n := uploads("c/control"); n != 1 {
		t.Errorf("%d incomplete uploads of the control, want 1", n)
	}
	if n := uploads("c/x"); n != 0 {
		t.Errorf("cancelled Put left %d incomplete uploads", n)
	}
	if err := core.AbortMultipartUpload(context.Background(), s.Bucket(), "c/control", id); err != nil {
		t.Fatal(err)
	}
}

type cancelAfter struct {
	data   []byte
	after  int
	cancel context.CancelFunc
}

func (c *cancelAfter) Read(p []byte) (int, error) {
	if c.after <= 0 {
		c.cancel()
	}
	n := copy(p, c.data[:min(len(p), len(c.data))])
	c.data = c.data[n:]
	c.after -= n
	return n, nil
}
