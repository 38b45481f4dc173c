package fhir

import (
	"errors"
	"fmt"
	"reflect"
	"regexp"
	"slices"
	"strings"

	"github.com/google/fhir/go/fhirversion"
	"github.com/google/fhir/go/jsonformat"
	r4pb "github.com/google/fhir/go/proto/google/fhir/proto/r4/core/resources/bundle_and_contained_resource_go_proto"
	"google.golang.org/protobuf/proto"
)

// MaxNestingDepth bounds how deep a resource's elements may nest; deeper
// input is refused rather than recursed into.
const MaxNestingDepth = 64

// Parser checks FHIR R4 JSON resources with github.com/google/fhir's R4
// unmarshaller and its validation (cardinality of required elements,
// primitive formats, reference target types), plus the JSON rules that
// unmarshaller lets through (no empty arrays, objects or strings; see
// checkElements) and the Bundle invariants bdl-7 and absolute fullUrls.
// It is safe for concurrent use.
type Parser struct {
	u *jsonformat.Unmarshaller
}

// NewParser returns a Parser for FHIR R4.
func NewParser() (*Parser, error) {
	u, err := jsonformat.NewUnmarshaller("UTC", fhirversion.R4)
	if err != nil {
		return nil, fmt.Errorf("fhir: R4 unmarshaller: %w", err)
	}
	u.MaxNestingDepth = MaxNestingDepth
	return &Parser{u: u}, nil
}

// Resource is a parsed, valid resource, ready to be stored. It is not safe
// for concurrent use.
type Resource struct {
	// Type is the resourceType.
	Type string
	// ID is the id the resource carries, or "".
	ID string
	// Warnings are issues that did not make the resource invalid (a
	// reference to a resource type the element does not allow).
	Warnings []Issue

	tree object
	// refs are the places that hold a Reference.reference, with the value
	// as received, so that a retried transaction rewrites from scratch.
	refs []refSite
}

// refSite is one Reference.reference in a tree.
type refSite struct {
	obj  object
	orig string
}

var idPattern = regexp.MustCompile(`^[A-Za-z0-9\-.]{1,64}$`)

// ValidID reports whether id is a valid FHIR id.
func ValidID(id string) bool { return idPattern.MatchString(id) }

// typePattern is what a resource type name looks like; the parser decides
// whether it is a known R4 type.
var typePattern = regexp.MustCompile(`^[A-Z][A-Za-z]{1,63}$`)

// Parse checks one resource (JSON) and returns it parsed. Invalid input
// gives an *Error wrapping ErrMalformed (not a JSON object) or ErrInvalid
// (not a valid R4 resource), whose issues carry element paths.
func (p *Parser) Parse(raw []byte) (*Resource, error) {
	v, err := decodeTree(raw)
	if err != nil {
		return nil, err
	}
	obj, ok := v.(object)
	if !ok {
		return nil, newError(ErrMalformed, CodeStructure, "", "a resource must be a JSON object")
	}
	return p.parseTree(raw, obj)
}

// parseTree validates raw, whose tree is obj.
func (p *Parser) parseTree(raw []byte, obj object) (*Resource, error) {
	typ, _ := obj["resourceType"].(string)
	if !typePattern.MatchString(typ) {
		return nil, newError(ErrInvalid, CodeRequired, "", "resourceType is missing or not a resource type name")
	}
	var issues []Issue
	checkElements(obj, typ, &issues)
	slices.SortStableFunc(issues, func(a, b Issue) int { return strings.Compare(a.Expression, b.Expression) })
	if typ == "Bundle" {
		checkBundleInvariants(obj, &issues)
	}
	er := &reporter{}
	_, perr := p.u.UnmarshalWithErrorReporter(raw, er)
	if perr != nil {
		issues = append(issues, googleIssues(perr, SeverityError)...)
	}
	issues = append(issues, er.issues...)
	res := &Resource{Type: typ, tree: obj}
	for _, is := range issues {
		if is.Severity == SeverityError || is.Severity == SeverityFatal {
			return nil, &Error{Kind: ErrInvalid, Entry: -1, Issues: issues}
		}
	}
	res.Warnings = issues
	if id, ok := obj["id"].(string); ok {
		res.ID = id
	}
	res.collectRefs()
	return res, nil
}

