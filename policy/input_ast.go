package policy

import (
	"time"

	"github.com/open-policy-agent/opa/v1/ast"
)

// astValue builds the policy's view of a normalised input directly, without
// a round trip through JSON. It must equal the canonical JSON encoding
// parsed by OPA; TestInputASTMatchesJSON holds it to that.
func (in Input) astValue() ast.Value {
	k := &keys
	return ast.NewObject(
		ast.Item(k.time, str(in.Time.Format(time.RFC3339Nano))),
		ast.Item(k.principal, ast.NewTerm(ast.NewObject(
			ast.Item(k.id, str(in.Principal.ID)),
			ast.Item(k.org, str(in.Principal.Org)),
			ast.Item(k.role, str(in.Principal.Role)),
			ast.Item(k.country, str(in.Principal.Country)),
			ast.Item(k.specialty, str(in.Principal.Specialty)),
			ast.Item(k.languages, strs(in.Principal.Languages)),
		))),
		ast.Item(k.action, str(string(in.Action))),
		ast.Item(k.resource, ast.NewTerm(ast.NewObject(
			ast.Item(k.kind, str(in.Resource.Kind)),
			ast.Item(k.org, str(in.Resource.Org)),
			ast.Item(k.typ, str(in.Resource.Type)),
			ast.Item(k.id, str(in.Resource.ID)),
			ast.Item(k.labels, strs(in.Resource.Labels)),
			ast.Item(k.patient, str(in.Resource.Patient)),
		))),
		ast.Item(k.kase, ast.NewTerm(ast.NewObject(
			ast.Item(k.id, str(in.Case.ID)),
			ast.Item(k.org, str(in.Case.Org)),
			ast.Item(k.status, str(in.Case.Status)),
			ast.Item(k.specialty, str(in.Case.Specialty)),
			ast.Item(k.assigned, strs(in.Case.Assigned)),
			ast.Item(k.deadline, str(in.Case.Deadline)),
			ast.Item(k.purpose, str(in.Case.Purpose)),
			ast.Item(k.sourceCountry, str(in.Case.SourceCountry)),
		))),
		ast.Item(k.recipient, ast.NewTerm(ast.NewObject(
			ast.Item(k.id, str(in.Recipient.ID)),
			ast.Item(k.org, str(in.Recipient.Org)),
			ast.Item(k.country, str(in.Recipient.Country)),
		))),
		ast.Item(k.consents, consentsTerm(in.Consents)),
	)
}

func consentsTerm(cs []Consent) *ast.Term {
	k := &keys
	terms := make([]*ast.Term, len(cs))
	for i, c := range cs {
		terms[i] = ast.NewTerm(ast.NewObject(
			ast.Item(k.id, str(c.ID)),
			ast.Item(k.status, str(c.Status)),
			ast.Item(k.scope, str(c.Scope)),
			ast.Item(k.decision, str(c.Decision)),
			ast.Item(k.start, str(c.Start)),
			ast.Item(k.end, str(c.End)),
			ast.Item(k.purposes, strs(c.Purposes)),
			ast.Item(k.recipientCountries, strs(c.RecipientCountries)),
			ast.Item(k.excludeLabels, strs(c.ExcludeLabels)),
			ast.Item(k.uninterpreted, strs(c.Uninterpreted)),
		))
	}
	return ast.ArrayTerm(terms...)
}

// str is a string term; the empty string, frequent in inputs, is OPA's
// shared one.
func str(v string) *ast.Term {
	if v == "" {
		return ast.InternedEmptyString
	}
	return ast.StringTerm(v)
}

func strs(vs []string) *ast.Term {
	terms := make([]*ast.Term, len(vs))
	for i, v := range vs {
		terms[i] = str(v)
	}
	return ast.ArrayTerm(terms...)
}

// keys are the object keys of the policy input and of the decision as
// terms, built once and only read (never modify them): ast.InternedTerm
// allocates a new term for every string OPA does not intern itself, and
// every decision needs all of these.
var keys = termKeys{
	time: ast.StringTerm("time"), principal: ast.StringTerm("principal"), action: ast.StringTerm("action"),
	resource: ast.StringTerm("resource"), kase: ast.StringTerm("case"), recipient: ast.StringTerm("recipient"),
	consents: ast.StringTerm("consents"),

	id: ast.StringTerm("id"), org: ast.StringTerm("org"), role: ast.StringTerm("role"),
	country: ast.StringTerm("country"), specialty: ast.StringTerm("specialty"), languages: ast.StringTerm("languages"),
	kind: ast.StringTerm("kind"), typ: ast.StringTerm("type"), labels: ast.StringTerm("labels"),
	patient: ast.StringTerm("patient"), status: ast.StringTerm("status"), assigned: ast.StringTerm("assigned"),
	deadline: ast.StringTerm("deadline"), purpose: ast.StringTerm("purpose"), sourceCountry: ast.StringTerm("source_country"),
	scope: ast.StringTerm("scope"), decision: ast.StringTerm("decision"), start: ast.StringTerm("start"),
	end: ast.StringTerm("end"), purposes: ast.StringTerm("purposes"), recipientCountries: ast.StringTerm("recipient_countries"),
	excludeLabels: ast.StringTerm("exclude_labels"), uninterpreted: ast.StringTerm("uninterpreted"),

	allow: ast.StringTerm("allow"), reasons: ast.StringTerm("reasons"), obligations: ast.StringTerm("obligations"),
	deidProfile: ast.StringTerm("deid_profile"), deidOptions: ast.StringTerm("deid_options"),
	withholdBurnedIn: ast.StringTerm("withhold_burned_in"), expires: ast.StringTerm("expires"),
}

type termKeys struct {
	// input
	time, principal, action, resource, kase, recipient, consents *ast.Term
	// their fields
	id, org, role, country, specialty, languages, kind, typ, labels, patient, status, assigned,
	deadline, purpose, sourceCountry, scope, decision, start, end, purposes, recipientCountries,
	excludeLabels, uninterpreted *ast.Term
	// decision
	allow, reasons, obligations, deidProfile, deidOptions, withholdBurnedIn, expires *ast.Term
}
