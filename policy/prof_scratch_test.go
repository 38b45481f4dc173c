package policy

import (
	"context"
	"fmt"
	"testing"
	"syscall"
	"time"
	"bytes"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/profiler"
	"github.com/open-policy-agent/opa/v1/rego"

	"github.com/consilium/consilium/policy/builtin"
)

func TestScratchProfile(t *testing.T) {
	ctx := context.Background()
	files, _ := readFS(builtin.FS(), Limits{})
	b, _ := files.parse(Limits{})
	p := profiler.New()
	r := rego.New(rego.Query(Entrypoint), rego.ParsedBundle("c", b), rego.QueryTracer(p), rego.StoreReadAST(true))
	q, err := r.PrepareForEval(ctx)
	if err != nil {
		t.Fatal(err)
	}
	ins := benchInputs()
	for i := 0; i < 300; i++ {
		n, _ := ins[i].normalize(func() time.Time { return testNow })
		raw, _ := n.canonicalJSON()
		v, _ := ast.ValueFromReader(bytes.NewReader(raw))
		if _, err := q.Eval(ctx, rego.EvalParsedInput(v), rego.EvalQueryTracer(p)); err != nil {
			t.Fatal(err)
		}
	}
	for _, s := range p.ReportTopNResults(25, []string{"total_time_ns"}) {
		fmt.Printf("%8.0fµs %6d %s:%d\n", float64(s.ExprTimeNs)/1e3/300, s.NumEval/300, s.Location.File, s.Location.Row)
	}
}

func BenchmarkScratchParts(b *testing.B) {
	ctx := context.Background()
	ins := benchInputs()
	e := newTestEngine(b)
	p := e.current.Load()
	raws := make([][]byte, len(ins))
	for i, in := range ins {
		n, _ := in.normalize(func() time.Time { return testNow })
		raws[i], _ = n.canonicalJSON()
	}
	b.Run("normalize+json", func(b *testing.B) {
		for i := 0; i < b.N; i++ {
			n, _ := ins[i%len(ins)].normalize(func() time.Time { return testNow })
			n.canonicalJSON()
		}
	})
	b.Run("value", func(b *testing.B) {
		for i := 0; i < b.N; i++ {
			ast.ValueFromReader(bytes.NewReader(raws[i%len(raws)]))
		}
	})
	b.Run("evalJSON", func(b *testing.B) {
		for i := 0; i < b.N; i++ {
			p.evalJSON(ctx, raws[i%len(raws)])
		}
	})
	b.Run("whoami", func(b *testing.B) {
		n, _ := Input{Principal: hospitalP, Action: ActionWhoAmI}.normalize(time.Now)
		raw, _ := n.canonicalJSON()
		for i := 0; i < b.N; i++ {
			p.evalJSON(ctx, raw)
		}
	})
}

func TestScratchCPU(t *testing.T) {
	ctx := context.Background()
	ins := benchInputs()
	e := newTestEngine(t)
	cpu := func() time.Duration {
		var ru syscall.Rusage
		syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
		return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	}
	for _, name := range []string{"packet", "whoami"} {
		c0, w0 := cpu(), time.Now()
		const n = 3000
		for i := 0; i < n; i++ {
			in := ins[i%len(ins)]
			if name == "whoami" {
				in = Input{Principal: hospitalP, Action: ActionWhoAmI}
			}
			e.Decide(ctx, in)
		}
		fmt.Printf("%s: cpu %v/op wall %v/op\n", name, (cpu()-c0)/n, time.Since(w0)/n)
	}
}

func BenchmarkScratchWhoami(b *testing.B) {
	ctx := context.Background()
	e := newTestEngine(b)
	in := Input{Principal: hospitalP, Action: ActionWhoAmI}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		e.Decide(ctx, in)
	}
}

func TestScratchQueries(t *testing.T) {
	ctx := context.Background()
	files, _ := readFS(builtin.FS(), Limits{})
	n, _ := benchInputs()[0].normalize(time.Now)
	v := n.astValue()
	for _, q := range []string{"data.consilium.authz.case_doc", "data.consilium.authz.source_country", "data.consilium.authz.recipient", "data.consilium.authz.recipient_country", "data.consilium.authz.transfer_key", `data.consilium.transfers.source_regimes["GB"]`, `data.consilium.transfers.bases["uk-us-data-bridge"]`, `data.consilium.transfers.regimes["uk-gdpr"].destinations["US"]`, `x := data.consilium.transfers; y := x.regimes["uk-gdpr"].destinations["US"]`, "data.consilium.authz.now_ns", "data.consilium.authz.in_force(input.consents[0])", "data.consilium.authz.covers_purpose(input.consents[0])", "data.consilium.authz.permitting", "data.consilium.authz.consent_granted", "data.consilium.authz.consent_problems", "data.consilium.authz.transfer_basis", "data.consilium.authz.expires", "data.consilium.authz.allow", "data.consilium.authz.grants", "data.consilium.authz.denials", "data.consilium.authz.notes", "data.consilium.authz.reasons", "data.consilium.authz.obligations", "data.consilium.authz.decision", "input.action"} {
		b, _ := files.parse(Limits{})
		r := rego.New(rego.Query(q), rego.ParsedBundle("c", b), rego.StoreReadAST(true))
		pq, err := r.PrepareForEval(ctx)
		if err != nil {
			t.Fatal(err)
		}
		c0 := cpuNow()
		for i := 0; i < 2000; i++ {
			pq.Eval(ctx, rego.EvalParsedInput(v))
		}
		fmt.Printf("%-40s %v\n", q, (cpuNow()-c0)/2000)
	}
}

func TestScratchWhoamiLines(t *testing.T) {
	ctx := context.Background()
	files, _ := readFS(builtin.FS(), Limits{})
	b, _ := files.parse(Limits{})
	p := profiler.New()
	r := rego.New(rego.Query(Entrypoint), rego.ParsedBundle("c", b), rego.StoreReadAST(true))
	q, _ := r.PrepareForEval(ctx)
	n, _ := Input{Principal: hospitalP, Action: ActionWhoAmI}.normalize(time.Now)
	q.Eval(ctx, rego.EvalParsedInput(n.astValue()), rego.EvalQueryTracer(p))
	for _, s := range p.ReportTopNResults(200, []string{"num_eval"}) {
		fmt.Printf("%4d %s:%d\n", s.NumEval, s.Location.File, s.Location.Row)
	}
}

func TestScratchTiny(t *testing.T) {
	ctx := context.Background()
	n, _ := Input{Principal: hospitalP, Action: ActionWhoAmI}.normalize(time.Now)
	v := n.astValue()
	for _, q := range []string{"input.action", "x := object.get(input, \"principal\", {})", "input.principal.id == \"\"", "x := 1", "true"} {
		r := rego.New(rego.Query(q))
		pq, err := r.PrepareForEval(ctx)
		if err != nil {
			t.Fatal(err)
		}
		w0 := time.Now()
		for i := 0; i < 5000; i++ {
			pq.Eval(ctx, rego.EvalParsedInput(v))
		}
		fmt.Printf("%-50s %v\n", q, time.Since(w0)/5000)
	}
}

func cpuNow() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