// collectRefs records every Reference.reference of the tree.
func (r *Resource) collectRefs() {
	var walk func(v any)
	walk = func(v any) {
		switch t := v.(type) {
		case object:
			for k, c := range t {
				if k == "reference" {
					if s, ok := c.(string); ok {
						r.refs = append(r.refs, refSite{obj: t, orig: s})
						continue
					}
				}
				if k == "div" {
					continue
				}
				walk(c)
			}
		case []any:
			for _, e := range t {
				walk(e)
			}
		}
	}
	walk(r.tree)
}

// reporter collects the validation findings of github.com/google/fhir.
// A reference to a resource type the element does not allow is a warning,
// not an error: HL7's own R4 examples contain such references
// (medicationrequest0301.json points dispenseRequest.performer at a
// Practitioner), and refusing what the specification publishes as an
// example would refuse real integration engines' output too.
type reporter struct{ issues []Issue }

func (r *reporter) ReportValidationError(path string, err error) error {
	sev := SeverityError
	if strings.Contains(err.Error(), "invalid reference to a") {
		sev = SeverityWarning
	}
	for _, is := range googleIssues(err, sev) {
		if is.Expression == "" {
			is.Expression = path
		}
		r.issues = append(r.issues, is)
	}
	return nil
}

func (r *reporter) ReportValidationWarning(path string, err error) error {
	for _, is := range googleIssues(err, SeverityWarning) {
		if is.Expression == "" {
			is.Expression = path
		}
		r.issues = append(r.issues, is)
	}
	return nil
}

// googleIssues converts github.com/google/fhir's unmarshal errors (a list
// of, or a single, jsonpbhelper.UnmarshalError, whose type is internal to
// that module) into issues. Their Details never hold patient data (the
// library's own contract); Diagnostics may, so they go to Diagnostics.
func googleIssues(err error, severity string) []Issue {
	rv := reflect.ValueOf(err)
	if rv.Kind() == reflect.Slice {
		var out []Issue
		for i := 0; i < rv.Len(); i++ {
			if e, ok := rv.Index(i).Interface().(error); ok {
				out = append(out, googleIssues(e, severity)...)
			}
		}
		if len(out) > 0 {
			return out
		}
	}
	if rv.Kind() == reflect.Pointer && !rv.IsNil() && rv.Elem().Kind() == reflect.Struct {
		s := rv.Elem()
		path, pok := stringField(s, "Path")
		details, dok := stringField(s, "Details")
		diag, _ := stringField(s, "Diagnostics")
		if pok && dok {
			return []Issue{{Severity: severity, Code: issueCode(details), Expression: path, Details: details, Diagnostics: diag}}
		}
	}
	if inner := errors.Unwrap(err); inner != nil {
		return googleIssues(inner, severity)
	}
	return []Issue{{Severity: severity, Code: CodeInvalid, Details: "the resource does not parse as FHIR R4", Diagnostics: err.Error()}}
}

func stringField(s reflect.Value, name string) (string, bool) {
	f := s.FieldByName(name)
	if !f.IsValid() || f.Kind() != reflect.String {
		return "", false
	}
	return f.String(), true
}

// issueCode picks the IssueType for one of github.com/google/fhir's
// details.
func issueCode(details string) string {
	switch {
	case strings.HasPrefix(details, "missing required field"):
		return CodeRequired
	case details == "unknown field", details == "invalid JSON", details == "expected array", details == "invalid field":
		return CodeStructure
	case strings.HasPrefix(details, "unknown resource type"):
		return CodeNotSupported
	default:
		return CodeValue
	}
}

