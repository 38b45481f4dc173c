package policy

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/rego"
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

// benchDecider decides one input.
type benchDecider func(ctx context.Context, in Input) (Decision, error)

// latencies are the durations of single decisions, sorted by report.
type latencies []time.Duration

// pct is the p-th quantile in µs.
func (l latencies) pct(p float64) float64 {
	return float64(l[int(p*float64(len(l)-1))].Nanoseconds()) / 1e3
}

// report sorts l and reports its p50, p99 and the single-caller rate under
// the given prefix.
func (l latencies) report(b *testing.B, prefix string) {
	slices.Sort(l)
	var total time.Duration
	for _, d := range l {
		total += d
	}
	b.ReportMetric(l.pct(0.50), prefix+"p50-µs")
	b.ReportMetric(l.pct(0.99), prefix+"p99-µs")
	b.ReportMetric(float64(len(l))/total.Seconds(), prefix+"decisions/s")
}

// benchLatency times each decision and reports p50, p99 and the
// single-caller rate.
func benchLatency(b *testing.B, decide benchDecider) {
	ctx := context.Background()
	ins := benchInputs()
	lat := make(latencies, 0, b.N)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		start := time.Now()
		if _, err := decide(ctx, ins[i%len(ins)]); err != nil {
			b.Fatal(err)
		}
		lat = append(lat, time.Since(start))
	}
	b.StopTimer()
	lat.report(b, "")
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

func embeddedDecider(b testing.TB) benchDecider {
	e := newTestEngine(b, WithDecisionLog(newMemStore(), 1000))
	return e.Decide
}

// trivialEmbeddedDecider is an engine whose active policy is
// bench/policy/trivial: Decide does all its work (normalise, digest,
// record, evaluate, decode) around an evaluation that decides nothing.
func trivialEmbeddedDecider(b testing.TB) benchDecider {
	ctx := context.Background()
	files, problems := readFS(os.DirFS(filepath.Join("..", "bench", "policy", "trivial")), Limits{})
	if len(problems) > 0 {
		b.Fatal(problems)
	}
	bu, problems := files.parse(Limits{})
	if len(problems) > 0 {
		b.Fatal(problems)
	}
	q, err := rego.New(rego.Query("data.trivial.decision"), rego.ParsedBundle("trivial", bu)).PrepareForEval(ctx)
	if err != nil {
		b.Fatal(err)
	}
	e := newTestEngine(b, WithDecisionLog(newMemStore(), 1000))
	e.current.Store(&prepared{version: "trivial", query: q})
	return e.Decide
}

// referenceEmbeddedDecider is an engine running testdata/reference, the
// default policy as it was before its rules were arranged for speed.
func referenceEmbeddedDecider(b testing.TB) benchDecider {
	p, err := referenceFiles(b).prepare(context.Background(), "reference", Limits{})
	if err != nil {
		b.Fatal(err)
	}
	e := newTestEngine(b, WithDecisionLog(newMemStore(), 1000))
	e.current.Store(p)
	return e.Decide
}

// serverDecider asks an OPA server (CONSILIUM_OPA_URL, started by
// bench/policy/run.sh with the same bundle) for the document at path, over
// a keep-alive connection. The input is normalised and encoded exactly as
// the engine does it, and the answer is read into a Decision as the engine
// reads its own.
func serverDecider(b testing.TB, path string) benchDecider {
	url := os.Getenv("CONSILIUM_OPA_URL")
	if url == "" {
		b.Skip("CONSILIUM_OPA_URL is not set: run bench/policy/run.sh, which starts an OPA server for this benchmark")
	}
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}, Timeout: 10 * time.Second}
	endpoint := url + "/v1/data/" + path
	now := func() time.Time { return testNow }
	return func(ctx context.Context, in Input) (Decision, error) {
		n, err := in.normalize(now)
		if err != nil {
			return Decision{}, err
		}
		raw, err := n.canonicalJSON()
		if err != nil {
			return Decision{}, err
		}
		body := make([]byte, 0, len(raw)+10)
		body = append(append(append(body, `{"input":`...), raw...), '}')
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, endpoint, bytes.NewReader(body))
		if err != nil {
			return Decision{}, err
		}
		req.Header.Set("Content-Type", "application/json")
		resp, err := client.Do(req)
		if err != nil {
			return Decision{}, err
		}
		defer resp.Body.Close()
		answer, err := ast.ValueFromReader(resp.Body)
		_, _ = io.Copy(io.Discard, resp.Body)
		if err != nil {
			return Decision{}, fmt.Errorf("OPA server answered %s: %w", resp.Status, err)
		}
		result := answer.(ast.Object).Get(ast.StringTerm("result"))
		if resp.StatusCode != http.StatusOK || result == nil {
			return Decision{}, fmt.Errorf("OPA server answered %s without a decision", resp.Status)
		}
		return decodeDecision(result.Value)
	}
}

