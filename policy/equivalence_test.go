package policy

import (
	"context"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"os"
	"strconv"
	"testing"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/rego"

	"github.com/consilium/consilium/policy/builtin"
)

// The default bundle's rules are arranged for speed (see "Performance" in
// policy/builtin/README.md). testdata/reference holds the same policy as it
// was first written, rule by rule as the README describes it, before that
// rearrangement. TestBuiltinDecidesAsReference holds the two to the same
// decisions, reasons and obligations on random inputs, including sparse and
// ill-typed ones that the Rego tests do not try one by one.
//
// When you change what the default policy decides, change the reference the
// same way (or retire this test and the reference together).

// referenceFiles is the reference policy with the default bundle's data.
func referenceFiles(t testing.TB) bundleFiles {
	t.Helper()
	files, problems := readFS(builtin.FS(), Limits{})
	if len(problems) > 0 {
		t.Fatal(problems)
	}
	ref := bundleFiles{}
	for name, b := range files {
		if name == ".manifest" || name == "consilium/data.json" {
			ref[name] = b
		}
	}
	sub, err := fs.Sub(os.DirFS("testdata"), "reference")
	if err != nil {
		t.Fatal(err)
	}
	modules, err := fs.Glob(sub, "*.rego")
	if err != nil || len(modules) == 0 {
		t.Fatalf("no reference policy in testdata/reference: %v", err)
	}
	for _, name := range modules {
		if ref[name], err = fs.ReadFile(sub, name); err != nil {
			t.Fatal(err)
		}
	}
	return ref
}

func TestBuiltinDecidesAsReference(t *testing.T) {
	ctx := context.Background()
	ref, err := referenceFiles(t).prepare(ctx, "reference", Limits{})
	if err != nil {
		t.Fatal(err)
	}
	e := newTestEngine(t)
	got := e.current.Load()

	n := 3000
	if s := os.Getenv("CONSILIUM_EQUIVALENCE_INPUTS"); s != "" {
		if n, err = strconv.Atoi(s); err != nil {
			t.Fatalf("CONSILIUM_EQUIVALENCE_INPUTS: %v", err)
		}
	}
	r := rand.New(rand.NewPCG(6, 2025))
	allowed := 0
	reasons := map[string]bool{}
	for i := range n {
		in := equivalenceInput(r)
		v, err := ast.InterfaceToValue(in)
		if err != nil {
			t.Fatal(err)
		}
		want, err := ref.query.Eval(ctx, rego.EvalParsedInput(v))
		if err != nil {
			t.Fatal(err)
		}
		have, err := got.query.Eval(ctx, rego.EvalParsedInput(v))
		if err != nil {
			t.Fatal(err)
		}
		wv, err := ast.InterfaceToValue(want[0].Expressions[0].Value)
		if err != nil {
			t.Fatal(err)
		}
		hv, err := ast.InterfaceToValue(have[0].Expressions[0].Value)
		if err != nil {
			t.Fatal(err)
		}
		if wv.Compare(hv) != 0 {
			t.Fatalf("input %d decided differently:\ninput     %v\nreference %v\nbuiltin   %v", i, v, wv, hv)
		}
		d, err := decodeDecision(hv)
		if err != nil {
			t.Fatalf("input %d: %v", i, err)
		}
		if d.Allow {
			allowed++
		}
		for _, s := range d.Reasons {
			reasons[s] = true
		}
	}
	t.Logf("%d inputs, %d allowed, %d distinct reasons", n, allowed, len(reasons))
	// The generator must reach both outcomes and most of the policy, or
	// the comparison proves little.
	if allowed < n/10 || allowed > n*6/10 || len(reasons) < 200 {
		t.Errorf("%d of %d inputs allowed with %d distinct reasons: the generator no longer exercises the policy", allowed, n, len(reasons))
	}
}

