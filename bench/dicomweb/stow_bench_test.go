// Package dicomweb benchmarks storing a CT series: Consilium's STOW-RS
// (filesystem and MinIO backends) against Orthanc's REST API and against
// plain minio-go PUTs of the same bytes to the same MinIO. run.sh sets
// the servers up inside a private network namespace and runs
// BenchmarkStore; without its environment the benchmark skips.
package dicomweb

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"

	"github.com/consilium/consilium/certs"
	"github.com/consilium/consilium/dicom"
)

// Environment set by run.sh.
const (
	envSeries       = "BENCH_SERIES"      // folder of the series' .dcm files
	envRound        = "BENCH_ROUND"       // distinguishes the UIDs of repeated runs
	envConcurrency  = "BENCH_CONCURRENCY" // requests in flight (default 4)
	envOrthanc      = "BENCH_ORTHANC_URL" // http://127.0.0.1:8042
	envGatewayFS    = "BENCH_GATEWAY_FS_URL"
	envGatewayMinIO = "BENCH_GATEWAY_MINIO_URL"
	envCert         = "BENCH_CERT" // client certificate, key and CA for the gateways
	envKey          = "BENCH_KEY"
	envCA           = "BENCH_CA"
	envMinIO        = "BENCH_MINIO_ENDPOINT" // host:port; plain PUTs go to BENCH_MINIO_BUCKET
	envMinIOAccess  = "BENCH_MINIO_ACCESS_KEY"
	envMinIOSecret  = "BENCH_MINIO_SECRET_KEY"
	envMinIOBucket  = "BENCH_MINIO_BUCKET"
)

// instance is one file of the series, with where its UIDs are, so that
// each iteration can store the series as new instances of a new study.
type instance struct {
	data []byte
	uids []uidAt
}

type uidAt struct{ off, n int }

// series is the loaded series.
type series struct {
	instances []*instance
	bytes     int64
	round     int
	iteration int
}

func loadSeries(b *testing.B) *series {
	b.Helper()
	dir := os.Getenv(envSeries)
	if dir == "" {
		b.Skipf("%s is not set: run bench/dicomweb/run.sh", envSeries)
	}
	files, err := filepath.Glob(filepath.Join(dir, "*.dcm"))
	if err != nil || len(files) == 0 {
		b.Fatalf("no .dcm files in %s", dir)
	}
	sort.Strings(files)
	s := &series{}
	s.round, _ = strconv.Atoi(os.Getenv(envRound))
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			b.Fatal(err)
		}
		res, err := dicom.Check(bytes.NewReader(data), dicom.CheckOptions{})
		if err != nil {
			b.Fatalf("%s: %v", f, err)
		}
		in := &instance{data: data}
		for _, uid := range []string{res.Summary.SOPInstanceUID, res.Summary.StudyInstanceUID, res.Summary.SeriesInstanceUID} {
			if len(uid) < 20 {
				b.Fatalf("%s: UID %q too short to rewrite", f, uid)
			}
			for off := 0; ; {
				i := bytes.Index(data[off:], []byte(uid))
				if i < 0 {
					break
				}
				in.uids = append(in.uids, uidAt{off + i, len(uid)})
				off += i + len(uid)
			}
		}
		s.instances = append(s.instances, in)
		s.bytes += int64(len(data))
	}
	return s
}

// renew rewrites the last digits of every UID of every instance, so that
// the next iteration stores new instances of a new study: no target gets
// to answer "already stored".
func (s *series) renew() {
	s.iteration++
	suffix := fmt.Sprintf("%03d%05d", s.round%1000, s.iteration%100000)
	for _, in := range s.instances {
		for _, u := range in.uids {
			copy(in.data[u.off+u.n-len(suffix):u.off+u.n], suffix)
		}
	}
}

func concurrency() int {
	if n, err := strconv.Atoi(os.Getenv(envConcurrency)); err == nil && n > 0 {
		return n
	}
	return 4
}

// run stores the series once with the given number of instances per
// request and requests in flight.
func (s *series) run(ctx context.Context, perRequest, inFlight int, send func(context.Context, []*instance) error) error {
	jobs := make(chan []*instance)
	errs := make(chan error, inFlight)
	var wg sync.WaitGroup
	for range inFlight {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range jobs {
				if err := send(ctx, j); err != nil {
					select {
					case errs <- err:
					default:
					}
				}
			}
		}()
	}
	for i := 0; i < len(s.instances); i += perRequest {
		jobs <- s.instances[i:min(i+perRequest, len(s.instances))]
	}
	close(jobs)
	wg.Wait()
	select {
	case err := <-errs:
		return err
	default:
		return nil
	}
}

// bench runs b.N iterations of storing the series and reports
// instances/s (and MB/s, from SetBytes).
func bench(b *testing.B, s *series, perRequest int, send func(context.Context, []*instance) error) {
	b.Helper()
	ctx := context.Background()
	b.SetBytes(s.bytes)
	b.ResetTimer()
	var busy time.Duration
	for range b.N {
		b.StopTimer()
		s.renew()
		b.StartTimer()
		start := time.Now()
		if err := s.run(ctx, perRequest, concurrency(), send); err != nil {
			b.Fatal(err)
		}
		busy += time.Since(start)
	}
	b.ReportMetric(float64(len(s.instances)*b.N)/busy.Seconds(), "instances/s")
}

