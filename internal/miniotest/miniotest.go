// Package miniotest gives tests a real MinIO server.
//
// Under CI one server is started for the whole run and its address is
// passed in the environment:
//
//	CONSILIUM_TEST_MINIO_ENDPOINT    host:port (or http[s]://host:port)
//	CONSILIUM_TEST_MINIO_ACCESS_KEY  its access key
//	CONSILIUM_TEST_MINIO_SECRET_KEY  its secret key
//
// Without them, the first [Start] in a test binary starts the minio
// program itself on 127.0.0.1 (a free port, a temporary data folder) and
// every later Start in that binary shares it. The program is found at
// $CONSILIUM_MINIO_BIN, else as "minio" on PATH, else in $GOBIN, else in
// $GOPATH/bin (where "go install github.com/minio/minio@..." puts it).
// A missing program is reported with [testenv.Missing]: a failure under
// CI=true, a skip elsewhere.
//
// A package that uses Start should stop the shared server when its tests
// end:
//
//	func TestMain(m *testing.M) { os.Exit(miniotest.Main(m)) }
//
// Without that, each Start gets a server of its own, stopped by
// t.Cleanup (slower, but correct).
//
// Every Start returns a fresh, unique bucket name that does not exist yet;
// the code under test creates it (with object lock if it wants).
package miniotest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"go/build"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/consilium/consilium/internal/testenv"
	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
)

// Environment variables read by this package.
const (
	EnvEndpoint  = "CONSILIUM_TEST_MINIO_ENDPOINT"
	EnvAccessKey = "CONSILIUM_TEST_MINIO_ACCESS_KEY"
	EnvSecretKey = "CONSILIUM_TEST_MINIO_SECRET_KEY"
	EnvBinary    = "CONSILIUM_MINIO_BIN"
)

// installHint says how to get a server.
const installHint = "go install github.com/minio/minio@v0.0.0-20260212201848-7aac2a2c5b7c " +
	"(or set " + EnvBinary + ", or point " + EnvEndpoint + "/" + EnvAccessKey + "/" + EnvSecretKey + " at a running server)"

// Server is a running MinIO server and a bucket name reserved for one
// test.
type Server struct {
	// Endpoint is host:port, without a scheme.
	Endpoint string
	// UseTLS is true when the endpoint speaks HTTPS.
	UseTLS    bool
	AccessKey string
	SecretKey string
	// Bucket is a new, unique bucket name; the bucket does not exist.
	Bucket string
}

// process is a minio server this package started.
type process struct {
	cmd     *exec.Cmd
	exited  <-chan error // receives once the process has exited
	dataDir string
	srv     Server
}

// shared is the server shared by one test binary. Package-level state is
// the point here: one server per test binary, set up by Main and reused
// by every Start in it.
var shared struct {
	sync.Mutex
	inMain bool
	proc   *process
	err    error
}

// Main runs the tests and then stops the shared server, if one was
// started. Call it from TestMain.
func Main(m *testing.M) int {
	shared.Lock()
	shared.inMain = true
	shared.Unlock()
	code := m.Run()
	shared.Lock()
	defer shared.Unlock()
	if shared.proc != nil {
		shared.proc.stop()
		shared.proc = nil
	}
	return code
}

// Start returns a MinIO server for t with a fresh bucket name. See the
// package documentation for where the server comes from.
func Start(t testing.TB) Server {
	t.Helper()
	bucket := newBucketName()
	if ep := os.Getenv(EnvEndpoint); ep != "" {
		ak, sk := os.Getenv(EnvAccessKey), os.Getenv(EnvSecretKey)
		if ak == "" || sk == "" {
			t.Fatalf("%s is set but %s or %s is not", EnvEndpoint, EnvAccessKey, EnvSecretKey)
		}
		host, tls := strings.CutPrefix(ep, "https://")
		host = strings.TrimPrefix(host, "http://")
		return Server{Endpoint: strings.TrimSuffix(host, "/"), UseTLS: tls, AccessKey: ak, SecretKey: sk, Bucket: bucket}
	}
	bin := findBinary()
	if bin == "" {
		testenv.Missing(t, "minio server", installHint)
	}
	shared.Lock()
	defer shared.Unlock()
	if !shared.inMain {
		// No TestMain to stop a shared server: this test gets its own.
		p, err := startProcess(bin)
		if err != nil {
			t.Fatalf("start minio: %v", err)
		}
		t.Cleanup(p.stop)
		srv := p.srv
		srv.Bucket = bucket
		return srv
	}
	if shared.proc == nil && shared.err == nil {
		shared.proc, shared.err = startProcess(bin)
	}
	if shared.err != nil {
		t.Fatalf("start minio: %v", shared.err)
	}
	srv := shared.proc.srv
	srv.Bucket = bucket
	return srv
}

