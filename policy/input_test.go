package policy

import (
	"bytes"
	"testing"
	"time"

	"github.com/open-policy-agent/opa/v1/ast"
)

// TestInputASTMatchesJSON: the input the policy sees is exactly the
// canonical JSON that is digested and recorded.
func TestInputASTMatchesJSON(t *testing.T) {
	ins := append(benchInputs()[:200],
		Input{},
		Input{Principal: hospitalP, Action: ActionFHIRRead, Resource: Resource{Labels: []string{"PSY", "<b>&"}}},
		Input{Principal: specialistU, Action: ActionPacketRead, Consents: []Consent{fixtureConsent(t, "exclude-sensitive"), fixtureConsent(t, "actor-restricted")}},
	)
	for i, in := range ins {
		if in.Action == "" {
			in.Action = ActionWhoAmI
		}
		n, err := in.normalize(func() time.Time { return testNow.Add(123456789 * time.Nanosecond) })
		if err != nil {
			t.Fatal(err)
		}
		raw, err := n.canonicalJSON()
		if err != nil {
			t.Fatal(err)
		}
		fromJSON, err := ast.ValueFromReader(bytes.NewReader(raw))
		if err != nil {
			t.Fatal(err)
		}
		if direct := n.astValue(); ast.Compare(direct, fromJSON) != 0 {
			t.Fatalf("input %d: direct AST\n%v\ndiffers from JSON\n%s", i, direct, raw)
		}
	}
}

func TestActionsValid(t *testing.T) {
	for _, a := range Actions() {
		if !a.Valid() {
			t.Errorf("%s is listed but not valid", a)
		}
	}
	if len(Actions()) != 27 {
		t.Errorf("%d actions", len(Actions()))
	}
	if Action("fhir.delete").Valid() {
		t.Error("unknown action valid")
	}
}
