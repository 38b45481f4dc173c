// Package casesbench measures what a specialist waits for when pulling a
// case packet through the gateway: the time to the first byte of GET
// /cases/{id}/packet for a case with a 300-instance CT study, and the
// throughput of the first download (the packet is de-identified, tarred,
// signed, encrypted and stored while it streams) and of a cached
// re-download (served from the encrypted store), each against Debian's age
// CLI encrypting the same packet's tar in the same run. See README.md next
// to this file.
package casesbench

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"filippo.io/age"

	"github.com/consilium/consilium/certs"
	"github.com/consilium/consilium/gateway"
	"github.com/consilium/consilium/gateway/gatewaytest"
	"github.com/consilium/consilium/internal/miniotest"
	"github.com/consilium/consilium/internal/testenv"
	"github.com/consilium/consilium/storage"
)

func TestMain(m *testing.M) { os.Exit(miniotest.Main(m)) }

// specialist pulls the packets; the consent permits its country (US).
const specialist = "dr-okafor"

// BenchmarkPacket measures, through a gateway over TLS 1.3 with client
// certificates, on an encrypted filesystem (store=fs) or MinIO
// (store=minio) store, for a case with a 300-instance CT study and a
// Synthea patient's records, interleaved in every iteration so that all
// see the same load on a shared machine:
//
//	first   GET /cases/{id}/packet of a newly released case: the packet is
//	        built while it streams (de-identification, tar, manifest and
//	        signature, age encryption) and stored in the same pass
//	cached  the same GET again: the stored packet, decrypted from the store
//	age     age -r RECIPIENT -o /dev/null on the plaintext tar of the packet
//
// All three report MB/s of the same plaintext tar, so first/age and
// cached/age are shares of age's throughput. *-cpu-ms are the user and
// system time per packet of this process (gateway and client: the
// client's TLS decryption is in it) and of the age child; unlike the
// rates, other tenants of the machine do not change them much. ttfb-ms is the time from
// sending the first GET (on a new connection, TLS handshake included) to
// the first byte of the body; cached-ttfb-ms the same for the cached one.
// Each is measured over HTTP/2 (proto=h2: what the consilium CLI and curl
// use) and over HTTP/1.1 (proto=http1.1), whose framing costs less.
//
//	go test -run '^$' -bench Packet -benchtime 5x ./bench/cases/
func BenchmarkPacket(b *testing.B) {
	ageBin := testenv.LookPath(b, "age", "apt-get install age")
	study := benchStudy(b)
	for _, backend := range []string{"fs", "minio"} {
		b.Run("store="+backend, func(b *testing.B) {
			// Packets go to the raw backend, as `consilium serve` keeps
			// them: they are age-encrypted already.
			var raw storage.Store
			if backend == "minio" {
				raw = minioBackend(b)
			} else {
				fs, err := storage.NewFilesystem(b.TempDir())
				if err != nil {
					b.Fatal(err)
				}
				raw = fs
			}
			kr, err := storage.GenerateKeyring(rand.Reader)
			if err != nil {
				b.Fatal(err)
			}
			g := gatewaytest.Start(b, storage.NewEncrypted(raw, kr), gatewaytest.Config{Options: gateway.Options{PacketStore: raw}})
			e := newExchange(b, g, study)
			e.raw = raw
			work := b.TempDir()

			// One case outside the measurement: it warms the caches and gives
			// the plaintext tar that age encrypts.
			id := e.releasedCase(b)
			enc := filepath.Join(work, "packet.age")
			f, err := os.Create(enc)
			if err != nil {
				b.Fatal(err)
			}
			if _, err := e.pull(b, "h2", id, f, "building"); err != nil {
				b.Fatal(err)
			}
			f.Close()
			tarFile, tarSize := decrypt(b, enc, g.Layout.AgeIdentity(specialist), filepath.Join(work, "packet.tar"))
			age := []string{ageBin, "-r", recipientOf(b, g.Layout.AgeIdentity(specialist)), "-o", os.DevNull, tarFile}
			e.forget(b, id)
			for _, proto := range []string{"h2", "http1.1"} {
				b.Run("proto="+proto, func(b *testing.B) { e.measure(b, proto, tarSize, age) })
			}
		})
	}
}

