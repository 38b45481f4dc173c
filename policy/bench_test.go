package policy

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"slices"
	"sync"
	"testing"
	"time"
)

// benchPatients is the number of patients, each with its own consent, whose
// decisions the benchmarks cycle through.
const benchPatients = 10000

// benchInputs builds one packet pull per patient: a released case and the
// patient's consents (a mix of permits, expired, revoked, country-limited and
// label-excluding ones, so that both allow and deny paths run).
func benchInputs() []Input {
	specialists := []Principal{specialistU, specialistE, specialistC}
	ins := make([]Input, benchPatients)
	for i := range ins {
		c := Consent{
			ID: fmt.Sprintf("consent-%05d", i), Status: "active", Scope: "patient-privacy", Decision: "permit",
			Start: "2025-01-01T00:00:00Z", End: "2026-01-01T00:00:00Z",
			Purposes:           []string{ActReasonCodeSystem + "|TREAT"},
			RecipientCountries: []string{}, ExcludeLabels: []string{}, Uninterpreted: []string{},
		}
		switch i % 20 {
		case 1:
			c.End = "2025-03-01T00:00:00Z"
		case 2:
			c.Status = "inactive"
		case 3:
			c.RecipientCountries = []string{"ES", "FR"}
		case 4:
			c.ExcludeLabels = []string{"HIV", "PSY"}
		case 5:
			c.Purposes = []string{ActReasonCodeSystem + "|HRESCH"}
		}
		consents := []Consent{c}
		if i%7 == 0 {
			old := c
			old.ID += "-old"
			old.Status = "inactive"
			consents = append(consents, old)
		}
		cs := testCase(CaseReleased)
		cs.ID = fmt.Sprintf("case-%05d", i)
		ins[i] = Input{
			Principal: specialists[i%len(specialists)],
			Action:    ActionPacketRead,
			Resource:  Resource{Kind: "packet", Org: "st-mary", ID: cs.ID, Patient: fmt.Sprintf("pk-%05d", i)},
			Case:      cs,
			Consents:  consents,
		}
	}
	return ins
}

// benchDecider decides one input; ok is the decision's allow.
type benchDecider func(ctx context.Context, in Input) (allow bool, err error)

// benchLatency times each decision and reports p50, p99 and the
// single-caller rate.
func benchLatency(b *testing.B, decide benchDecider) {
	ctx := context.Background()
	ins := benchInputs()
	lat := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		start := time.Now()
		if _, err := decide(ctx, ins[i%len(ins)]); err != nil {
			b.Fatal(err)
		}
		lat = append(lat, time.Since(start))
	}
	b.StopTimer()
	slices.Sort(lat)
	pct := func(p float64) float64 { return float64(lat[int(p*float64(len(lat)-1))].Nanoseconds()) / 1e3 }
	var total time.Duration
	for _, l := range lat {
		total += l
	}
	b.ReportMetric(pct(0.50), "p50-µs")
	b.ReportMetric(pct(0.99), "p99-µs")
	b.ReportMetric(float64(len(lat))/total.Seconds(), "decisions/s")
}

// benchThroughput reports decisions per second with parallel callers.
func benchThroughput(b *testing.B, decide benchDecider) {
	ins := benchInputs()
	var mu sync.Mutex
	next := 0
	start := time.Now()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		ctx := context.Background()
		for pb.Next() {
			mu.Lock()
			in := ins[next%len(ins)]
			next++
			mu.Unlock()
			if _, err := decide(ctx, in); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.StopTimer()
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "decisions/s")
}

func embeddedDecider(b *testing.B) benchDecider {
	e := newTestEngine(b, WithDecisionLog(newMemStore(), 1000))
	return func(ctx context.Context, in Input) (bool, error) {
		d, err := e.Decide(ctx, in)
		return d.Allow, err
	}
}

