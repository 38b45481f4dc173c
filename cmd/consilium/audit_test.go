package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"

	"github.com/consilium/consilium/audit"
	"github.com/consilium/consilium/certs"
	"github.com/consilium/consilium/internal/devenv"
	"github.com/consilium/consilium/internal/miniotest"
	"github.com/consilium/consilium/storage"
)

// callAs makes n GET /whoami requests as principal id.
func callAs(t *testing.T, l devenv.Layout, addr, id string, n int) {
	t.Helper()
	cfg, err := certs.ClientTLSConfig(l.CAFile(), l.ClientCert(id), l.ClientKey(id))
	if err != nil {
		t.Fatal(err)
	}
	c := &http.Client{Transport: &http.Transport{TLSClientConfig: cfg}, Timeout: 10 * time.Second}
	for range n {
		resp, err := c.Get("https://" + addr + "/whoami")
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("whoami: %d", resp.StatusCode)
		}
	}
}

const firstSegment = "audit/log/0000000000000000/00000000000000000001.ndjson"

// TestAuditVerifyDev runs the embedded default, then verifies its audit
// trail offline, before and after someone with access to the disk
// deleted a segment.
func TestAuditVerifyDev(t *testing.T) {
	data := filepath.Join(t.TempDir(), "consilium-data")
	addr := freeAddr(t)
	cmd, _ := startServe(t, nil, "--dev", "--data", data, "--addr", addr)
	waitListening(t, addr)
	layout := devenv.Layout{Dir: data}
	callAs(t, layout, addr, "st-marys", 3)
	callAs(t, layout, addr, "dr-garcia", 2)
	stopServe(t, cmd) // signs a final checkpoint

	code, stdout, stderr := runCLI(t, nil, "audit", "verify", "--dev", "--data", data)
	if code != 0 || !strings.Contains(stdout, "audit trail intact: 5 entries") || !strings.Contains(stdout, "last checkpoint: seq 5") {
		t.Fatalf("verify: exit %d\n%s%s", code, stdout, stderr)
	}
	code, stdout, _ = runCLI(t, nil, "audit", "verify", "--dev", "--data", data, "--json")
	var rep audit.Report
	if err := json.Unmarshal([]byte(stdout), &rep); code != 0 || err != nil || !rep.OK || rep.Head.Seq != 5 || rep.Uncovered != 0 {
		t.Fatalf("verify --json: exit %d %v %s", code, err, stdout)
	}

	// Segments are read-only files under retention; someone who can
	// write the disk can still remove one.
	later, err := storage.NewFilesystem(layout.StoreDir(), storage.WithFilesystemClock(func() time.Time { return time.Now().AddDate(100, 0, 0) }))
	if err != nil {
		t.Fatal(err)
	}
	if err := later.Delete(context.Background(), firstSegment); err != nil {
		t.Fatal(err)
	}
	code, stdout, stderr = runCLI(t, nil, "audit", "verify", "--dev", "--data", data)
	want := "FIRST PROBLEM: missing-segment at seq 1 (object " + firstSegment + ")"
	if code != 1 || !strings.Contains(stdout, want) || !strings.Contains(stderr, "the audit trail is broken") {
		t.Fatalf("after deleting the first segment: exit %d, want 1 and %q\n%s%s", code, want, stdout, stderr)
	}

	if code, _, _ := runCLI(t, nil, "audit", "verify", "--dev", "--data", filepath.Join(t.TempDir(), "nothing")); code != 1 {
		t.Errorf("verify of a missing folder: exit %d, want 1", code)
	}
	if code, _, _ := runCLI(t, nil, "audit", "check"); code != 2 {
		t.Errorf("unknown audit subcommand: exit %d, want 2", code)
	}
}

// TestAuditVerifyMinIO runs serve on a MinIO bucket with object lock,
// configured by environment, and verifies offline with the same
// environment and the public key.
func TestAuditVerifyMinIO(t *testing.T) {
	srv := miniotest.Start(t)
	layout, _, err := devenv.Ensure(t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	addr := freeAddr(t)
	storeEnv := map[string]string{
		"CONSILIUM_STORAGE": "minio", "CONSILIUM_MINIO_ENDPOINT": srv.Endpoint, "CONSILIUM_MINIO_BUCKET": srv.Bucket,
		"CONSILIUM_MINIO_ACCESS_KEY": srv.AccessKey, "CONSILIUM_MINIO_SECRET_KEY": srv.SecretKey,
		"CONSILIUM_MINIO_TLS": fmt.Sprint(srv.UseTLS), "CONSILIUM_MINIO_OBJECT_LOCK": "true",
		"CONSILIUM_AUDIT_RETENTION_DAYS": "1",
	}
	env := []string{
		"CONSILIUM_ADDR=" + addr,
		"CONSILIUM_TLS_CA=" + layout.CAFile(), "CONSILIUM_TLS_CERT=" + layout.ServerCert(),
		"CONSILIUM_TLS_KEY=" + layout.ServerKey(), "CONSILIUM_TLS_CRL=" + layout.CRLFile(),
		"CONSILIUM_KEYRING_FILE=" + layout.KeyringFile(), "CONSILIUM_SIGNING_KEY_FILE=" + layout.SigningKey(),
	}
	for k, v := range storeEnv {
		env = append(env, k+"="+v)
	}
	cmd, _ := startServe(t, env)
	waitListening(t, addr)
	callAs(t, layout, addr, "cm-ana", 4)
	stopServe(t, cmd)

	code, stdout, stderr := runCLI(t, storeEnv, "audit", "verify", "--pub", layout.SigningPub())
	if code != 0 || !strings.Contains(stdout, "audit trail intact: 4 entries") {
		t.Fatalf("verify: exit %d\n%s%s", code, stdout, stderr)
	}
	if code, _, _ := runCLI(t, storeEnv, "audit", "verify"); code != 2 {
		t.Errorf("verify without --pub: exit %d, want 2", code)
	}

	// The segments are locked: MinIO refuses to delete them; an
	// overwrite only adds a version, which verification reports.
	m, err := storage.NewMinIO(context.Background(), storage.MinIOConfig{
		Endpoint: srv.Endpoint, AccessKey: srv.AccessKey, SecretKey: srv.SecretKey, Bucket: srv.Bucket, UseTLS: srv.UseTLS, ObjectLock: true,
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	oi, err := m.Client().StatObject(ctx, srv.Bucket, firstSegment, minio.StatObjectOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Client().RemoveObject(ctx, srv.Bucket, firstSegment, minio.RemoveObjectOptions{VersionID: oi.VersionID}); err == nil {
		t.Fatal("MinIO deleted a locked audit segment")
	}
	forged := strings.NewReader("{}\n")
	if _, err := m.Client().PutObject(ctx, srv.Bucket, firstSegment, forged, forged.Size(), minio.PutObjectOptions{}); err != nil {
		t.Fatal(err)
	}
	code, stdout, _ = runCLI(t, storeEnv, "audit", "verify", "--pub", layout.SigningPub())
	if code != 1 || !strings.Contains(stdout, "FIRST PROBLEM: overwritten at seq 1 (object "+firstSegment+")") || !strings.Contains(stdout, "4 entries") {
		t.Fatalf("after an overwrite: exit %d\n%s", code, stdout)
	}
}