// checkBundleInvariants checks what a Bundle's entries must satisfy beyond
// their own validity: fullUrl is absolute (a URL with a scheme, urn:uuid
// or urn:oid), and no two entries share a fullUrl (bdl-7, ignoring the
// history exception: those Bundles are the server's own output). Entry
// resources that share type and id are refused as well: they would be the
// same resource twice.
func checkBundleInvariants(b object, issues *[]Issue) {
	entries, _ := b["entry"].([]any)
	seenURL := map[string]int{}
	seenID := map[string]int{}
	for i, e := range entries {
		eo, ok := e.(object)
		if !ok {
			continue
		}
		path := fmt.Sprintf("Bundle.entry[%d]", i)
		if u, ok := eo["fullUrl"].(string); ok {
			if !absoluteURL(u) {
				*issues = append(*issues, Issue{Severity: SeverityError, Code: CodeValue, Expression: path + ".fullUrl",
					Details: "fullUrl must be an absolute URL, urn:uuid or urn:oid", Diagnostics: fmt.Sprintf("fullUrl %q", u)})
			} else if j, dup := seenURL[u]; dup {
				*issues = append(*issues, Issue{Severity: SeverityError, Code: CodeDuplicate, Expression: path + ".fullUrl",
					Details: fmt.Sprintf("fullUrl repeats entry %d's (bdl-7)", j)})
			} else {
				seenURL[u] = i
			}
		}
		res, _ := eo["resource"].(object)
		typ, _ := res["resourceType"].(string)
		id, _ := res["id"].(string)
		if typ != "" && id != "" {
			k := typ + "/" + id
			if j, dup := seenID[k]; dup {
				*issues = append(*issues, Issue{Severity: SeverityError, Code: CodeDuplicate, Expression: path + ".resource.id",
					Details: fmt.Sprintf("the same resource as entry %d", j)})
			} else {
				seenID[k] = i
			}
		}
	}
}

// absoluteURL reports whether u is a URL with a scheme (http:, https:,
// urn:uuid:, urn:oid:, ...).
func absoluteURL(u string) bool {
	i := strings.IndexByte(u, ':')
	if i <= 0 {
		return false
	}
	for j := 0; j < i; j++ {
		c := u[j]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || j > 0 && (c >= '0' && c <= '9' || c == '+' || c == '-' || c == '.')) {
			return false
		}
	}
	return len(u) > i+1
}

// Equal reports whether two JSON resources hold the same FHIR content:
// whether they are equal once parsed into github.com/google/fhir's R4
// protos, so that key order, whitespace and the forms the parser
// normalises do not matter. Validation findings are ignored; input that
// does not parse is an error.
func (p *Parser) Equal(a, b []byte) (bool, error) {
	pa, err := p.u.UnmarshalWithErrorReporter(a, &reporter{})
	if err != nil {
		return false, fmt.Errorf("fhir: first resource: %w", err)
	}
	pb, err := p.u.UnmarshalWithErrorReporter(b, &reporter{})
	if err != nil {
		return false, fmt.Errorf("fhir: second resource: %w", err)
	}
	return proto.Equal(pa, pb), nil
}

// ResourceTypes returns the names of every R4 resource type the parser
// knows, sorted.
func ResourceTypes() []string {
	oneof := (&r4pb.ContainedResource{}).ProtoReflect().Descriptor().Oneofs().ByName("oneof_resource")
	var out []string
	for i := 0; i < oneof.Fields().Len(); i++ {
		if m := oneof.Fields().Get(i).Message(); m != nil {
			out = append(out, string(m.Name()))
		}
	}
	slices.Sort(out)
	return out
}

// knownTypes is the set of ResourceTypes (read-only after init).
var knownTypes = func() map[string]bool {
	m := map[string]bool{}
	for _, t := range ResourceTypes() {
		m[t] = true
	}
	return m
}()

// KnownType reports whether typ is an R4 resource type.
func KnownType(typ string) bool { return knownTypes[typ] }
