package fhir

import (
	"slices"
	"strings"
)

// Patient linkage: a resource belongs to the patient it is about. The
// Patient resource belongs to itself; any other resource to the Patient
// its subject, patient or beneficiary element references (looked at in
// that order, after references have been rewritten to local ids).
// Resources that reference no patient (Practitioner, Organization, a
// Bundle stored as a document) belong to none.
var patientElements = []string{"subject", "patient", "beneficiary"}

// patientOf returns the id of the Patient r is linked to, given the id r
// is stored under, or "".
func (r *Resource) patientOf(id string) string {
	if r.Type == "Patient" {
		return id
	}
	for _, k := range patientElements {
		ref, ok := r.tree[k].(object)
		if !ok {
			continue
		}
		s, _ := ref["reference"].(string)
		if t, pid, ok := localRef(s); ok && t == "Patient" {
			return pid
		}
	}
	return ""
}

// localRef splits a relative literal reference "Type/id" or
// "Type/id/_history/n".
func localRef(ref string) (typ, id string, ok bool) {
	typ, rest, ok := strings.Cut(ref, "/")
	if !ok || !typePattern.MatchString(typ) {
		return "", "", false
	}
	id, hist, _ := strings.Cut(rest, "/")
	if !ValidID(id) {
		return "", "", false
	}
	if hist != "" && !strings.HasPrefix(hist, "_history/") {
		return "", "", false
	}
	return typ, id, true
}

// labels returns the codes of meta.security, sorted and without
// duplicates.
func (r *Resource) labels() []string {
	meta, _ := r.tree["meta"].(object)
	sec, _ := meta["security"].([]any)
	var out []string
	for _, c := range sec {
		if co, ok := c.(object); ok {
			if code, ok := co["code"].(string); ok && code != "" {
				out = append(out, code)
			}
		}
	}
	slices.Sort(out)
	return slices.Compact(out)
}

// identifiers returns the resource's identifiers as index keys: "system|value"
// for every identifier with a value (system empty when absent).
func (r *Resource) identifiers() []string {
	var out []string
	add := func(v any) {
		io, ok := v.(object)
		if !ok {
			return
		}
		val, _ := io["value"].(string)
		if val == "" {
			return
		}
		sys, _ := io["system"].(string)
		out = append(out, sys+"|"+val)
	}
	switch t := r.tree["identifier"].(type) {
	case []any:
		for _, v := range t {
			add(v)
		}
	case object: // a few resources have a single identifier
		add(t)
	}
	slices.Sort(out)
	return slices.Compact(out)
}

// localRefs returns the relative references "Type/id" the resource makes,
// sorted and without duplicates, leaving out its own patient.
func (r *Resource) localRefs(patient string) []string {
	var out []string
	for _, s := range r.refs {
		ref, _ := s.obj["reference"].(string)
		t, id, ok := localRef(ref)
		if !ok || t == "Patient" && id == patient {
			continue
		}
		out = append(out, t+"/"+id)
	}
	slices.Sort(out)
	return slices.Compact(out)
}
