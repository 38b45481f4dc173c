package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/consilium/consilium/internal/devenv"
	"github.com/consilium/consilium/internal/miniotest"
	"github.com/consilium/consilium/internal/testenv"
	"github.com/consilium/consilium/storage"
)

// binary is the consilium binary built for the tests that run it as a
// separate process (signals, the printed curl line).
var binary string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "consilium-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binary = filepath.Join(dir, "consilium")
	if out, err := exec.Command("go", "build", "-o", binary, ".").CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "building consilium: %v\n%s", err, out)
		os.Exit(1)
	}
	code := miniotest.Main(m)
	os.RemoveAll(dir)
	os.Exit(code)
}

// runCLI runs the command in-process and returns its exit code and output.
func runCLI(t *testing.T, env map[string]string, args ...string) (int, string, string) {
	t.Helper()
	var stdout, stderr bytes.Buffer
	code := run(context.Background(), args, &cli{stdout: &stdout, stderr: &stderr, getenv: func(k string) string { return env[k] }})
	return code, stdout.String(), stderr.String()
}

func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// startServe runs `consilium serve args...` as a process and returns it
// with a scanner over its stdout once it listens.
func startServe(t *testing.T, env []string, args ...string) (*exec.Cmd, *syncBuffer) {
	t.Helper()
	cmd := exec.Command(binary, append([]string{"serve"}, args...)...)
	cmd.Env = append(os.Environ(), env...)
	var stdout, stderr syncBuffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
		if t.Failed() {
			t.Logf("serve stderr:\n%s", stderr.String())
		}
	})
	return cmd, &stdout
}

// syncBuffer is a bytes.Buffer safe to read while a process writes to it.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

func waitListening(t *testing.T, addr string) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		if c, err := net.Dial("tcp", addr); err == nil {
			c.Close()
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("nothing listens on %s after 20s", addr)
}

// stopServe sends SIGTERM and expects a clean exit.
func stopServe(t *testing.T, cmd *exec.Cmd) {
	t.Helper()
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("serve exited with %v after SIGTERM, want 0", err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("serve did not exit within 15s of SIGTERM")
	}
}

var curlLine = regexp.MustCompile(`(?m)^\s+(curl .*)$`)

// TestServeDevCurlLine runs the embedded default as a newcomer would and
// runs the curl line it prints with the real curl.
func TestServeDevCurlLine(t *testing.T) {
	curl := testenv.LookPath(t, "curl", "apt-get install curl")
	data := filepath.Join(t.TempDir(), "consilium-data")
	addr := freeAddr(t)
	cmd, stdout := startServe(t, nil, "--dev", "--data", data, "--addr", addr)
	waitListening(t, addr)
	m := curlLine.FindStringSubmatch(stdout.String())
	if m == nil {
		t.Fatalf("no curl line in the output:\n%s", stdout.String())
	}
	args := strings.Fields(m[1])[1:]
	out, err := exec.Command(curl, append([]string{"--silent", "--show-error", "--fail"}, args...)...).Output()
	if err != nil {
		t.Fatalf("the printed curl line failed: %v\n%s", err, m[1])
	}
	var who struct{ ID, Role string }
	if err := json.Unmarshal(out, &who); err != nil || who.ID != "st-marys" || who.Role != "hospital" {
		t.Fatalf("curl got %s", out)
	}
	for _, p := range devenv.Principals() {
		for _, f := range []string{p.ID + ".pem", p.ID + ".key"} {
			if !strings.Contains(stdout.String(), filepath.Join(data, "pki", f)) {
				t.Errorf("output does not name %s", f)
			}
		}
	}
	caBefore, _ := os.ReadFile(filepath.Join(data, "pki", "ca.pem"))
	stopServe(t, cmd)

	// A second start reuses the folder: same CA, same keys.
	cmd, _ = startServe(t, nil, "--dev", "--data", data, "--addr", addr)
	waitListening(t, addr)
	caAfter, _ := os.ReadFile(filepath.Join(data, "pki", "ca.pem"))
	if !bytes.Equal(caBefore, caAfter) {
		t.Fatal("a second start replaced the development CA")
	}
	if _, err := exec.Command(curl, append([]string{"--silent", "--fail"}, args...)...).Output(); err != nil {
		t.Fatalf("curl after restart: %v", err)
	}
	stopServe(t, cmd)
}

