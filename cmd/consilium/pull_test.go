package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"filippo.io/age"

	"github.com/consilium/consilium/deid"
	"github.com/consilium/consilium/gateway/gatewaytest"
	"github.com/consilium/consilium/internal/devenv"
	"github.com/consilium/consilium/packet"
)

// devLayout makes a development folder: CA, client certificates, the
// specialists' age identities and the gateway's signing key.
func devLayout(t *testing.T) devenv.Layout {
	t.Helper()
	l, _, err := devenv.Ensure(t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// fakeGateway serves h over TLS 1.3 with the development server
// certificate, requiring a client certificate of the development CA, as
// the gateway does.
func fakeGateway(t *testing.T, l devenv.Layout, h http.Handler) string {
	t.Helper()
	cert, err := tls.LoadX509KeyPair(l.ServerCert(), l.ServerKey())
	if err != nil {
		t.Fatal(err)
	}
	caPEM, err := os.ReadFile(l.CAFile())
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(caPEM)
	srv := httptest.NewUnstartedServer(h)
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{cert}, ClientCAs: pool, ClientAuth: tls.RequireAndVerifyClientCert, MinVersion: tls.VersionTLS13}
	srv.StartTLS()
	t.Cleanup(srv.Close)
	return srv.URL
}

// buildPacket builds a packet of a Synthea record and one CT instance for
// caseID, encrypted to the development folder's dr-okafor and signed with
// its gateway key.
func buildPacket(t *testing.T, l devenv.Layout, caseID string) []byte {
	t.Helper()
	data, err := os.ReadFile(l.AgeIdentity("dr-okafor"))
	if err != nil {
		t.Fatal(err)
	}
	id, err := age.ParseX25519Identity(strings.TrimSpace(lastLine(string(data))))
	if err != nil {
		t.Fatal(err)
	}
	src, err := deid.NewKeyed(bytes.Repeat([]byte{7}, 32), deid.KeyedOptions{})
	if err != nil {
		t.Fatal(err)
	}
	bundle, err := os.ReadFile(shared(t, "fhir", "synthea", "Ned_Hintz_e4b9259d-0f54-48d1-a35d-b526729a4dfe.json"))
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	_, err = packet.Build(context.Background(), &buf, packet.Contents{
		Case:      packet.Case{ID: caseID, Question: "Second read of the chest CT?", Specialty: "oncology", Recipient: "dr-okafor"},
		Bundle:    bundle,
		Instances: packet.Files(shared(t, "dicom", "modality", "ct", "CT_small.dcm")),
	}, packet.Options{
		Recipients: []age.Recipient{id.Recipient()},
		SigningKey: gatewaytest.SigningKey(t, l),
		Deid:       packet.Deidentification{Source: src, PatientKey: "st-marys|ned"},
	})
	if err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// lastLine is the last non-comment line of an age identity file.
func lastLine(s string) string {
	var last string
	for l := range strings.SplitSeq(s, "\n") {
		if l = strings.TrimSpace(l); l != "" && !strings.HasPrefix(l, "#") {
			last = l
		}
	}
	return last
}

// step is what the fake packet server does for one request.
type step struct {
	status      int    // 0: serve the packet (200, or 206 for a Range it honours)
	ignoreRange bool   // answer a Range request with the whole packet (200)
	building    bool   // like the gateway's first download: no length, no Accept-Ranges
	cutAt       int    // stop after this many bytes of the body, by breaking the connection
	stallAt     int    // stop sending after this many bytes and wait for the client to leave
	body        string // error answer
	etag        string // overrides the ETag
}

// packetServer serves one packet by a script of steps, recording the
// requests' Range and If-Range.
type packetServer struct {
	packet []byte
	etag   string
	mu     sync.Mutex
	steps  []step
	seen   []http.Header
	// onStall runs once a stalled answer has sent its bytes.
	onStall func()
}

func (p *packetServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	p.mu.Lock()
	p.seen = append(p.seen, r.Header.Clone())
	s := step{}
	if len(p.steps) > 0 {
		s, p.steps = p.steps[0], p.steps[1:]
	}
	p.mu.Unlock()
	if r.Method != http.MethodGet || !strings.HasSuffix(r.URL.Path, "/packet") {
		http.Error(w, "unexpected request", http.StatusBadRequest)
		return
	}
	if s.status != 0 {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(s.status)
		fmt.Fprint(w, s.body)
		return
	}
	etag := p.etag
	if s.etag != "" {
		etag = s.etag
	}
	w.Header().Set("ETag", etag)
	w.Header().Set("Content-Type", "application/octet-stream")
	body, status := p.packet, http.StatusOK
	if rg := r.Header.Get("Range"); rg != "" && !s.ignoreRange && !s.building && r.Header.Get("If-Range") == etag {
		start, _ := strconv.Atoi(strings.TrimSuffix(strings.TrimPrefix(rg, "bytes="), "-"))
		body, status = p.packet[start:], http.StatusPartialContent
		w.Header().Set("Content-Range", fmt.Sprintf("bytes %d-%d/%d", start, len(p.packet)-1, len(p.packet)))
	}
	if s.building {
		w.Header().Set("X-Consilium-Packet-Status", "building")
	} else {
		w.Header().Set("Accept-Ranges", "bytes")
		w.Header().Set("Content-Length", strconv.Itoa(len(body)))
		w.Header().Set("X-Consilium-Packet-Status", "stored")
	}
	w.WriteHeader(status)
	switch {
	case s.cutAt > 0:
		w.Write(body[:s.cutAt])
		w.(http.Flusher).Flush()
		panic(http.ErrAbortHandler) // the connection breaks mid-body
	case s.stallAt > 0:
		w.Write(body[:s.stallAt])
		w.(http.Flusher).Flush()
		if p.onStall != nil {
			p.onStall()
		}
		<-r.Context().Done()
		return
	}
	w.Write(body)
}

func (p *packetServer) requests() []http.Header {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.seen
}

// pullWith runs pull in-process with short waits.
func pullWith(t *testing.T, o pullOptions, args ...string) (error, string, string) {
	t.Helper()
	return pullWithContext(t, context.Background(), o, args...)
}

func pullWithContext(t *testing.T, ctx context.Context, o pullOptions, args ...string) (error, string, string) {
	t.Helper()
	var stdout, stderr bytes.Buffer
	env := &cli{stdout: &stdout, stderr: &stderr, getenv: func(string) string { return "" }}
	err := runPull(ctx, env, args, o)
	return err, stdout.String(), stderr.String()
}

func fastPull() pullOptions {
	return pullOptions{retries: 3, backoff: 5 * time.Millisecond, stall: 5 * time.Second, every: 10 * time.Millisecond}
}

// checkUnpacked checks that dir holds the verified packet of caseID.
func checkUnpacked(t *testing.T, dir, caseID string) {
	t.Helper()
	for _, f := range []string{packet.ManifestPath, packet.SignaturePath, packet.SummaryPath, packet.BundlePath, packet.DICOMDIRPath, "DICOM/P0000001/S0000001/SE000001/I0000001"} {
		if _, err := os.Stat(filepath.Join(dir, caseID, filepath.FromSlash(f))); err != nil {
			t.Errorf("unpacked packet: %v", err)
		}
	}
	for _, leftover := range []string{caseID + ".packet.part", caseID + ".packet.part.etag"} {
		if _, err := os.Stat(filepath.Join(dir, leftover)); err == nil {
			t.Errorf("%s left behind", leftover)
		}
	}
}

func TestPullResumes(t *testing.T) {
	l := devLayout(t)
	const caseID = "c-00000000000000aa"
	pkt := buildPacket(t, l, caseID)
	half, third := len(pkt)/2, len(pkt)/3
	const etag = `"p-build-1"`
	tests := []struct {
		name  string
		steps []step
		// what the second request must carry
		wantRange, wantIfRange string
		wantNote               string
	}{
		{"stored copy cut, resumed", []step{{cutAt: half}, {}}, fmt.Sprintf("bytes=%d-", half), etag, "retrying"},
		{"first download while building, cut, resumed from the stored copy", []step{{building: true, cutAt: third}, {}}, fmt.Sprintf("bytes=%d-", third), etag, "retrying"},
		{"server answers the range with 200", []step{{cutAt: half}, {ignoreRange: true}}, fmt.Sprintf("bytes=%d-", half), etag, "starting over"},
		{"packet built anew: If-Range no longer matches", []step{{cutAt: half}, {etag: `"p-build-2"`}}, fmt.Sprintf("bytes=%d-", half), etag, "starting over"},
		{"503 then the packet", []step{{status: 503, body: `{"error":"store unavailable"}`}, {}}, "", "", "store unavailable"},
		{"stalled, cut and resumed", []step{{stallAt: third}, {}}, fmt.Sprintf("bytes=%d-", third), etag, "no data from the gateway"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ps := &packetServer{packet: pkt, etag: etag, steps: tc.steps}
			url := fakeGateway(t, l, ps)
			out := t.TempDir()
			o := fastPull()
			if tc.steps[0].stallAt > 0 {
				o.stall = 300 * time.Millisecond
			}
			err, stdout, stderr := pullWith(t, o, "--case", caseID, "--out", out, "--server", url, "--as", "dr-okafor", "--data", l.Dir)
			if err != nil {
				t.Fatalf("pull: %v\nstderr:\n%s", err, stderr)
			}
			reqs := ps.requests()
			if len(reqs) != 2 {
				t.Fatalf("%d requests, want 2", len(reqs))
			}
			if reqs[0].Get("Range") != "" || reqs[0].Get("Accept-Encoding") != "identity" {
				t.Errorf("first request: Range %q, Accept-Encoding %q", reqs[0].Get("Range"), reqs[0].Get("Accept-Encoding"))
			}
			if got := reqs[1].Get("Range"); got != tc.wantRange {
				t.Errorf("second request Range %q, want %q", got, tc.wantRange)
			}
			if got := reqs[1].Get("If-Range"); got != tc.wantIfRange {
				t.Errorf("second request If-Range %q, want %q", got, tc.wantIfRange)
			}
			if !strings.Contains(stderr, tc.wantNote) || !strings.Contains(stderr, "pull: downloaded") {
				t.Errorf("stderr does not say %q:\n%s", tc.wantNote, stderr)
			}
			if !strings.Contains(stdout, "packet verified: case "+caseID) || !strings.Contains(stdout, "residual identifier scan: clean") {
				t.Errorf("stdout:\n%s", stdout)
			}
			got, _ := os.ReadFile(filepath.Join(out, caseID+".packet"))
			if !bytes.Equal(got, pkt) {
				t.Fatalf("the downloaded packet differs: %d bytes, want %d", len(got), len(pkt))
			}
			checkUnpacked(t, out, caseID)
		})
	}
}

// TestPullResumesAcrossRuns: a pull interrupted (Ctrl-C) leaves the part
// file and its ETag; the next run asks for the rest only.
func TestPullResumesAcrossRuns(t *testing.T) {
	l := devLayout(t)
	const caseID = "c-00000000000000bb"
	pkt := buildPacket(t, l, caseID)
	cut := len(pkt) * 2 / 3
	ctx, interrupt := context.WithCancel(context.Background())
	defer interrupt()
	out := t.TempDir()
	part := filepath.Join(out, caseID+".packet.part")
	// Ctrl-C once the bytes sent are on disk.
	onStall := func() {
		for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
			if st, err := os.Stat(part); err == nil && st.Size() == int64(cut) {
				break
			}
		}
		interrupt()
	}
	ps := &packetServer{packet: pkt, etag: `"p-1"`, steps: []step{{building: true, stallAt: cut}, {}}, onStall: onStall}
	url := fakeGateway(t, l, ps)
	o := fastPull()
	args := []string{"--case", caseID, "--out", out, "--server", url, "--as", "dr-okafor", "--data", l.Dir}
	err, _, stderr := pullWithContext(t, ctx, o, args...)
	if err == nil || !strings.Contains(err.Error(), "run the same pull again to resume") {
		t.Fatalf("first run: %v\n%s", err, stderr)
	}
	if st, err := os.Stat(part); err != nil || st.Size() != int64(cut) {
		t.Fatalf("part file after the cut: %v %v", st, err)
	}
	if tag, _ := os.ReadFile(filepath.Join(out, caseID+".packet.part.etag")); strings.TrimSpace(string(tag)) != `"p-1"` {
		t.Fatalf("etag file: %q", tag)
	}
	err, stdout, stderr := pullWith(t, o, args...)
	if err != nil {
		t.Fatalf("second run: %v\n%s", err, stderr)
	}
	reqs := ps.requests()
	if reqs[1].Get("Range") != fmt.Sprintf("bytes=%d-", cut) || reqs[1].Get("If-Range") != `"p-1"` {
		t.Fatalf("second run's request: %v", reqs[1])
	}
	if !strings.Contains(stderr, "resuming the download at") || !strings.Contains(stdout, "packet verified") {
		t.Fatalf("stdout:\n%s\nstderr:\n%s", stdout, stderr)
	}
	checkUnpacked(t, out, caseID)

	// Pulling into the same folder again is refused before downloading.
	n := len(ps.requests())
	if err, _, _ := pullWith(t, o, args...); err == nil || !strings.Contains(err.Error(), "already holds an unpacked packet") {
		t.Fatalf("third run: %v", err)
	}
	if len(ps.requests()) != n {
		t.Fatal("the refused pull downloaded")
	}
}