// equivalenceInput makes a random policy input. Half are near the usual
// requests of the sharing workflow (so that allows are common); the rest
// pick any value, leave fields out or give them the wrong type.
func equivalenceInput(r *rand.Rand) map[string]any {
	g := inputGen{r: r, usual: r.IntN(2) == 0}
	principals := []map[string]any{
		{"id": "ehr-st-mary", "org": "st-mary", "role": "hospital", "country": "GB", "specialty": "", "languages": []any{"en"}},
		{"id": "ehr-north", "org": "north-general", "role": "hospital", "country": "GB", "specialty": "", "languages": []any{}},
		{"id": "cm-alice", "org": "consilium", "role": "case-manager", "country": "GB", "specialty": "", "languages": []any{}},
		{"id": "dr-us", "org": "boston-onc", "role": "specialist", "country": "US", "specialty": "oncology", "languages": []any{}},
		{"id": "dr-es", "org": "hospital-clinic", "role": "specialist", "country": "ES", "specialty": "oncology", "languages": []any{}},
		{"id": "dr-cn", "org": "beijing-onc", "role": "specialist", "country": "CN", "specialty": "oncology", "languages": []any{}},
		{"id": "dr-de", "org": "charite", "role": "specialist", "country": "DE", "specialty": "oncology", "languages": []any{}},
		{"id": "dr-gb", "org": "certified-org", "role": "specialist", "country": "GB", "specialty": "oncology", "languages": []any{}},
		{"id": "dr-x", "org": "x", "role": "specialist", "country": "US", "specialty": "", "languages": []any{}},
		{"id": "dpo-bob", "org": "consilium", "role": "compliance", "country": "GB", "specialty": "", "languages": []any{}},
		{"id": "root", "org": "consilium", "role": "admin", "country": "GB", "specialty": "", "languages": []any{}},
		{"id": "", "org": "st-mary", "role": "hospital", "country": "GB", "specialty": "", "languages": []any{}},
		{"role": "specialist"},
		{"id": "dr-us", "role": "specialist", "country": "US"},
		{},
	}
	actions := []any{}
	for _, a := range Actions() {
		actions = append(actions, string(a))
	}
	actions = append(actions, "root.shell", "", 7)

	in := map[string]any{}
	g.set(in, "time", g.pick("2025-06-01T12:00:00Z", "2025-07-02T00:00:00Z", "2025-01-01T00:00:00Z", "2024-12-31T23:59:59Z", "2025-06-01T12:00:00.5Z", "garbled", nil))

	p := map[string]any{}
	base := principals[r.IntN(len(principals))]
	if g.usual {
		base = principals[3+r.IntN(6)] // a specialist
	}
	for k, v := range base {
		p[k] = v
	}
	in["action"] = g.pick(actions...)
	if g.usual && r.IntN(2) == 0 {
		in["action"] = g.pick("packet.read", "case.release", "case.read")
		if in["action"] == "case.release" {
			p = principals[2] // the case manager releases
		}
	}
	if !g.usual && r.IntN(10) == 0 {
		p[g.pick("id", "org", "role", "country").(string)] = g.pick(5, "", false, []any{}, nil)
	}
	if r.IntN(20) > 0 {
		in["principal"] = p
	}

	res := map[string]any{"kind": g.pick("fhir", "dicom", "principal", ""), "type": g.pick("Observation", "Consent", ""),
		"id": g.pick("o1", "dr-us", "dr-es", ""), "labels": []any{}, "patient": "pk"}
	g.set(res, "org", g.pick("st-mary", "north-general", "boston-onc", "", nil))
	if r.IntN(10) > 0 {
		in["resource"] = res
	}

	cs := map[string]any{"id": "case-1", "specialty": "oncology"}
	g.set(cs, "org", g.pick("st-mary", "north-general", "boston-onc", "", nil))
	g.set(cs, "status", g.pick("draft", "assigned", "released", "opinion-received", "closed", "cancelled", "", nil))
	if g.usual && r.IntN(3) > 0 {
		cs["status"] = g.pick("released", "assigned")
	}
	if r.IntN(10) > 0 {
		cs["assigned"] = g.pick([]any{"dr-us", "dr-es", "dr-cn"}, []any{"dr-us"}, []any{}, []any{"dr-es", "dr-x", "dr-gb", "dr-de"}, []any{""})
	}
	g.set(cs, "deadline", g.pick("2025-07-01T00:00:00Z", "2025-06-15T00:00:00Z", "2025-06-01T12:00:00Z", "2025-05-01T00:00:00Z", "", "next tuesday", nil))
	g.set(cs, "purpose", g.pick("second-opinion", "research", "", nil))
	g.set(cs, "source_country", g.pick("GB", "US", "ES", "DE", "FR", "CN", "JP", "", nil))
	if !g.usual && r.IntN(8) == 0 {
		cs[g.pick("assigned", "deadline", "status", "purpose", "source_country", "org").(string)] = g.pick(5, "", "dr-us", []any{}, map[string]any{"a": "dr-us"}, false, []any{5})
	}
	if r.IntN(10) > 0 {
		in["case"] = cs
	}

	rec := map[string]any{}
	rp := principals[r.IntN(len(principals))]
	for _, k := range []string{"id", "org", "country"} {
		if v, ok := rp[k]; ok && r.IntN(8) > 0 {
			rec[k] = v
		}
	}
	if r.IntN(10) > 0 {
		in["recipient"] = rec
	}

	if r.IntN(10) > 0 {
		list := []any{}
		for i := range g.pick(0, 1, 1, 1, 2, 2, 3, 4).(int) {
			list = append(list, g.consent(i))
		}
		in["consents"] = list
	}
	return in
}

