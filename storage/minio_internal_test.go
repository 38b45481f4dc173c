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