// sameDecision reports whether two decisions say the same (their digests
// and versions aside).
func sameDecision(a, b Decision) bool {
	return a.Allow == b.Allow && slices.Equal(a.Reasons, b.Reasons) && reflect.DeepEqual(a.Obligations, b.Obligations)
}

// benchInterleaved asks the embedded engine and the OPA server in turn, on
// the same inputs, so that both see the same machine load, and reports
// both latency distributions and their ratios. It does the same for the
// trivial policy: the server's answer to it is what the transport and the
// server cost apart from any policy, the least the server path can take.
// And it times the reference policy embedded, to show what the
// arrangement of the default bundle's rules saves.
func benchInterleaved(b *testing.B) {
	paths := []struct {
		name   string
		decide benchDecider
	}{
		{"emb-", embeddedDecider(b)},
		{"srv-", serverDecider(b, "consilium/authz/decision")},
		{"emb-trivial-", trivialEmbeddedDecider(b)},
		{"srv-trivial-", serverDecider(b, "trivial/decision")},
		{"emb-reference-", referenceEmbeddedDecider(b)},
	}
	ctx := context.Background()
	ins := benchInputs()
	lat := make([]latencies, len(paths))
	for i := range lat {
		lat[i] = make(latencies, 0, b.N)
	}
	ds := make([]Decision, len(paths))
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		in := ins[i%len(ins)]
		for j, p := range paths {
			start := time.Now()
			d, err := p.decide(ctx, in)
			lat[j] = append(lat[j], time.Since(start))
			if err != nil {
				b.Fatalf("%s: %v", p.name, err)
			}
			ds[j] = d
		}
		if !sameDecision(ds[0], ds[1]) || !sameDecision(ds[0], ds[4]) {
			b.Fatalf("embedded, server and reference decide %s differently:\n%+v\n%+v\n%+v", in.Case.ID, ds[0], ds[1], ds[4])
		}
	}
	b.StopTimer()
	for j, p := range paths {
		lat[j].report(b, p.name)
	}
	b.ReportMetric(lat[1].pct(0.50)/lat[0].pct(0.50), "p50-ratio")
	b.ReportMetric(lat[1].pct(0.99)/lat[0].pct(0.99), "p99-ratio")
}

// BenchmarkDecision compares the embedded engine with an OPA server on the
// same bundle and the same 10,000 patients' inputs. Run it through
// bench/policy/run.sh to include the server.
func BenchmarkDecision(b *testing.B) {
	b.Run("interleaved/latency", benchInterleaved)
	b.Run("embedded/latency", func(b *testing.B) { benchLatency(b, embeddedDecider(b)) })
	b.Run("server/latency", func(b *testing.B) { benchLatency(b, serverDecider(b, "consilium/authz/decision")) })
	b.Run("embedded/parallel", func(b *testing.B) { benchThroughput(b, embeddedDecider(b)) })
	b.Run("server/parallel", func(b *testing.B) { benchThroughput(b, serverDecider(b, "consilium/authz/decision")) })
}

// TestBenchInputsAgree checks the benchmark's premise: the server (when
// running) decides the inputs exactly as the embedded engine does, reasons
// and obligations included, and the inputs exercise both outcomes.
func TestBenchInputsAgree(t *testing.T) {
	embedded := embeddedDecider(t)
	trivial := trivialEmbeddedDecider(t)
	var server, trivialServer benchDecider
	if os.Getenv("CONSILIUM_OPA_URL") != "" {
		server = serverDecider(t, "consilium/authz/decision")
		trivialServer = serverDecider(t, "trivial/decision")
	}
	ctx := context.Background()
	ins := benchInputs()[:600]
	allowed := 0
	for _, in := range ins {
		d, err := embedded(ctx, in)
		if err != nil {
			t.Fatal(err)
		}
		if d.Allow {
			allowed++
		}
		tr, err := trivial(ctx, in)
		if err != nil || !tr.Allow {
			t.Fatalf("trivial policy: allow=%v, %v", tr.Allow, err)
		}
		if server == nil {
			continue
		}
		got, err := server(ctx, in)
		if err != nil || !sameDecision(got, d) {
			t.Fatalf("%s: server decided %+v (%v), embedded %+v", in.Case.ID, got, err, d)
		}
		if got, err := trivialServer(ctx, in); err != nil || !sameDecision(got, tr) {
			t.Fatalf("%s: server's trivial policy decided %+v (%v), embedded %+v", in.Case.ID, got, err, tr)
		}
	}
	if allowed == 0 || allowed == len(ins) {
		t.Errorf("%d of %d allowed: the benchmark would exercise one path only", allowed, len(ins))
	}
}
