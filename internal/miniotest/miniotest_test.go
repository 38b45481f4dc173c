package miniotest_test

import (
	"context"
	"net/http"
	"os"
	"testing"

	"github.com/consilium/consilium/internal/miniotest"
	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
)

func TestMain(m *testing.M) { os.Exit(miniotest.Main(m)) }

func TestStartSharesServer(t *testing.T) {
	a := miniotest.Start(t)
	b := miniotest.Start(t)
	if a.Endpoint != b.Endpoint {
		t.Errorf("two Starts in one binary gave two servers: %s and %s", a.Endpoint, b.Endpoint)
	}
	if a.Bucket == b.Bucket {
		t.Errorf("two Starts gave the same bucket %s", a.Bucket)
	}
	scheme := "http://"
	if a.UseTLS {
		scheme = "https://"
	}
	resp, err := http.Get(scheme + a.Endpoint + "/minio/health/live")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Errorf("health: %s", resp.Status)
	}
	// The credentials work and the bucket name is free and valid.
	c, err := minio.New(a.Endpoint, &minio.Options{Creds: credentials.NewStaticV4(a.AccessKey, a.SecretKey, ""), Secure: a.UseTLS})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if ok, err := c.BucketExists(ctx, a.Bucket); err != nil || ok {
		t.Fatalf("BucketExists(%s) = %t, %v; want a free name", a.Bucket, ok, err)
	}
	if err := c.MakeBucket(ctx, a.Bucket, minio.MakeBucketOptions{ObjectLocking: true}); err != nil {
		t.Fatalf("make bucket with object lock: %v", err)
	}
}