func TestPullRefusals(t *testing.T) {
	l := devLayout(t)
	const caseID = "c-00000000000000cc"
	pkt := buildPacket(t, l, caseID)
	tampered := bytes.Clone(pkt)
	tampered[len(tampered)-200] ^= 1
	other := buildPacket(t, l, "c-00000000000000dd")
	forbidden := `{"error":"forbidden by policy","reasons":["the patient's consent does not permit this recipient","the deadline has passed"],"request_id":"r-42"}`
	tests := []struct {
		name      string
		packet    []byte
		steps     []step
		requests  int
		want      []string
		unpacked  bool
		keepsPart bool
	}{
		{"403 with reasons", pkt, []step{{status: 403, body: forbidden}}, 1,
			[]string{"gateway answered 403: forbidden by policy", "  - the patient's consent does not permit this recipient", "  - the deadline has passed", "request id r-42"}, false, false},
		{"409 not released", pkt, []step{{status: 409, body: `{"error":"the case has not been released yet"}`}}, 1,
			[]string{"409", "not been released"}, false, false},
		{"5xx until giving up", pkt, []step{{status: 502}, {status: 502}, {status: 502}, {status: 502}}, 4,
			[]string{"502"}, false, false},
		{"tampered packet", tampered, nil, 1, []string{"does not verify", "kept for inspection"}, false, false},
		{"packet of another case", other, nil, 1, []string{"signed for case c-00000000000000dd"}, false, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ps := &packetServer{packet: tc.packet, etag: `"p-x"`, steps: tc.steps}
			url := fakeGateway(t, l, ps)
			out := t.TempDir()
			// A part file of an earlier pull: access has ended, so a
			// refusal removes it.
			os.WriteFile(filepath.Join(out, caseID+".packet.part"), pkt[:100], 0o600)
			os.WriteFile(filepath.Join(out, caseID+".packet.part.etag"), []byte(`"p-old"`), 0o600)
			err, _, stderr := pullWith(t, fastPull(), "--case", caseID, "--out", out, "--server", url, "--as", "dr-okafor", "--data", l.Dir)
			if err == nil || errors.As(err, new(usageError)) {
				t.Fatalf("pull: %v, want a failure\n%s", err, stderr)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("the error does not say %q:\n%v", w, err)
				}
			}
			if n := len(ps.requests()); n != tc.requests {
				t.Errorf("%d requests, want %d", n, tc.requests)
			}
			if _, err := os.Stat(filepath.Join(out, caseID)); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("something was unpacked: %v", err)
			}
			if tc.steps != nil && tc.steps[0].status == 403 {
				if _, err := os.Stat(filepath.Join(out, caseID+".packet.part")); !errors.Is(err, os.ErrNotExist) {
					t.Errorf("the part file survived a 403")
				}
			}
		})
	}
}

