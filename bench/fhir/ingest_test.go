// Package fhirbench measures FHIR ingest through the gateway's HTTPS API
// against the raw github.com/google/fhir R4 unmarshal rate of the same
// Synthea bundles, in the same run. See README.md next to this file.
package fhirbench

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/google/fhir/go/fhirversion"
	"github.com/google/fhir/go/jsonformat"

	"github.com/consilium/consilium/gateway/gatewaytest"
	"github.com/consilium/consilium/internal/miniotest"
	"github.com/consilium/consilium/internal/testenv"
	"github.com/consilium/consilium/storage"
)

func TestMain(m *testing.M) { os.Exit(miniotest.Main(m)) }

// bundle is one Synthea transaction Bundle and its entry count.
type bundle struct {
	raw       []byte
	resources int
}

func synthea(b testing.TB) ([]bundle, int) {
	b.Helper()
	dir, err := os.Getwd()
	if err != nil {
		b.Fatal(err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			break
		}
		dir = filepath.Dir(dir)
	}
	files, err := filepath.Glob(filepath.Join(dir, "..", "shared", "testdata", "fhir", "synthea", "*.json"))
	if err != nil || len(files) == 0 {
		testenv.Missing(b, "../shared/testdata/fhir/synthea", "the shared test corpus must sit next to the repository")
	}
	var out []bundle
	total := 0
	for _, f := range files {
		raw, err := os.ReadFile(f)
		if err != nil {
			b.Fatal(err)
		}
		var env struct{ Entry []json.RawMessage }
		if err := json.Unmarshal(raw, &env); err != nil {
			b.Fatal(err)
		}
		out = append(out, bundle{raw: raw, resources: len(env.Entry)})
		total += len(env.Entry)
	}
	return out, total
}

// BenchmarkIngest compares, on the Synthea bundles, in the same run and
// interleaved pass by pass so that both see the same load on a shared
// machine:
//
//	raw  jsonformat.Unmarshaller.Unmarshal (github.com/google/fhir, R4, with
//	     validation) of each Bundle file
//	api  POST /fhir of each Bundle (a transaction) to an in-process gateway
//	     over TLS 1.3 with client certificates, on an encrypted filesystem
//	     (fs) or MinIO (minio) store
//
// one Bundle at a time (sequential) or GOMAXPROCS at a time (parallel, for
// both). It reports raw-resources/s, api-resources/s and api/raw. Every API
// figure includes TLS, a policy decision per entry, parsing and validation,
// reference rewriting, encryption, the audit entry and the commit (one object).
//
//	go test -run '^$' -bench Ingest -benchtime 20x ./bench/fhir/
func BenchmarkIngest(b *testing.B) {
	bundles, total := synthea(b)
	u, err := jsonformat.NewUnmarshaller("UTC", fhirversion.R4)
	if err != nil {
		b.Fatal(err)
	}
	raw := func(bd bundle) error {
		_, err := u.Unmarshal(bd.raw)
		return err
	}
	for _, backend := range []string{"fs", "minio"} {
		for _, mode := range []string{"sequential", "parallel"} {
			b.Run(backend+"/"+mode, func(b *testing.B) {
				var store storage.Store
				if backend == "minio" {
					store = minioStore(b)
				}
				g := gatewaytest.Start(b, store, gatewaytest.Config{})
				c := g.Client(b, "st-marys")
				api := func(bd bundle) error { return postBundle(c, g.URL+"/fhir", bd.raw) }
				pass := func(f func(bundle) error) time.Duration {
					start := time.Now()
					if mode == "sequential" {
						for _, bd := range bundles {
							if err := f(bd); err != nil {
								b.Fatal(err)
							}
						}
					} else {
						parallel(bundles, f, b)
					}
					return time.Since(start)
				}
				// One warm-up pass of each: connections, the organisation's head.
				pass(raw)
				pass(api)
				var rawTime, apiTime time.Duration
				for b.Loop() {
					rawTime += pass(raw)
					apiTime += pass(api)
				}
				rawRate := float64(total*b.N) / rawTime.Seconds()
				apiRate := float64(total*b.N) / apiTime.Seconds()
				b.ReportMetric(rawRate, "raw-resources/s")
				b.ReportMetric(apiRate, "api-resources/s")
				b.ReportMetric(apiRate/rawRate, "api/raw")
				b.ReportMetric(0, "ns/op") // a pass of both: not a useful figure
			})
		}
	}
}

// parallel runs f on every bundle, GOMAXPROCS at a time.
func parallel(bundles []bundle, f func(bundle) error, b *testing.B) {
	work := make(chan bundle)
	var wg sync.WaitGroup
	var once sync.Once
	var first error
	for range runtime.GOMAXPROCS(0) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for bd := range work {
				if err := f(bd); err != nil {
					once.Do(func() { first = err })
				}
			}
		}()
	}
	for _, bd := range bundles {
		work <- bd
	}
	close(work)
	wg.Wait()
	if first != nil {
		b.Fatal(first)
	}
}

func postBundle(c *http.Client, url string, raw []byte) error {
	req, err := http.NewRequest(http.MethodPost, url, bytes.NewReader(raw))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/fhir+json")
	resp, err := c.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("status %d: %.300s", resp.StatusCode, body)
	}
	return nil
}

func minioStore(b *testing.B) storage.Store {
	srv := miniotest.Start(b)
	m, err := storage.NewMinIO(context.Background(), storage.MinIOConfig{
		Endpoint: srv.Endpoint, AccessKey: srv.AccessKey, SecretKey: srv.SecretKey, Bucket: srv.Bucket, UseTLS: srv.UseTLS,
	})
	if err != nil {
		b.Fatal(err)
	}
	kr, err := storage.GenerateKeyring(rand.Reader)
	if err != nil {
		b.Fatal(err)
	}
	return storage.NewEncrypted(m, kr)
}