// measure runs the iterations of one sub-benchmark: a new case, its first
// and cached download over proto, and age on the tar, each time.
func (e *exchange) measure(b *testing.B, proto string, tarSize int64, age []string) {
	var first, cached, ageTime, ttfb, cachedTTFB time.Duration
	var firstCPU, cachedCPU, ageCPU time.Duration
	for b.Loop() {
		id := e.releasedCase(b)
		cpu := cpuTime(syscall.RUSAGE_SELF)
		p, err := e.pull(b, proto, id, io.Discard, "building")
		if err != nil {
			b.Fatal(err)
		}
		firstCPU += cpuTime(syscall.RUSAGE_SELF) - cpu
		first += p.total
		ttfb += p.ttfb
		cpu = cpuTime(syscall.RUSAGE_SELF)
		p, err = e.pull(b, proto, id, io.Discard, "stored")
		if err != nil {
			b.Fatal(err)
		}
		cachedCPU += cpuTime(syscall.RUSAGE_SELF) - cpu
		cached += p.total
		cachedTTFB += p.ttfb
		cpu = cpuTime(syscall.RUSAGE_CHILDREN)
		start := time.Now()
		if out, err := exec.Command(age[0], age[1:]...).CombinedOutput(); err != nil {
			b.Fatalf("age: %v\n%s", err, out)
		}
		ageTime += time.Since(start)
		ageCPU += cpuTime(syscall.RUSAGE_CHILDREN) - cpu
		e.forget(b, id)
	}
	mbps := func(d time.Duration) float64 { return float64(tarSize) * float64(b.N) / 1e6 / d.Seconds() }
	ms := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 / float64(b.N) }
	b.ReportMetric(ms(ttfb), "ttfb-ms")
	b.ReportMetric(ms(cachedTTFB), "cached-ttfb-ms")
	b.ReportMetric(mbps(first), "first-MB/s")
	b.ReportMetric(mbps(cached), "cached-MB/s")
	b.ReportMetric(mbps(ageTime), "age-MB/s")
	b.ReportMetric(mbps(first)/mbps(ageTime), "first/age")
	b.ReportMetric(mbps(cached)/mbps(ageTime), "cached/age")
	b.ReportMetric(ms(firstCPU), "first-cpu-ms")
	b.ReportMetric(ms(cachedCPU), "cached-cpu-ms")
	b.ReportMetric(ms(ageCPU), "age-cpu-ms")
	b.ReportMetric(float64(tarSize)/1e6, "tar-MB")
	b.ReportMetric(0, "ns/op") // an iteration of all three: not a useful figure
}