func newBucketName() string {
	var b [8]byte
	rand.Read(b[:])
	return "consilium-test-" + hex.EncodeToString(b[:])
}

// findBinary returns the minio program's path, or "" if there is none.
func findBinary() string {
	if p := os.Getenv(EnvBinary); p != "" {
		return p
	}
	if p, err := exec.LookPath("minio"); err == nil {
		return p
	}
	if gobin := os.Getenv("GOBIN"); gobin != "" {
		if p := filepath.Join(gobin, "minio"); isFile(p) {
			return p
		}
	}
	for _, gp := range filepath.SplitList(build.Default.GOPATH) {
		if p := filepath.Join(gp, "bin", "minio"); isFile(p) {
			return p
		}
	}
	return ""
}

func isFile(p string) bool {
	st, err := os.Stat(p)
	return err == nil && !st.IsDir()
}

func startProcess(bin string) (*process, error) {
	var err error
	for range 3 { // a free port can be taken between probe and bind
		var p *process
		if p, err = tryStart(bin); err == nil {
			return p, nil
		}
	}
	return nil, err
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func tryStart(bin string) (*process, error) {
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	consolePort, err := freePort()
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "consilium-minio-")
	if err != nil {
		return nil, err
	}
	var key [12]byte
	rand.Read(key[:])
	srv := Server{
		Endpoint:  fmt.Sprintf("127.0.0.1:%d", port),
		AccessKey: "consilium-test",
		SecretKey: hex.EncodeToString(key[:]),
	}
	logPath := filepath.Join(dir, "minio.log")
	logf, err := os.Create(logPath)
	if err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	defer logf.Close()
	cmd := exec.Command(bin, "server", "--quiet",
		"--address", srv.Endpoint,
		"--console-address", fmt.Sprintf("127.0.0.1:%d", consolePort),
		filepath.Join(dir, "data"))
	cmd.Env = append(os.Environ(),
		"MINIO_ROOT_USER="+srv.AccessKey,
		"MINIO_ROOT_PASSWORD="+srv.SecretKey,
		"MINIO_BROWSER=off",
		"MINIO_UPDATE=off",
	)
	cmd.Stdout, cmd.Stderr = logf, logf
	// Kill the server if the test binary dies without stopping it.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("run %s: %w", bin, err)
	}
	p := &process{cmd: cmd, dataDir: dir, srv: srv}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	if err := waitReady(srv, exited); err != nil {
		p.kill(exited)
		log, _ := os.ReadFile(logPath)
		os.RemoveAll(dir)
		return nil, fmt.Errorf("%w; server log:\n%s", err, tail(log, 2000))
	}
	p.exited = exited
	return p, nil
}

// waitReady waits until the server answers signed S3 requests: its
// health endpoint answers before it has loaded its IAM and bucket
// metadata.
func waitReady(srv Server, exited <-chan error) error {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	client, err := minio.New(srv.Endpoint, &minio.Options{Creds: credentials.NewStaticV4(srv.AccessKey, srv.SecretKey, "")})
	if err != nil {
		return err
	}
	probe := &http.Client{Timeout: 2 * time.Second}
	var last error
	for {
		last = func() error {
			req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+srv.Endpoint+"/minio/health/ready", nil)
			resp, err := probe.Do(req)
			if err != nil {
				return err
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				return fmt.Errorf("health: %s", resp.Status)
			}
			rctx, rcancel := context.WithTimeout(ctx, 2*time.Second)
			defer rcancel()
			_, err = client.ListBuckets(rctx)
			return err
		}()
		if last == nil {
			return nil
		}
		select {
		case err := <-exited:
			return fmt.Errorf("minio exited before it was ready: %v", err)
		case <-ctx.Done():
			return fmt.Errorf("minio was not ready within 60s: %v", last)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func (p *process) kill(exited <-chan error) {
	p.cmd.Process.Kill()
	<-exited
}

func (p *process) stop() {
	p.kill(p.exited)
	os.RemoveAll(p.dataDir)
}

func tail(b []byte, n int) string {
	if len(b) > n {
		b = b[len(b)-n:]
	}
	return string(b)
}