func TestPullFlags(t *testing.T) {
	l := devLayout(t)
	noKey := filepath.Join(t.TempDir(), "none.agekey")
	tests := []struct {
		name string
		env  map[string]string
		args []string
		code int
		want string
	}{
		{"no case", nil, []string{"pull", "--as", "dr-okafor", "--data", l.Dir}, 2, "--case is required"},
		{"case id with a path", nil, []string{"pull", "--case", "../etc", "--as", "dr-okafor", "--data", l.Dir}, 2, "is not a case id"},
		{"no identity", nil, []string{"pull", "--case", "c-1", "--gateway-key", l.SigningPub()}, 2, "--identity is required"},
		{"no gateway key", nil, []string{"pull", "--case", "c-1", "--identity", l.AgeIdentity("dr-okafor")}, 2, "--gateway-key is required"},
		{"negative retries", nil, []string{"pull", "--case", "c-1", "--retries", "-1", "--as", "dr-okafor", "--data", l.Dir}, 2, "--retries"},
		{"positional argument", nil, []string{"pull", "c-1", "--as", "dr-okafor"}, 2, "unexpected argument"},
		{"missing identity file", nil, []string{"pull", "--case", "c-1", "--identity", noKey, "--as", "dr-okafor", "--data", l.Dir}, 1, "none.agekey"},
		{"gateway key not a key", nil, []string{"pull", "--case", "c-1", "--gateway-key", l.AgeIdentity("dr-okafor"), "--as", "dr-okafor", "--data", l.Dir}, 1, "gateway public key"},
		{"keys from the environment, no certificate", map[string]string{"CONSILIUM_IDENTITY": l.AgeIdentity("dr-okafor"), "CONSILIUM_GATEWAY_KEY": l.SigningPub()},
			[]string{"pull", "--case", "c-1", "--out", t.TempDir()}, 2, "a client certificate"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			code, _, stderr := runCLI(t, tc.env, tc.args...)
			if code != tc.code || !strings.Contains(stderr, tc.want) {
				t.Fatalf("exit %d (want %d), stderr:\n%s", code, tc.code, stderr)
			}
		})
	}
}