// cpuTime is the user and system time of this process (RUSAGE_SELF) or
// of its waited-for children (RUSAGE_CHILDREN).
func cpuTime(who int) time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(who, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// exchange is a gateway holding one patient's records, consent and study.
type exchange struct {
	g                 *gatewaytest.Gateway
	raw               storage.Store // the backend under g.Store
	hospital, cm, spe *http.Client
	patient, study    string
}

// newExchange pushes a Synthea patient's records, a consent that permits
// second opinions in the US, and the study.
func newExchange(b *testing.B, g *gatewaytest.Gateway, study []string) *exchange {
	b.Helper()
	e := &exchange{g: g, hospital: g.Client(b, "st-marys"), cm: g.Client(b, "cm-ana"), spe: g.Client(b, specialist)}
	bundle, err := os.ReadFile(filepath.Join(sharedTestdata(b), "fhir", "synthea", "Liz_Conn_27c911c6-f045-4ffa-af5d-6eba57ac94b2.json"))
	if err != nil {
		b.Fatal(err)
	}
	var tx struct {
		Entry []struct{ Response struct{ Location string } } `json:"entry"`
	}
	call(b, e.hospital, "POST", g.URL+"/fhir", "application/fhir+json", bytes.NewReader(bundle), http.StatusOK, &tx)
	for _, en := range tx.Entry {
		if p, ok := strings.CutPrefix(en.Response.Location, "Patient/"); ok {
			e.patient = strings.Split(p, "/")[0]
		}
	}
	if e.patient == "" {
		b.Fatal("no Patient in the transaction's answer")
	}
	consent := `{"resourceType":"Consent","id":"bench","status":"active",
	"scope":{"coding":[{"system":"http://terminology.hl7.org/CodeSystem/consentscope","code":"patient-privacy"}]},
	"category":[{"coding":[{"system":"http://loinc.org","code":"59284-0"}]}],
	"patient":{"reference":"Patient/` + e.patient + `"},
	"provision":{"type":"permit","period":{"start":"2020-01-01","end":"2099-12-31"},
	  "purpose":[{"system":"https://consilium.health/fhir/CodeSystem/purpose","code":"second-opinion"}],
	  "extension":[{"url":"https://consilium.health/fhir/StructureDefinition/recipient-country","valueCode":"US"}]}}`
	call(b, e.hospital, "PUT", g.URL+"/fhir/Consent/bench", "application/fhir+json", strings.NewReader(consent), http.StatusCreated, nil)
	body, ctype := gatewaytest.STOWBody(study)
	var stored map[string]struct{ Value []json.RawMessage }
	call(b, e.hospital, "POST", g.URL+"/dicomweb/studies", ctype, body, http.StatusOK, &stored)
	var url string
	if v := stored["00081190"].Value; len(v) == 1 {
		json.Unmarshal(v[0], &url)
	}
	if n := len(stored["00081199"].Value); n != len(study) || url == "" {
		b.Fatalf("STOW-RS stored %d of %d instances", n, len(study))
	}
	e.study = url[strings.LastIndex(url, "/")+1:]
	return e
}

// releasedCase opens a case on the study, assigns the specialist and
// releases it.
func (e *exchange) releasedCase(b *testing.B) string {
	b.Helper()
	var c struct{ ID, Status string }
	req, _ := json.Marshal(map[string]any{
		"patient": "Patient/" + e.patient, "question": "Second read of a chest CT: is the nodule malignant?",
		"specialty": "oncology", "languages": []string{"en"}, "studies": []string{e.study},
	})
	call(b, e.hospital, "POST", e.g.URL+"/cases", "application/json", bytes.NewReader(req), http.StatusCreated, &c)
	call(b, e.cm, "POST", e.g.URL+"/cases/"+c.ID+"/assign", "application/json",
		strings.NewReader(`{"specialists":["`+specialist+`"]}`), http.StatusOK, nil)
	call(b, e.cm, "POST", e.g.URL+"/cases/"+c.ID+"/release", "", nil, http.StatusOK, &c)
	if c.Status != "released" {
		b.Fatalf("case %s is %s", c.ID, c.Status)
	}
	return c.ID
}

// pulled is one download's timing.
type pulled struct {
	ttfb, total time.Duration
	size        int64
}

// pull downloads case id's packet into w on a new connection (the
// handshake counts) over proto, "h2" or "http1.1", and checks
// X-Consilium-Packet-Status.
func (e *exchange) pull(b *testing.B, proto, id string, w io.Writer, status string) (pulled, error) {
	b.Helper()
	cfg, err := certs.ClientTLSConfig(e.g.Layout.CAFile(), e.g.Layout.ClientCert(specialist), e.g.Layout.ClientKey(specialist))
	if err != nil {
		b.Fatal(err)
	}
	// Without ForceAttemptHTTP2 a custom TLS configuration means HTTP/1.1.
	tr := &http.Transport{TLSClientConfig: cfg, ForceAttemptHTTP2: proto == "h2"}
	defer tr.CloseIdleConnections()
	c := &http.Client{Transport: tr}
	start := time.Now()
	resp, err := c.Get(e.g.URL + "/cases/" + id + "/packet")
	if err != nil {
		return pulled{}, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK || resp.Header.Get("X-Consilium-Packet-Status") != status || resp.Proto != map[string]string{"h2": "HTTP/2.0", "http1.1": "HTTP/1.1"}[proto] {
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 1000))
		return pulled{}, fmt.Errorf("packet: %d (%s, %s), want 200 (%s, %s): %s", resp.StatusCode, resp.Header.Get("X-Consilium-Packet-Status"), resp.Proto, status, proto, body)
	}
	var one [1]byte
	if _, err := io.ReadFull(resp.Body, one[:]); err != nil {
		return pulled{}, fmt.Errorf("packet: first byte: %w", err)
	}
	p := pulled{ttfb: time.Since(start)}
	w.Write(one[:])
	n, err := io.Copy(w, resp.Body)
	if err != nil {
		return pulled{}, fmt.Errorf("packet: %w", err)
	}
	p.total, p.size = time.Since(start), n+1
	return p, nil
}

// forget cancels case id and deletes its stored objects (the packet is
// about as large as the study), so that the store does not grow with the
// iterations.
func (e *exchange) forget(b *testing.B, id string) {
	b.Helper()
	call(b, e.cm, "POST", e.g.URL+"/cases/"+id+"/cancel", "", nil, http.StatusOK, nil)
	ctx := context.Background()
	var names []string
	for info, err := range e.raw.List(ctx, "") {
		if err != nil {
			b.Fatal(err)
		}
		if strings.Contains(info.Name, id) {
			names = append(names, info.Name)
		}
	}
	for _, n := range names {
		if err := e.raw.Delete(ctx, n); err != nil {
			b.Fatal(err)
		}
	}
}