// TestServeOnMinIO runs serve without --dev, configured only by
// environment, against a real MinIO.
func TestServeOnMinIO(t *testing.T) {
	srv := miniotest.Start(t)
	layout, _, err := devenv.Ensure(t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	secretFile := filepath.Join(t.TempDir(), "minio-secret")
	if err := os.WriteFile(secretFile, []byte(srv.SecretKey+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	addr := freeAddr(t)
	env := []string{
		"CONSILIUM_ADDR=" + addr,
		"CONSILIUM_TLS_CA=" + layout.CAFile(), "CONSILIUM_TLS_CERT=" + layout.ServerCert(),
		"CONSILIUM_TLS_KEY=" + layout.ServerKey(), "CONSILIUM_TLS_CRL=" + layout.CRLFile(),
		"CONSILIUM_STORAGE=minio", "CONSILIUM_MINIO_ENDPOINT=" + srv.Endpoint, "CONSILIUM_MINIO_BUCKET=" + srv.Bucket,
		"CONSILIUM_MINIO_ACCESS_KEY=" + srv.AccessKey, "CONSILIUM_MINIO_SECRET_KEY_FILE=" + secretFile,
		fmt.Sprintf("CONSILIUM_MINIO_TLS=%t", srv.UseTLS),
		"CONSILIUM_KEYRING_FILE=" + layout.KeyringFile(), "CONSILIUM_SIGNING_KEY_FILE=" + layout.SigningKey(),
	}
	cmd, _ := startServe(t, env)
	waitListening(t, addr)
	curl := testenv.LookPath(t, "curl", "apt-get install curl")
	out, err := exec.Command(curl, "--silent", "--fail", "--cacert", layout.CAFile(), "https://"+addr+"/readyz").Output()
	if err != nil || !strings.Contains(string(out), "ready") {
		t.Fatalf("readyz on MinIO: %v %s", err, out)
	}
	out, err = exec.Command(curl, "--silent", "--fail", "--cacert", layout.CAFile(),
		"--cert", layout.ClientCert("co-lee"), "--key", layout.ClientKey("co-lee"), "https://"+addr+"/whoami").Output()
	if err != nil || !strings.Contains(string(out), `"co-lee"`) {
		t.Fatalf("whoami on MinIO: %v %s", err, out)
	}
	stopServe(t, cmd)
}

func TestServeRefusesIncompleteConfiguration(t *testing.T) {
	tests := []struct {
		name string
		env  map[string]string
		want []string
	}{
		{"nothing", nil, []string{"CONSILIUM_TLS_CA", "CONSILIUM_KEYRING_FILE", "CONSILIUM_SIGNING_KEY_FILE", "CONSILIUM_STORAGE"}},
		{"unknown backend", map[string]string{"CONSILIUM_STORAGE": "s3"}, []string{`"s3" is neither fs nor minio`}},
		{"minio without endpoint", map[string]string{"CONSILIUM_STORAGE": "minio"}, []string{"minio"}},
		{"missing file", map[string]string{"CONSILIUM_TLS_CA": "/does/not/exist"}, []string{"/does/not/exist"}},
		{"bad boolean", map[string]string{"CONSILIUM_MINIO_TLS": "maybe"}, []string{"CONSILIUM_MINIO_TLS"}},
		{"bad log level", map[string]string{"CONSILIUM_LOG_LEVEL": "loud"}, []string{"CONSILIUM_LOG_LEVEL"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, _, stderr := runCLI(t, tt.env, "serve")
			if code != 1 {
				t.Fatalf("exit %d, want 1; stderr:\n%s", code, stderr)
			}
			for _, w := range tt.want {
				if !strings.Contains(stderr, w) {
					t.Errorf("stderr does not mention %q:\n%s", w, stderr)
				}
			}
		})
	}
	t.Run("secret in the file", func(t *testing.T) {
		f := filepath.Join(t.TempDir(), "c.json")
		os.WriteFile(f, []byte(`{"storage":{"backend":"minio","minio":{"SecretKey":"s3cr3t"}}}`), 0o600)
		code, _, stderr := runCLI(t, nil, "serve", "--config", f)
		if code != 1 || !strings.Contains(stderr, "not in the configuration") || strings.Contains(stderr, "s3cr3t") {
			t.Fatalf("exit %d, stderr:\n%s", code, stderr)
		}
	})
}

func TestCertsCLI(t *testing.T) {
	dir := t.TempDir()
	if code, _, stderr := runCLI(t, nil, "certs", "init", "--dir", dir); code != 0 {
		t.Fatalf("init: %d %s", code, stderr)
	}
	code, stdout, stderr := runCLI(t, nil, "certs", "issue", "--dir", dir, "--id", "dr-x", "--org", "x",
		"--role", "specialist", "--country", "US", "--specialty", "oncology", "--language", "en")
	if code != 0 {
		t.Fatalf("issue: %d %s", code, stderr)
	}
	serial := regexp.MustCompile(`serial:\s+([0-9a-f]+)`).FindStringSubmatch(stdout)
	if serial == nil {
		t.Fatalf("no serial in %q", stdout)
	}
	if code, _, stderr := runCLI(t, nil, "certs", "issue", "--dir", dir, "--server", "--host", "localhost"); code != 0 {
		t.Fatalf("issue server: %d %s", code, stderr)
	}
	if code, _, _ := runCLI(t, nil, "certs", "issue", "--dir", dir, "--id", "x", "--role", "admin"); code != 1 {
		t.Fatalf("bad principal: exit %d, want 1", code)
	}
	if code, _, _ := runCLI(t, nil, "certs", "issue", "--dir", dir, "--server"); code != 2 {
		t.Fatalf("server without host: exit %d, want 2", code)
	}
	if code, _, stderr := runCLI(t, nil, "certs", "revoke", "--dir", dir, "--serial", serial[1]); code != 0 {
		t.Fatalf("revoke: %d %s", code, stderr)
	}
	if code, _, stderr := runCLI(t, nil, "certs", "revoke", "--dir", dir, "--cert", filepath.Join(dir, "dr-x.pem")); code != 0 {
		t.Fatalf("revoke again by file: %d %s", code, stderr)
	}
	_, stdout, _ = runCLI(t, nil, "certs", "revoked", "--dir", dir)
	if strings.TrimSpace(stdout) != serial[1] {
		t.Fatalf("revoked = %q, want %q once", stdout, serial[1])
	}
}

// TestKeysRotate rotates the embedded default's keyring over a store with
// objects, reads them back, and retires the old key.
func TestKeysRotate(t *testing.T) {
	data := t.TempDir()
	cfg, layout, err := devConfig(data, "")
	if err != nil {
		t.Fatal(err)
	}
	kr, err := storage.LoadKeyring(layout.KeyringFile())
	if err != nil {
		t.Fatal(err)
	}
	oldID := kr.ActiveID()
	backend, err := storage.NewFilesystem(cfg.Storage.Dir)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	want := map[string][]byte{}
	for i := range 5 {
		b := make([]byte, 100_000+i)
		rand.Read(b)
		name := fmt.Sprintf("test/object-%d", i)
		want[name] = b
		if _, err := storage.NewEncrypted(backend, kr).Put(ctx, name, bytes.NewReader(b), storage.PutOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	code, stdout, stderr := runCLI(t, nil, "keys", "rotate", "--dev", "--data", data)
	if code != 0 {
		t.Fatalf("rotate: %d\n%s%s", code, stdout, stderr)
	}
	if !strings.Contains(stdout, "re-wrapped 5 of 5") {
		t.Fatalf("rotate output: %s", stdout)
	}
	kr2, err := storage.LoadKeyring(layout.KeyringFile())
	if err != nil {
		t.Fatal(err)
	}
	if kr2.ActiveID() == oldID {
		t.Fatal("active key did not change")
	}
	if code, _, stderr := runCLI(t, nil, "keys", "retire", "--dev", "--data", data, "--id", oldID); code != 0 {
		t.Fatalf("retire: %d %s", code, stderr)
	}
	kr3, err := storage.LoadKeyring(layout.KeyringFile())
	if err != nil {
		t.Fatal(err)
	}
	if len(kr3.Keys()) != 1 {
		t.Fatalf("keys after retire: %v", kr3.Keys())
	}
	for name, b := range want {
		rc, _, err := storage.NewEncrypted(backend, kr3).Get(ctx, name, storage.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		got, err := io.ReadAll(rc)
		rc.Close()
		if err != nil || !bytes.Equal(got, b) {
			t.Fatalf("%s after rotation and retire: %v", name, err)
		}
	}
	if code, _, _ := runCLI(t, nil, "keys", "retire", "--dev", "--data", data, "--id", kr3.ActiveID()); code != 1 {
		t.Fatal("retiring the active key succeeded")
	}
}