func TestPullFlagsResolve(t *testing.T) {
	env := func(m map[string]string) *cli { return &cli{getenv: func(k string) string { return m[k] }} }
	l := devenv.Layout{Dir: "dev"}
	tests := []struct {
		name         string
		flags        pullFlags
		env          map[string]string
		as           string
		identity, pk string
	}{
		{"flags win", pullFlags{caseID: "c-1", identity: "i", gatewayKey: "k", out: "."}, map[string]string{"CONSILIUM_IDENTITY": "ei", "CONSILIUM_GATEWAY_KEY": "ek"}, "dr-okafor", "i", "k"},
		{"environment before --as", pullFlags{caseID: "c-1", out: "."}, map[string]string{"CONSILIUM_IDENTITY": "ei", "CONSILIUM_GATEWAY_KEY": "ek"}, "dr-okafor", "ei", "ek"},
		{"CONSILIUM_GATEWAY_PUB as packet verify reads it", pullFlags{caseID: "c-1", out: "."}, map[string]string{"CONSILIUM_IDENTITY": "ei", "CONSILIUM_GATEWAY_PUB": "ep"}, "", "ei", "ep"},
		{"--as alone", pullFlags{caseID: "c-1", out: "."}, nil, "dr-garcia", l.AgeIdentity("dr-garcia"), l.SigningPub()},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := tc.flags
			if err := f.resolve(env(tc.env), tc.as, l.Dir); err != nil {
				t.Fatal(err)
			}
			if f.identity != tc.identity || f.gatewayKey != tc.pk {
				t.Fatalf("identity %q, key %q; want %q, %q", f.identity, f.gatewayKey, tc.identity, tc.pk)
			}
		})
	}
}

