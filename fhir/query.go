package fhir

import (
	"net/url"
	"slices"
	"strconv"
	"strings"
)

// Search paging limits.
const (
	DefaultCount = 50
	MaxCount     = 1000
)

// Query is a search over one resource type of one organisation: every
// condition must hold; the values of one parameter are alternatives.
type Query struct {
	Type string
	// IDs are _id values.
	IDs []string
	// Identifiers are identifier tokens: "system|value", "value" (any
	// system), "|value" (no system) or "system|" (any value).
	Identifiers []string
	// Patient is the id of the Patient the resources are linked to
	// (patient=, subject=).
	Patient string
	// Count and Offset page the matches (_count, _offset).
	Count, Offset int
}

// SearchParams are the search parameters [ParseQuery] understands, for the
// CapabilityStatement.
var SearchParams = []struct{ Name, Type, Doc string }{
	{"_id", "token", "the resource id"},
	{"identifier", "token", "an identifier: system|value, value, |value or system|"},
	{"patient", "reference", "the Patient the resource is linked to (subject, patient or beneficiary; for Patient, itself): Patient/id or id"},
	{"subject", "reference", "as patient, for Patient references"},
	{"_count", "number", "page size (default 50, at most 1000)"},
	{"_offset", "number", "index of the first match of the page (the next links carry it)"},
}

// ParseQuery reads search parameters for typ. Parameters it does not
// support are refused (ErrMalformed) rather than ignored, so that a search
// never returns more than was asked for. _format is left to the caller.
func ParseQuery(typ string, v url.Values) (Query, error) {
	q := Query{Type: typ, Count: DefaultCount}
	for name, vals := range v {
		for _, val := range vals {
			if err := q.set(name, val); err != nil {
				return Query{}, err
			}
		}
	}
	return q, nil
}

// parseQueryString parses the query part of a conditional URL
// ("identifier=a|b&_id=x").
func parseQueryString(typ, raw string) (Query, error) {
	v, err := url.ParseQuery(raw)
	if err != nil {
		return Query{}, newError(ErrMalformed, CodeInvalid, "", "the search parameters are not URL-encoded correctly")
	}
	if len(v) == 0 {
		return Query{}, newError(ErrMalformed, CodeInvalid, "", "a conditional operation needs search parameters")
	}
	q, err := ParseQuery(typ, v)
	if err != nil {
		return Query{}, err
	}
	if q.Count != DefaultCount || q.Offset != 0 {
		return Query{}, newError(ErrMalformed, CodeInvalid, "", "_count and _offset do not apply to conditional operations")
	}
	q.Count = 0
	return q, nil
}

func (q *Query) set(name, val string) error {
	switch name {
	case "_format":
		return nil
	case "_id":
		for v := range strings.SplitSeq(val, ",") {
			if !ValidID(v) {
				return newError(ErrMalformed, CodeInvalid, "", "_id must be a FHIR id")
			}
			q.IDs = append(q.IDs, v)
		}
	case "identifier":
		for _, v := range splitValues(val) {
			if v == "" || v == "|" {
				return newError(ErrMalformed, CodeInvalid, "", "identifier needs a value or a system")
			}
			q.Identifiers = append(q.Identifiers, v)
		}
	case "patient", "subject":
		id := val
		if t, i, ok := strings.Cut(val, "/"); ok {
			if t != "Patient" {
				return newError(ErrMalformed, CodeInvalid, "", "%s must reference a Patient", name)
			}
			id = i
		}
		if !ValidID(id) {
			return newError(ErrMalformed, CodeInvalid, "", "%s must be Patient/id or an id", name)
		}
		if q.Patient != "" && q.Patient != id {
			return newError(ErrMalformed, CodeInvalid, "", "only one patient per search")
		}
		q.Patient = id
	case "_count":
		n, err := strconv.Atoi(val)
		if err != nil || n < 0 {
			return newError(ErrMalformed, CodeInvalid, "", "_count must be a non-negative integer")
		}
		q.Count = min(n, MaxCount)
	case "_offset":
		n, err := strconv.Atoi(val)
		if err != nil || n < 0 {
			return newError(ErrMalformed, CodeInvalid, "", "_offset must be a non-negative integer")
		}
		q.Offset = n
	default:
		return &Error{Kind: ErrMalformed, Entry: -1, Issues: []Issue{{Severity: SeverityError, Code: CodeNotSupported,
			Details:     "unsupported search parameter (supported: _id, identifier, patient, subject, _count, _offset)",
			Diagnostics: "parameter " + strconv.Quote(name)}}}
	}
	return nil
}

// splitValues splits a search parameter's alternatives at unescaped
// commas and removes the FHIR search escapes (\, \$ \| \\). An escaped
// bar stays a bar: the system/value separator is the first bar.
func splitValues(v string) []string {
	var out []string
	var b strings.Builder
	for i := 0; i < len(v); i++ {
		c := v[i]
		switch {
		case c == '\\' && i+1 < len(v):
			i++
			b.WriteByte(v[i])
		case c == ',':
			out = append(out, b.String())
			b.Reset()
		default:
			b.WriteByte(c)
		}
	}
	return append(out, b.String())
}

// match returns the ids of typ's current resources that q selects, sorted.
func (st *state) match(q Query) []string {
	var cand []string
	switch {
	case q.Patient != "":
		for key := range st.byPatient[q.Patient] {
			if t, id, _ := strings.Cut(key, "/"); t == q.Type {
				cand = append(cand, id)
			}
		}
		if q.Type == "Patient" {
			if h := st.lookup("Patient", q.Patient); h != nil && !h.current().del {
				cand = append(cand, q.Patient)
			}
		}
	case len(q.IDs) > 0:
		cand = q.IDs
	case len(q.Identifiers) > 0:
		for _, tok := range q.Identifiers {
			cand = append(cand, st.identMatches(q.Type, tok)...)
		}
	default:
		cand = ids(st.byType[q.Type])
	}
	slices.Sort(cand)
	cand = slices.Compact(cand)
	out := cand[:0:0]
	for _, id := range cand {
		h := st.lookup(q.Type, id)
		v := h.current()
		if v == nil || v.del {
			continue
		}
		if len(q.IDs) > 0 && !slices.Contains(q.IDs, id) {
			continue
		}
		if q.Patient != "" && v.patient != q.Patient {
			continue
		}
		if len(q.Identifiers) > 0 && !slices.ContainsFunc(q.Identifiers, func(tok string) bool { return tokenMatches(tok, v.idf) }) {
			continue
		}
		out = append(out, id)
	}
	return out
}

// identMatches returns candidate ids for one identifier token.
func (st *state) identMatches(typ, tok string) []string {
	sys, val, hasBar := strings.Cut(tok, "|")
	switch {
	case !hasBar: // value, any system
		_, k := identKeys(typ, "|"+tok)
		return ids(st.byIdent[k])
	case val == "": // system|, any value
		return ids(st.byType[typ]) // filtered by tokenMatches
	default:
		k, _ := identKeys(typ, sys+"|"+val)
		return ids(st.byIdent[k])
	}
}

// tokenMatches reports whether an identifier token selects one of idf.
func tokenMatches(tok string, idf []string) bool {
	sys, val, hasBar := strings.Cut(tok, "|")
	for _, sv := range idf {
		s, v, _ := strings.Cut(sv, "|")
		switch {
		case !hasBar:
			if v == tok {
				return true
			}
		case val == "":
			if s == sys {
				return true
			}
		default:
			if s == sys && v == val {
				return true
			}
		}
	}
	return false
}