// serverDecider asks an OPA server (CONSILIUM_OPA_URL, started by
// bench/policy/run.sh with the same bundle) over a keep-alive connection.
// The input is normalised and encoded exactly as the engine does it.
func serverDecider(b *testing.B) benchDecider {
	url := os.Getenv("CONSILIUM_OPA_URL")
	if url == "" {
		b.Skip("CONSILIUM_OPA_URL is not set: run bench/policy/run.sh, which starts an OPA server for this benchmark")
	}
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}, Timeout: 10 * time.Second}
	endpoint := url + "/v1/data/consilium/authz/decision"
	now := func() time.Time { return testNow }
	return func(ctx context.Context, in Input) (bool, error) {
		n, err := in.normalize(now)
		if err != nil {
			return false, err
		}
		raw, err := n.canonicalJSON()
		if err != nil {
			return false, err
		}
		body := make([]byte, 0, len(raw)+10)
		body = append(append(append(body, `{"input":`...), raw...), '}')
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, endpoint, bytes.NewReader(body))
		if err != nil {
			return false, err
		}
		req.Header.Set("Content-Type", "application/json")
		resp, err := client.Do(req)
		if err != nil {
			return false, err
		}
		defer resp.Body.Close()
		var out struct {
			Result *struct {
				Allow bool `json:"allow"`
			} `json:"result"`
		}
		if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
			return false, err
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		if resp.StatusCode != http.StatusOK || out.Result == nil {
			return false, fmt.Errorf("OPA server answered %s without a decision", resp.Status)
		}
		return out.Result.Allow, nil
	}
}

// benchInterleaved alternates the embedded engine and the server on the same
// inputs, so that both see the same machine load, and reports both
// latency distributions and their ratios.
func benchInterleaved(b *testing.B, embedded, server benchDecider) {
	ctx := context.Background()
	ins := benchInputs()
	emb := make([]time.Duration, 0, b.N)
	srv := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		in := ins[i%len(ins)]
		start := time.Now()
		a, err := embedded(ctx, in)
		if err != nil {
			b.Fatal(err)
		}
		mid := time.Now()
		c, err := server(ctx, in)
		if err != nil {
			b.Fatal(err)
		}
		emb = append(emb, mid.Sub(start))
		srv = append(srv, time.Since(mid))
		if a != c {
			b.Fatalf("embedded allow=%v, server allow=%v for %s", a, c, in.Case.ID)
		}
	}
	b.StopTimer()
	slices.Sort(emb)
	slices.Sort(srv)
	pct := func(l []time.Duration, p float64) float64 {
		return float64(l[int(p*float64(len(l)-1))].Nanoseconds()) / 1e3
	}
	b.ReportMetric(pct(emb, 0.50), "emb-p50-µs")
	b.ReportMetric(pct(emb, 0.99), "emb-p99-µs")
	b.ReportMetric(pct(srv, 0.50), "srv-p50-µs")
	b.ReportMetric(pct(srv, 0.99), "srv-p99-µs")
	b.ReportMetric(pct(srv, 0.50)/pct(emb, 0.50), "p50-ratio")
	b.ReportMetric(pct(srv, 0.99)/pct(emb, 0.99), "p99-ratio")
}

// BenchmarkDecision compares the embedded engine with an OPA server on the
// same bundle and the same 10,000 patients' inputs. Run it through
// bench/policy/run.sh to include the server.
func BenchmarkDecision(b *testing.B) {
	b.Run("interleaved/latency", func(b *testing.B) { benchInterleaved(b, embeddedDecider(b), serverDecider(b)) })
	b.Run("embedded/latency", func(b *testing.B) { benchLatency(b, embeddedDecider(b)) })
	b.Run("server/latency", func(b *testing.B) { benchLatency(b, serverDecider(b)) })
	b.Run("embedded/parallel", func(b *testing.B) { benchThroughput(b, embeddedDecider(b)) })
	b.Run("server/parallel", func(b *testing.B) { benchThroughput(b, serverDecider(b)) })
}

// TestBenchInputsAgree checks the benchmark's premise: the server (when
// running) decides the inputs exactly as the embedded engine does, and the
// inputs exercise both outcomes.
func TestBenchInputsAgree(t *testing.T) {
	e := newTestEngine(t)
	ins := benchInputs()[:600]
	allowed := 0
	var server benchDecider
	if os.Getenv("CONSILIUM_OPA_URL") != "" {
		server = serverDecider(&testing.B{})
	}
	for _, in := range ins {
		d, err := e.Decide(context.Background(), in)
		if err != nil {
			t.Fatal(err)
		}
		if d.Allow {
			allowed++
		}
		if server != nil {
			got, err := server(context.Background(), in)
			if err != nil || got != d.Allow {
				t.Fatalf("server allow=%v (%v), embedded %v for %s", got, err, d.Allow, in.Case.ID)
			}
		}
	}
	if allowed == 0 || allowed == len(ins) {
		t.Errorf("%d of %d allowed: the benchmark would exercise one path only", allowed, len(ins))
	}
}
