package storage

import (
	"bytes"
	"context"
	"testing"

	"github.com/consilium/consilium/internal/miniotest"
	"github.com/minio/minio-go/v7"
)

// TestPartChecksumVerified checks that the server refuses a part whose
// CRC-32C does not match: parts are sent without a SHA-256 payload
// signature, so this checksum is their write-time integrity check.
func TestPartChecksumVerified(t *testing.T) {
	srv := miniotest.Start(t)
	ctx := context.Background()
	m, err := NewMinIO(ctx, MinIOConfig{Endpoint: srv.Endpoint, AccessKey: srv.AccessKey, SecretKey: srv.SecretKey, Bucket: srv.Bucket, UseTLS: srv.UseTLS})
	if err != nil {
		t.Fatal(err)
	}
	id, err := m.core.NewMultipartUpload(ctx, m.cfg.Bucket, "x", minio.PutObjectOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer m.core.AbortMultipartUpload(ctx, m.cfg.Bucket, "x", id)
	part := bytes.Repeat([]byte("consilium"), 1000)
	opts := partOptions(part)
	if _, err := m.core.PutObjectPart(ctx, m.cfg.Bucket, "x", id, 1, bytes.NewReader(part), int64(len(part)), opts); err != nil {
		t.Fatalf("part with its own checksum: %v", err)
	}
	bad := bytes.Clone(part)
	bad[10] ^= 1
	if _, err := m.core.PutObjectPart(ctx, m.cfg.Bucket, "x", id, 2, bytes.NewReader(bad), int64(len(bad)), opts); err == nil {
		t.Fatal("server accepted a part whose CRC-32C does not match")
	} else {
		t.Logf("altered part refused: %v", err)
	}
}

// TestSingleChecksumVerified checks the same of a single PUT (objects
// up to one part), which goes without the streaming SHA-256 signature:
// the server must refuse a body whose CRC-32C does not match, and store
// one that does with the caller's metadata only.
func TestSingleChecksumVerified(t *testing.T) {
	srv := miniotest.Start(t)
	ctx := context.Background()
	m, err := NewMinIO(ctx, MinIOConfig{Endpoint: srv.Endpoint, AccessKey: srv.AccessKey, SecretKey: srv.SecretKey, Bucket: srv.Bucket, UseTLS: srv.UseTLS})
	if err != nil {
		t.Fatal(err)
	}
	body := bytes.Repeat([]byte("consilium"), 30000)
	caller := map[string]string{"kind": "test"}
	opts := singleOptions(minio.PutObjectOptions{UserMetadata: caller}, body)
	if len(caller) != 1 {
		t.Fatalf("singleOptions changed the caller's metadata: %v", caller)
	}
	if _, err := m.core.PutObject(ctx, m.cfg.Bucket, "good", bytes.NewReader(body), int64(len(body)), "", "", opts); err != nil {
		t.Fatalf("PUT with its own checksum: %v", err)
	}
	info, err := m.Stat(ctx, "good")
	if err != nil {
		t.Fatal(err)
	}
	if len(info.Metadata) != 1 || info.Metadata["kind"] != "test" {
		t.Errorf("metadata %v, want only kind=test", info.Metadata)
	}
	bad := bytes.Clone(body)
	bad[10] ^= 1
	if _, err := m.core.PutObject(ctx, m.cfg.Bucket, "bad", bytes.NewReader(bad), int64(len(bad)), "", "", opts); err == nil {
		t.Fatal("server accepted a PUT whose CRC-32C does not match")
	} else {
		t.Logf("altered body refused: %v", err)
	}
	if _, err := m.Stat(ctx, "bad"); err == nil {
		t.Fatal("the refused PUT left an object")
	}
}