func httpClient(tlsCfg *tls.Config, conns int) *http.Client {
	// HTTP/1.1 with one connection per request in flight for every target,
	// as Orthanc and minio-go speak it.
	tr := &http.Transport{
		TLSClientConfig: tlsCfg, MaxIdleConnsPerHost: conns, MaxConnsPerHost: conns,
		TLSNextProto: map[string]func(string, *tls.Conn) http.RoundTripper{},
	}
	return &http.Client{Transport: tr, Timeout: 10 * time.Minute}
}

// BenchmarkStore stores the series, concurrency 4, against every target
// run.sh started.
func BenchmarkStore(b *testing.B) {
	s := loadSeries(b)
	n := concurrency()
	if u := os.Getenv(envOrthanc); u != "" {
		c := httpClient(nil, n)
		b.Run("orthanc", func(b *testing.B) { bench(b, s, 1, orthancSender(c, u)) })
	}
	cfg, err := certs.ClientTLSConfig(os.Getenv(envCA), os.Getenv(envCert), os.Getenv(envKey))
	if os.Getenv(envGatewayFS)+os.Getenv(envGatewayMinIO) != "" && err != nil {
		b.Fatal(err)
	}
	for _, target := range []struct{ name, url string }{
		{"gateway-fs", os.Getenv(envGatewayFS)}, {"gateway-minio", os.Getenv(envGatewayMinIO)},
	} {
		if target.url == "" {
			continue
		}
		c := httpClient(cfg, n)
		for _, per := range []int{1, 16} {
			b.Run(fmt.Sprintf("%s/per-request=%d", target.name, per), func(b *testing.B) { bench(b, s, per, stowSender(c, target.url)) })
		}
	}
	if ep := os.Getenv(envMinIO); ep != "" {
		mc, err := minio.New(ep, &minio.Options{Creds: credentials.NewStaticV4(os.Getenv(envMinIOAccess), os.Getenv(envMinIOSecret), "")})
		if err != nil {
			b.Fatal(err)
		}
		bucket := os.Getenv(envMinIOBucket)
		ctx := context.Background()
		if ok, err := mc.BucketExists(ctx, bucket); err != nil {
			b.Fatal(err)
		} else if !ok {
			if err := mc.MakeBucket(ctx, bucket, minio.MakeBucketOptions{}); err != nil {
				b.Fatal(err)
			}
		}
		b.Run("minio-put", func(b *testing.B) { bench(b, s, 1, minioSender(mc, bucket)) })
	}
}

// orthancSender posts each instance to Orthanc's REST API.
func orthancSender(c *http.Client, base string) func(context.Context, []*instance) error {
	return func(ctx context.Context, batch []*instance) error {
		for _, in := range batch {
			req, err := http.NewRequestWithContext(ctx, http.MethodPost, base+"/instances", bytes.NewReader(in.data))
			if err != nil {
				return err
			}
			req.Header.Set("Content-Type", "application/dicom")
			resp, err := c.Do(req)
			if err != nil {
				return err
			}
			var ans struct{ Status string }
			err = json.NewDecoder(resp.Body).Decode(&ans)
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK || err != nil || ans.Status != "Success" {
				return fmt.Errorf("orthanc: %d %q %v", resp.StatusCode, ans.Status, err)
			}
		}
		return nil
	}
}

// stowSender stores a batch with one STOW-RS request. The body is put
// together from the instances' bytes without copying them.
func stowSender(c *http.Client, base string) func(context.Context, []*instance) error {
	const boundary = "consilium-bench-boundary"
	return func(ctx context.Context, batch []*instance) error {
		var parts []io.Reader
		var n int64
		add := func(b []byte) {
			parts = append(parts, bytes.NewReader(b))
			n += int64(len(b))
		}
		for _, in := range batch {
			add([]byte("--" + boundary + "\r\nContent-Type: application/dicom\r\n\r\n"))
			add(in.data)
			add([]byte("\r\n"))
		}
		add([]byte("--" + boundary + "--\r\n"))
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, base+"/dicomweb/studies", io.MultiReader(parts...))
		if err != nil {
			return err
		}
		req.ContentLength = n
		req.Header.Set("Content-Type", `multipart/related; type="application/dicom"; boundary=`+boundary)
		resp, err := c.Do(req)
		if err != nil {
			return err
		}
		ans, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || bytes.Count(ans, []byte(`"STORED"`)) != len(batch) {
			return fmt.Errorf("gateway: %d %s", resp.StatusCode, strings.TrimSpace(string(ans[:min(len(ans), 400)])))
		}
		return nil
	}
}

// minioSender PUTs each instance's bytes as one object.
func minioSender(mc *minio.Client, bucket string) func(context.Context, []*instance) error {
	return func(ctx context.Context, batch []*instance) error {
		for _, in := range batch {
			name := fmt.Sprintf("bench/%x", in.data[in.uids[0].off:in.uids[0].off+in.uids[0].n])
			if _, err := mc.PutObject(ctx, bucket, name, bytes.NewReader(in.data), int64(len(in.data)),
				minio.PutObjectOptions{ContentType: "application/dicom"}); err != nil {
				return err
			}
		}
		return nil
	}
}
