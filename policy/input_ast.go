package policy

import (
	"time"

	"github.com/open-policy-agent/opa/v1/ast"
)

// astValue builds the policy's view of a normalised input directly, without
// a round trip through JSON. It must equal the canonical JSON encoding
// parsed by OPA; TestInputASTMatchesJSON holds it to that.
func (in Input) astValue() ast.Value {
	return ast.NewObject(
		str("time", in.Time.Format(time.RFC3339Nano)),
		ast.Item(ast.InternedTerm("principal"), ast.NewTerm(ast.NewObject(
			str("id", in.Principal.ID),
			str("org", in.Principal.Org),
			str("role", in.Principal.Role),
			str("country", in.Principal.Country),
			str("specialty", in.Principal.Specialty),
			strs("languages", in.Principal.Languages),
		))),
		str("action", string(in.Action)),
		ast.Item(ast.InternedTerm("resource"), ast.NewTerm(ast.NewObject(
			str("kind", in.Resource.Kind),
			str("org", in.Resource.Org),
			str("type", in.Resource.Type),
			str("id", in.Resource.ID),
			strs("labels", in.Resource.Labels),
			str("patient", in.Resource.Patient),
		))),
		ast.Item(ast.InternedTerm("case"), ast.NewTerm(ast.NewObject(
			str("id", in.Case.ID),
			str("org", in.Case.Org),
			str("status", in.Case.Status),
			str("specialty", in.Case.Specialty),
			strs("assigned", in.Case.Assigned),
			str("deadline", in.Case.Deadline),
			str("purpose", in.Case.Purpose),
			str("source_country", in.Case.SourceCountry),
		))),
		ast.Item(ast.InternedTerm("recipient"), ast.NewTerm(ast.NewObject(
			str("id", in.Recipient.ID),
			str("org", in.Recipient.Org),
			str("country", in.Recipient.Country),
		))),
		ast.Item(ast.InternedTerm("consents"), consentsTerm(in.Consents)),
	)
}

func consentsTerm(cs []Consent) *ast.Term {
	terms := make([]*ast.Term, len(cs))
	for i, c := range cs {
		terms[i] = ast.NewTerm(ast.NewObject(
			str("id", c.ID),
			str("status", c.Status),
			str("scope", c.Scope),
			str("decision", c.Decision),
			str("start", c.Start),
			str("end", c.End),
			strs("purposes", c.Purposes),
			strs("recipient_countries", c.RecipientCountries),
			strs("exclude_labels", c.ExcludeLabels),
			strs("uninterpreted", c.Uninterpreted),
		))
	}
	return ast.ArrayTerm(terms...)
}

func str(k, v string) [2]*ast.Term {
	return ast.Item(ast.InternedTerm(k), ast.StringTerm(v))
}

func strs(k string, vs []string) [2]*ast.Term {
	terms := make([]*ast.Term, len(vs))
	for i, v := range vs {
		terms[i] = ast.StringTerm(v)
	}
	return ast.Item(ast.InternedTerm(k), ast.ArrayTerm(terms...))
}