type inputGen struct {
	r     *rand.Rand
	usual bool // prefer the first choice
}

// pick returns one of xs; for a usual input mostly the first.
func (g inputGen) pick(xs ...any) any {
	if g.usual && g.r.IntN(10) < 7 {
		return xs[0]
	}
	return xs[g.r.IntN(len(xs))]
}

// set sets m[k] unless v is nil, which leaves the field out.
func (inputGen) set(m map[string]any, k string, v any) {
	if v != nil {
		m[k] = v
	}
}

func (g inputGen) consent(i int) any {
	treat := ActReasonCodeSystem + "|TREAT"
	c := map[string]any{"id": g.pick("consent-1", "consent-2", "consent-3", fmt.Sprintf("c-%d", i)), "scope": "patient-privacy"}
	g.set(c, "status", g.pick("active", "active", "active", "inactive", "draft", "", nil))
	g.set(c, "decision", g.pick("permit", "permit", "permit", "deny", "", nil, "maybe"))
	g.set(c, "start", g.pick("2025-01-01T00:00:00Z", "2025-01-01T00:00:00Z", "", "2025-09-01T00:00:00Z", "2025-06-01T12:00:00Z", "bad", nil))
	g.set(c, "end", g.pick("2026-01-01T00:00:00Z", "2026-01-01T00:00:00Z", "", "2025-06-15T00:00:00Z", "2025-06-20T00:00:00Z", "2025-06-01T12:00:00Z", "2025-05-01T00:00:00Z", "bad", nil))
	g.set(c, "purposes", g.pick([]any{treat}, []any{treat}, []any{PurposeCodeSystem + "|second-opinion"}, []any{"|TREAT"}, []any{ActReasonCodeSystem + "|HRESCH", treat}, []any{}, nil))
	g.set(c, "recipient_countries", g.pick([]any{}, []any{}, []any{"ES", "FR"}, []any{"US"}, []any{"CN"}, nil))
	g.set(c, "exclude_labels", g.pick([]any{}, []any{}, []any{"HIV", "PSY"}, []any{"PSY"}, nil))
	g.set(c, "uninterpreted", g.pick([]any{}, []any{}, []any{}, []any{"provision.actor"}, []any{"a", "b"}, nil))
	if !g.usual && g.r.IntN(4) == 0 {
		k := g.pick("status", "decision", "start", "end", "purposes", "recipient_countries", "exclude_labels", "uninterpreted", "id").(string)
		c[k] = g.pick(5, "", "x", []any{}, map[string]any{}, map[string]any{"a": "US"}, false, "US", []any{5})
	}
	if !g.usual && g.r.IntN(30) == 0 {
		return map[string]any{"weird": true}
	}
	return c
}