func call(b *testing.B, c *http.Client, method, url, ctype string, body io.Reader, want int, out any) {
	b.Helper()
	req, err := http.NewRequest(method, url, body)
	if err != nil {
		b.Fatal(err)
	}
	if ctype != "" {
		req.Header.Set("Content-Type", ctype)
	}
	resp, err := c.Do(req)
	if err != nil {
		b.Fatal(err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		b.Fatal(err)
	}
	if resp.StatusCode != want {
		b.Fatalf("%s %s: %d, want %d: %.500s", method, url, resp.StatusCode, want, raw)
	}
	if out != nil {
		if err := json.Unmarshal(raw, out); err != nil {
			b.Fatalf("%s %s: %v", method, url, err)
		}
	}
}

// decrypt decrypts a packet to tarFile with the specialist's identity and
// returns the tar's size.
func decrypt(b *testing.B, packetFile, identityFile, tarFile string) (string, int64) {
	b.Helper()
	data, err := os.ReadFile(identityFile)
	if err != nil {
		b.Fatal(err)
	}
	ids, err := age.ParseIdentities(bytes.NewReader(data))
	if err != nil {
		b.Fatal(err)
	}
	in, err := os.Open(packetFile)
	if err != nil {
		b.Fatal(err)
	}
	defer in.Close()
	r, err := age.Decrypt(in, ids...)
	if err != nil {
		b.Fatal(err)
	}
	out, err := os.Create(tarFile)
	if err != nil {
		b.Fatal(err)
	}
	defer out.Close()
	n, err := io.Copy(out, r)
	if err != nil {
		b.Fatal(err)
	}
	return tarFile, n
}

func recipientOf(b *testing.B, identityFile string) string {
	b.Helper()
	data, err := os.ReadFile(identityFile)
	if err != nil {
		b.Fatal(err)
	}
	ids, err := age.ParseIdentities(bytes.NewReader(data))
	if err != nil || len(ids) != 1 {
		b.Fatalf("%s: %v", identityFile, err)
	}
	return ids[0].(*age.X25519Identity).Recipient().String()
}

// benchStudy returns the files of the study: the *.dcm files under
// $CONSILIUM_BENCH_STUDY (run.sh generates them), else a 300-slice CT
// series generated here with ../shared/tools/gen_dicom.py.
func benchStudy(b *testing.B) []string {
	b.Helper()
	dir := os.Getenv("CONSILIUM_BENCH_STUDY")
	if dir == "" {
		python := testenv.LookPath(b, "/usr/bin/python3", "apt-get install python3 python3-pydicom python3-numpy")
		dir = b.TempDir()
		gen := filepath.Join(sharedTestdata(b), "..", "tools", "gen_dicom.py")
		if out, err := exec.Command(python, gen, dir, "--slices", "300", "--skip-multiframe").CombinedOutput(); err != nil {
			testenv.Missing(b, "a working gen_dicom.py (pydicom and numpy for /usr/bin/python3)", fmt.Sprintf("apt-get install python3-pydicom python3-numpy: %v: %s", err, out))
		}
	}
	var files []string
	filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() && filepath.Ext(p) == ".dcm" {
			files = append(files, p)
		}
		return err
	})
	if len(files) == 0 {
		b.Fatalf("no .dcm files under %s", dir)
	}
	sort.Strings(files)
	return files
}

// sharedTestdata is ../shared/testdata next to the repository.
func sharedTestdata(b *testing.B) string {
	b.Helper()
	dir, err := os.Getwd()
	if err != nil {
		b.Fatal(err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return filepath.Join(dir, "..", "shared", "testdata")
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			b.Fatal("no go.mod above the benchmark's folder")
		}
		dir = parent
	}
}

// minioBackend is a bucket of a real MinIO server.
func minioBackend(b *testing.B) storage.Store {
	b.Helper()
	srv := miniotest.Start(b)
	m, err := storage.NewMinIO(context.Background(), storage.MinIOConfig{
		Endpoint: srv.Endpoint, AccessKey: srv.AccessKey, SecretKey: srv.SecretKey, Bucket: srv.Bucket, UseTLS: srv.UseTLS,
	})
	if err != nil {
		b.Fatal(err)
	}
	return m
}