func TestParseContentRange(t *testing.T) {
	tests := []struct {
		in          string
		first, size int64
		ok          bool
	}{
		{"bytes 100-199/200", 100, 200, true},
		{"bytes 0-0/1", 0, 1, true},
		{"bytes 5-9/*", 5, -1, true},
		{"bytes */200", 0, 200, true},
		{"bytes */*", 0, 0, false},
		{"bytes 10-5/200", 0, 0, false},
		{"bytes 100-200/200", 0, 0, false},
		{"bytes -1-5/200", 0, 0, false},
		{"items 0-1/2", 0, 0, false},
		{"bytes 0-1", 0, 0, false},
		{"", 0, 0, false},
	}
	for _, tc := range tests {
		t.Run(tc.in, func(t *testing.T) {
			first, size, ok := parseContentRange(tc.in)
			if ok != tc.ok || ok && (first != tc.first || size != tc.size) {
				t.Fatalf("(%d, %d, %v), want (%d, %d, %v)", first, size, ok, tc.first, tc.size, tc.ok)
			}
		})
	}
}

func TestResumeTag(t *testing.T) {
	tests := []struct {
		name string
		h    http.Header
		want string
	}{
		{"strong", http.Header{"Etag": {`"a"`}, "Accept-Ranges": {"bytes"}}, `"a"`},
		{"building: no Accept-Ranges yet", http.Header{"Etag": {`"a"`}}, `"a"`},
		{"weak", http.Header{"Etag": {`W/"a"`}}, ""},
		{"ranges refused", http.Header{"Etag": {`"a"`}, "Accept-Ranges": {"none"}}, ""},
		{"none", http.Header{}, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := resumeTag(tc.h); got != tc.want {
				t.Fatalf("%q, want %q", got, tc.want)
			}
		})
	}
}

func TestRetryBackoff(t *testing.T) {
	for failures, want := range []time.Duration{100, 100, 200, 400, 800} {
		want *= time.Millisecond
		for range 20 {
			if d := retryBackoff(100*time.Millisecond, failures); d < want/2 || d > want {
				t.Fatalf("after %d failures: %s, want %s..%s", failures, d, want/2, want)
			}
		}
	}
	if d := retryBackoff(time.Second, 30); d > time.Minute {
		t.Fatalf("%s: more than a minute", d)
	}
}

// FuzzParseContentRange: a gateway's Content-Range never panics pull, and
// what it accepts is a range inside the size it gives.
func FuzzParseContentRange(f *testing.F) {
	for _, s := range []string{"bytes 100-199/200", "bytes */200", "bytes 5-9/*", "bytes -1-5/200", "bytes 0-99999999999999999999/1", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if len(s) > 256 {
			return
		}
		first, size, ok := parseContentRange(s)
		if !ok {
			return
		}
		if first < 0 || size < -1 || size >= 0 && first >= max(size, 1) {
			t.Fatalf("%q: first %d, size %d", s, first, size)
		}
	})
}
