package fhir

import (
	"encoding/json"
	"fmt"
	"math/big"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// How the rules of fhir-r4-deid-rules.md are applied. FHIR JSON does not
// say which datatype an element has, so rules for datatypes (section 2)
// apply by element name and shape: a "name" array of objects with family
// or given parts is a HumanName, an object with "reference" a Reference,
// a string in a date-typed element that parses as a FHIR date a date, and
// so on. Section 3's per-resource rows that datatypes do not cover are the
// tables below. Elements no rule names pass through (see the report:
// default-deny of unknown elements is not implemented; extensions are
// dropped, as are all free-text elements).

// Actions recorded in the report.
const (
	actDrop      = "drop"
	actPseudo    = "pseudonymize"
	actShift     = "shift"
	actYear      = "year"
	actZIP3      = "zip3"
	actAge90     = "age90"
	actReference = "reference"
	actRemap     = "remap-uid"
	actLabel     = "generic-label"
)

// pseudonymSystem is the identifier system of pseudonyms, so that nobody
// takes one for a real MRN.
const pseudonymSystem = "urn:consilium:pseudonym"

// dropAlways lists, per resource type, elements removed under both
// profiles (dotted paths from the resource).
var dropAlways = map[string][]string{
	"Patient":           {"photo", "contact", "telecom", "name", "link.other.display"},
	"Practitioner":      {"identifier", "name", "telecom", "address", "photo", "gender", "birthDate", "qualification.identifier", "qualification.issuer", "qualification.period"},
	"PractitionerRole":  {"telecom", "identifier"},
	"Organization":      {"telecom", "contact", "partOf", "endpoint", "alias"},
	"Encounter":         {"account", "hospitalization.preAdmissionIdentifier", "hospitalization.origin", "hospitalization.destination"},
	"Immunization":      {"lotNumber"},
	"Device":            {"identifier", "serialNumber", "distinctIdentifier", "lotNumber", "udiCarrier", "contact", "url"},
	"DiagnosticReport":  {"presentedForm"},
	"ImagingStudy":      {"endpoint", "series.endpoint"},
	"MedicationRequest": {"insurance"},
	"Location":          {"name", "alias", "description", "telecom", "position", "availabilityExceptions", "endpoint"},
	"Provenance":        {"signature", "policy"},
	"Endpoint":          {"address", "contact", "header"},
	"Binary":            {"data"},
}

// dropSafeHarbor and dropShifted list what only one profile removes.
var (
	dropSafeHarbor = map[string][]string{
		"Patient":      {"multipleBirthInteger"},
		"Organization": {"identifier", "name"},
		"Encounter":    {"hospitalization.specialCourtesy"},
		"Device":       {"deviceName"},
		"Location":     {"managingOrganization", "partOf"},
	}
	dropShifted = map[string][]string{
		"Patient": {"maritalStatus"},
	}
)

// identifierKeys are elements of type Identifier.
var identifierKeys = map[string]bool{
	"identifier": true, "masterIdentifier": true, "accessionIdentifier": true,
	"preAdmissionIdentifier": true, "groupIdentifier": true,
}

// freeTextKeys are string elements that hold prose (SCRUB: dropped,
// unless keep-free-text under the shifted profile).
var freeTextKeys = map[string]bool{
	"text": true, "description": true, "comment": true, "conclusion": true, "patientInstruction": true,
	"valueString": true, "valueMarkdown": true, "onsetString": true, "abatementString": true, "performedString": true,
	"occurrenceString": true, "title": true, "availabilityExceptions": true, "disposition": true, "summary": true,
	"authorString": true, "answerString": true,
}

// dateKeys are elements whose type is date, dateTime or instant; a value
// is treated as a date only when it also parses as one.
var dateKeys = map[string]bool{
	"birthDate": true, "date": true, "issued": true, "recorded": true, "recordedDate": true, "authoredOn": true,
	"lastUpdated": true, "timestamp": true, "created": true, "start": true, "end": true, "started": true,
	"lastOccurrence": true, "dateAsserted": true, "receivedTime": true, "sent": true, "received": true,
	"event": true, "creation": true, "time": true, "when": true, "whenHandedOver": true, "whenPrepared": true,
	"dateWritten": true, "presentationDate": true, "publicationDate": true, "expirationDate": true,
	"manufactureDate": true, "birthDateTime": true, "collectedDateTime": true, "occurred": true,
}

// productDateKeys are dates of products, not of the patient: cut to the
// year under both profiles.
var productDateKeys = map[string]bool{"expirationDate": true, "manufactureDate": true, "publicationDate": true}

var fhirDate = regexp.MustCompile(`^(\d{4})(-(\d{2})(-(\d{2})(T\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:\d{2})?)?)?)?$`)

// isInstant reports whether an element is of type instant (which must
// have a time and zone).
func isInstant(path, key string) bool {
	switch key {
	case "issued", "lastUpdated", "timestamp", "recorded":
		return true
	}
	return strings.HasSuffix(key, "Instant") || path == "DocumentReference.date" ||
		path == "Appointment.start" || path == "Appointment.end" || path == "Slot.start" || path == "Slot.end"
}

// isDateKey reports whether key is date-typed (including choice types
// such as effectiveDateTime, valueInstant).
func isDateKey(key string) bool {
	return dateKeys[key] || strings.HasSuffix(key, "DateTime") || strings.HasSuffix(key, "Instant") ||
		strings.HasSuffix(key, "Date") || key == "valueDate"
}

// walker de-identifies one top-level resource.
type walker struct {
	r       *run
	x       *resource
	rep     *DeidReport // nil in the collect pass
	changed bool
}

func (w *walker) note(path, action string) {
	if action == actDrop {
		w.changed = true
	}
	if w.rep != nil {
		w.rep.change(path, action)
	}
}

// resource de-identifies the resource x (obj is x.obj, or a copy of it in
// the collect pass).
func (r *run) resource(x *resource, obj map[string]any, rep *DeidReport) {
	w := &walker{r: r, x: x, rep: rep}
	w.res(obj, x.typ, true)
	if rep != nil {
		rep.Resources++
	}
}

func (w *walker) res(obj map[string]any, typ string, top bool) {
	sh := w.r.d.sh
	for _, p := range dropAlways[typ] {
		w.dropPath(obj, typ, p)
	}
	extra := dropShifted
	if sh {
		extra = dropSafeHarbor
	}
	for _, p := range extra[typ] {
		w.dropPath(obj, typ, p)
	}
	if top {
		if id, ok := obj["id"].(string); ok && id != "" {
			obj["id"] = w.r.newID(w.x, typ, id, w.x.patient)
			w.note(typ+".id", actPseudo)
		}
	}
	switch typ {
	case "Patient":
		// One pseudonymous identifier, the DICOM Patient ID's value.
		if pc := w.x.patient; top && pc != nil {
			obj["identifier"] = []any{map[string]any{"use": "usual", "system": pseudonymSystem, "value": pc.patient.Pseudonym}}
			w.note("Patient.identifier", actPseudo)
		}
		if bd, ok := obj["birthDate"].(string); ok && sh && w.age90(bd) {
			delete(obj, "birthDate")
			w.note("Patient.birthDate", actDrop)
		}
	case "Organization":
		if name, ok := obj["name"].(string); ok && name != "" {
			obj["name"] = typeLabel(obj)
			w.note("Organization.name", actLabel)
		}
	case "ImagingStudy":
		w.imagingStudy(obj)
	}
	if c, ok := obj["contained"].([]any); ok {
		for _, item := range c {
			if cm, ok := item.(map[string]any); ok {
				ct, _ := cm["resourceType"].(string)
				w.res(cm, ct, false)
			}
		}
	}
	for k, v := range obj {
		switch k {
		case "resourceType", "id", "contained":
			continue
		case "meta":
			w.meta(obj, typ)
			continue
		}
		if k == "identifier" && typ == "Patient" && top {
			continue
		}
		nv, keep := w.elem(typ+"."+k, k, v, obj)
		if keep {
			obj[k] = nv
		} else {
			delete(obj, k)
		}
	}
	if top {
		w.label(obj)
	}
}

// dropPath removes a dotted path, through arrays.
func (w *walker) dropPath(obj map[string]any, typ, path string) {
	key, rest, more := strings.Cut(path, ".")
	v, ok := obj[key]
	if !ok {
		return
	}
	if !more {
		delete(obj, key)
		w.note(typ+"."+key, actDrop)
		return
	}
	switch v := v.(type) {
	case map[string]any:
		w.dropPath(v, typ+"."+key, rest)
	case []any:
		for _, it := range v {
			if m, ok := it.(map[string]any); ok {
				w.dropPath(m, typ+"."+key, rest)
			}
		}
	}
}

// elem de-identifies one element (key in its parent) and says whether to
// keep it.
func (w *walker) elem(path, key string, v any, parent map[string]any) (any, bool) {
	switch {
	case strings.HasPrefix(key, "_"):
		// Extensions and ids of primitive values.
		w.note(path, actDrop)
		return nil, false
	case key == "extension" || key == "modifierExtension":
		if kept := w.keptExtensions(path, v); kept != nil {
			return kept, true
		}
		w.note(path, actDrop)
		return nil, false
	case key == "telecom" || key == "photo" || key == "signature":
		w.note(path, actDrop)
		return nil, false
	case identifierKeys[key]:
		return w.identifiers(path, v)
	case key == "address":
		return w.each(path, v, w.address)
	case key == "note":
		if w.r.d.freeText {
			return w.each(path, v, w.annotation)
		}
		w.note(path, actDrop)
		return nil, false
	}
	switch v := v.(type) {
	case string:
		return w.str(path, key, v)
	case []any:
		out := v[:0]
		for _, it := range v {
			if s, ok := it.(string); ok {
				if nv, keep := w.str(path, key, s); keep {
					out = append(out, nv)
				}
				continue
			}
			if nv, keep := w.object(path, key, it); keep {
				out = append(out, nv)
			}
		}
		if len(out) == 0 {
			return nil, false
		}
		return out, true
	case map[string]any:
		return w.object(path, key, v)
	}
	return v, true
}

// object de-identifies an object-valued element (or array item).
func (w *walker) object(path, key string, v any) (any, bool) {
	m, ok := v.(map[string]any)
	if !ok {
		return v, true
	}
	switch {
	case isHumanName(m):
		w.note(path, actDrop)
		return nil, false
	case isNarrative(key, m):
		w.note(path, actDrop)
		return nil, false
	case isReference(m):
		return w.reference(path, m)
	case isAttachment(m):
		return w.attachment(path, m)
	case strings.HasSuffix(key, "Age") || key == "age":
		w.age(path, m)
	}
	for k, cv := range m {
		nv, keep := w.elem(path+"."+k, k, cv, m)
		if keep {
			m[k] = nv
		} else {
			delete(m, k)
		}
	}
	if len(m) == 0 {
		return nil, false
	}
	return m, true
}

// str de-identifies a string element.
func (w *walker) str(path, key, s string) (any, bool) {
	switch {
	case freeTextKeys[key]:
		if w.r.d.freeText && !w.r.d.sh {
			return s, true
		}
		w.note(path, actDrop)
		return nil, false
	case isDateKey(key) && fhirDate.MatchString(s):
		if productDateKeys[key] {
			w.note(path, actYear)
			return s[:4], true
		}
		if w.r.d.sh && isInstant(path, key) {
			// An instant cannot hold only a year.
			if path == "Provenance.recorded" { // mandatory
				w.note(path, actYear)
				return s[:4] + "-01-01T00:00:00Z", true
			}
			w.note(path, actDrop)
			return nil, false
		}
		v, ok := w.r.date(s, w.x.patient)
		if !ok {
			w.note(path, actDrop)
			return nil, false
		}
		if w.r.d.sh || w.x.patient == nil || len(s) < 10 {
			w.note(path, actYear)
		} else {
			w.note(path, actShift)
		}
		return v, true
	}
	return s, true
}

// date applies the profile to a FHIR date, dateTime or instant: the
// year under safe-harbor (and for partial dates, and dates of no known
// patient); else shifted by the patient's offset, time and zone kept.
func (r *run) date(s string, pc *patientCtx) (string, bool) {
	m := fhirDate.FindStringSubmatch(s)
	if m == nil {
		return "", false
	}
	if r.d.sh || pc == nil || m[5] == "" {
		return m[1], true
	}
	t, err := time.Parse("2006-01-02", s[:10])
	if err != nil {
		return "", false
	}
	return t.AddDate(0, 0, pc.patient.OffsetDays).Format("2006-01-02") + s[10:], true
}

// age90 reports whether a birth date makes the patient 90 or older now.
func (w *walker) age90(birth string) bool {
	y, err := strconv.Atoi(birth[:min(4, len(birth))])
	if err != nil {
		return false
	}
	return w.r.now.Year()-y-1 >= 90
}

// age groups an Age of 90 years or more as ">= 90" (AGE90).
func (w *walker) age(path string, m map[string]any) {
	unit, _ := m["code"].(string)
	if unit == "" {
		unit, _ = m["unit"].(string)
	}
	if u := strings.ToLower(unit); u != "a" && !strings.HasPrefix(u, "y") {
		return
	}
	n, ok := m["value"].(json.Number)
	if !ok {
		return
	}
	f, err := n.Float64()
	if err != nil || f < 90 {
		return
	}
	m["value"] = json.Number("90")
	m["comparator"] = ">="
	w.note(path, actAge90)
}

// keptExtensions returns the extensions the profile keeps (only US Core
// birth sex on a Patient, under the shifted profile), or nil.
func (w *walker) keptExtensions(path string, v any) any {
	if w.r.d.sh || path != "Patient.extension" {
		return nil
	}
	exts, _ := v.([]any)
	var out []any
	for _, e := range exts {
		m, _ := e.(map[string]any)
		if m["url"] == "http://hl7.org/fhir/us/core/StructureDefinition/us-core-birthsex" {
			out = append(out, m)
		}
	}
	if len(out) == 0 {
		return nil
	}
	if len(out) < len(exts) {
		w.note(path, actDrop)
	}
	return out
}

// identifiers applies the Identifier rule: safe-harbor drops them;
// shifted replaces the value with a pseudonym in the gateway's namespace.
// DICOM UIDs (urn:dicom:uid) are remapped as DICOM de-identification
// remaps them, under both profiles.
func (w *walker) identifiers(path string, v any) (any, bool) {
	return w.each(path, v, func(p string, m map[string]any) (map[string]any, bool) {
		sys, _ := m["system"].(string)
		val, _ := m["value"].(string)
		if sys == "urn:dicom:uid" && strings.HasPrefix(val, "urn:oid:") {
			out := map[string]any{"system": sys, "value": "urn:oid:" + w.uid(strings.TrimPrefix(val, "urn:oid:"))}
			if u, ok := m["use"]; ok {
				out["use"] = u
			}
			w.note(p, actRemap)
			return out, true
		}
		if w.r.d.sh || val == "" {
			w.note(p, actDrop)
			return nil, false
		}
		out := map[string]any{"system": pseudonymSystem, "value": hexOf(w.r.mapped(w.r.keyOf(w.x.patient), "fhir-identifier:"+sys+"|"+val))}
		if u, ok := m["use"]; ok {
			out["use"] = u
		}
		if t, ok := m["type"].(map[string]any); ok {
			if c, ok := t["coding"]; ok {
				out["type"] = map[string]any{"coding": c}
			}
		}
		w.note(p, actPseudo)
		return out, true
	})
}

// uid maps a DICOM UID through the same source as DICOM
// de-identification.
func (w *walker) uid(u string) string {
	return w.r.mapped(w.r.keyOf(w.x.patient), u)
}

// hexOf turns a "2.25.<decimal>" UID into 32 hex digits.
func hexOf(u string) string {
	n, ok := new(big.Int).SetString(strings.TrimPrefix(u, "2.25."), 10)
	if !ok {
		return ""
	}
	return fmt.Sprintf("%032x", n)
}

// imagingStudy remaps the series and instance UIDs.
func (w *walker) imagingStudy(obj map[string]any) {
	series, _ := obj["series"].([]any)
	for _, s := range series {
		sm, _ := s.(map[string]any)
		if u, ok := sm["uid"].(string); ok {
			sm["uid"] = w.uid(u)
			w.note("ImagingStudy.series.uid", actRemap)
		}
		insts, _ := sm["instance"].([]any)
		for _, i := range insts {
			im, _ := i.(map[string]any)
			if u, ok := im["uid"].(string); ok {
				im["uid"] = w.uid(u)
				w.note("ImagingStudy.series.instance.uid", actRemap)
			}
		}
	}
}

// each applies fn to an object or to every object of an array.
func (w *walker) each(path string, v any, fn func(string, map[string]any) (map[string]any, bool)) (any, bool) {
	switch v := v.(type) {
	case map[string]any:
		return fn(path, v)
	case []any:
		var out []any
		for _, it := range v {
			m, ok := it.(map[string]any)
			if !ok {
				continue
			}
			if nm, keep := fn(path, m); keep {
				out = append(out, nm)
			}
		}
		if len(out) == 0 {
			return nil, false
		}
		return out, true
	}
	w.note(path, actDrop)
	return nil, false
}

// restrictedZIP3 are the 3-digit ZIP areas of 20,000 people or fewer
// that Safe Harbor writes as "000" (the list shipped with Microsoft's R4
// sample configuration; check it against current Census data).
var restrictedZIP3 = map[string]bool{"036": true, "059": true, "102": true, "203": true, "205": true, "369": true,
	"556": true, "692": true, "821": true, "823": true, "878": true, "879": true, "884": true, "893": true}

// address keeps state and country (and, under safe-harbor, a US ZIP3).
func (w *walker) address(path string, m map[string]any) (map[string]any, bool) {
	out := map[string]any{}
	for _, k := range []string{"use", "type", "state", "country"} {
		if v, ok := m[k]; ok {
			out[k] = v
		}
	}
	if p, ok := m["period"].(map[string]any); ok {
		if nv, keep := w.object(path+".period", "period", p); keep {
			out["period"] = nv
		}
	}
	if zip, ok := m["postalCode"].(string); ok {
		country, _ := m["country"].(string)
		// Safe Harbor's ZIP rule is for US addresses; a code of unknown
		// country is dropped.
		us := strings.EqualFold(country, "US") || strings.EqualFold(country, "USA") || strings.EqualFold(country, "United States")
		if w.r.d.sh && us && len(zip) >= 3 && strings.Trim(zip[:3], "0123456789") == "" {
			z := zip[:3]
			if restrictedZIP3[z] {
				z = "000"
			}
			out["postalCode"] = z
			w.note(path+".postalCode", actZIP3)
		} else {
			w.note(path+".postalCode", actDrop)
		}
	}
	for _, k := range []string{"line", "city", "district", "text", "extension"} {
		if _, ok := m[k]; ok {
			w.note(path+"."+k, actDrop)
		}
	}
	if len(out) == 0 {
		return nil, false
	}
	return out, true
}

// annotation keeps the text of a note (keep-free-text), with its author
// as a reference and its time shifted.
func (w *walker) annotation(path string, m map[string]any) (map[string]any, bool) {
	out := map[string]any{}
	if t, ok := m["text"]; ok {
		out["text"] = t
	}
	if a, ok := m["authorReference"].(map[string]any); ok {
		if nv, keep := w.reference(path+".authorReference", a); keep {
			out["authorReference"] = nv
		}
	}
	if t, ok := m["time"].(string); ok {
		if nv, keep := w.str(path+".time", "time", t); keep {
			out["time"] = nv
		}
	}
	if _, ok := m["authorString"]; ok {
		w.note(path+".authorString", actDrop)
	}
	if len(out) == 0 {
		return nil, false
	}
	return out, true
}

// reference rewrites a Reference: the target's pseudonymous id, no
// display, the identifier as identifiers go. A reference to an excluded
// resource goes, so as not to reveal it.
func (w *walker) reference(path string, m map[string]any) (any, bool) {
	if _, ok := m["display"]; ok {
		delete(m, "display")
		w.note(path+".display", actDrop)
	}
	if id, ok := m["identifier"]; ok {
		if nv, keep := w.identifiers(path+".identifier", id); keep {
			m["identifier"] = nv
		} else {
			delete(m, "identifier")
		}
	}
	delete(m, "extension")
	if ref, ok := m["reference"].(string); ok {
		nr, keep := w.rewriteRef(ref)
		if keep {
			m["reference"] = nr
			w.note(path+".reference", actReference)
		} else {
			delete(m, "reference")
			w.note(path+".reference", actDrop)
		}
	}
	if _, ok := m["reference"]; !ok {
		if _, ok := m["identifier"]; !ok {
			return nil, false // nothing left to point with
		}
	}
	return m, true
}

func (w *walker) rewriteRef(ref string) (string, bool) {
	if strings.HasPrefix(ref, "#") {
		return ref, true
	}
	if t, ok := w.r.byRef[ref]; ok {
		if t.excluded != "" {
			return "", false
		}
		id := w.r.newID(t, t.typ, t.id, t.patient)
		if strings.HasPrefix(ref, "urn:uuid:") || strings.HasPrefix(ref, "urn:oid:") || t.fullURL == ref && !strings.Contains(ref, "/"+t.typ+"/") {
			return "urn:uuid:" + uuidString(id), true
		}
		return t.typ + "/" + id, true
	}
	typ, id, ok := splitRef(ref)
	if !ok {
		return "", false // conditional or logical: it could hold an identifier
	}
	if t, ok := w.r.byRef[typ+"/"+id]; ok {
		if t.excluded != "" {
			return "", false
		}
		return typ + "/" + w.r.newID(t, typ, id, t.patient), true
	}
	if _, ok := notExported[typ]; ok {
		return "", false
	}
	return typ + "/" + w.r.newID(nil, typ, id, w.x.patient), true
}

// attachment keeps only the content type, language and size.
func (w *walker) attachment(path string, m map[string]any) (any, bool) {
	out := map[string]any{}
	for _, k := range []string{"contentType", "language", "size"} {
		if v, ok := m[k]; ok {
			out[k] = v
		}
	}
	if c, ok := m["creation"].(string); ok {
		if nv, keep := w.str(path+".creation", "creation", c); keep {
			out["creation"] = nv
		}
	}
	for _, k := range []string{"data", "url", "title", "hash"} {
		if _, ok := m[k]; ok {
			w.note(path+"."+k, actDrop)
		}
	}
	if len(out) == 0 {
		// Attachment is mandatory where it appears (DocumentReference
		// content): say it was masked.
		out["extension"] = []any{dataAbsentMasked()}
	}
	return out, true
}

func dataAbsentMasked() map[string]any {
	return map[string]any{"url": "http://hl7.org/fhir/StructureDefinition/data-absent-reason", "valueCode": "masked"}
}

// meta keeps profiles, tags and security labels, shifts lastUpdated and
// drops versionId and source.
func (w *walker) meta(obj map[string]any, typ string) {
	m, ok := obj["meta"].(map[string]any)
	if !ok {
		return
	}
	for _, k := range []string{"versionId", "source", "extension"} {
		if _, ok := m[k]; ok {
			delete(m, k)
			w.note(typ+".meta."+k, actDrop)
		}
	}
	if lu, ok := m["lastUpdated"].(string); ok {
		if nv, keep := w.str(typ+".meta.lastUpdated", "lastUpdated", lu); keep {
			m["lastUpdated"] = nv
		} else {
			delete(m, "lastUpdated")
		}
	}
}

// label adds the de-identification security labels.
func (w *walker) label(obj map[string]any) {
	meta, _ := obj["meta"].(map[string]any)
	if meta == nil {
		meta = map[string]any{}
		obj["meta"] = meta
	}
	sec, _ := meta["security"].([]any)
	const sys = "http://terminology.hl7.org/CodeSystem/v3-ObservationValue"
	sec = append(sec, map[string]any{"system": sys, "code": "PSEUDED", "display": "pseudonymized"})
	if w.changed {
		sec = append(sec, map[string]any{"system": sys, "code": "REDACTED", "display": "redacted"})
	}
	meta["security"] = sec
}

// typeLabel is what an Organization's name becomes under the shifted
// profile: its type, not its name.
func typeLabel(obj map[string]any) string {
	types, _ := obj["type"].([]any)
	for _, t := range types {
		tm, _ := t.(map[string]any)
		if s, ok := tm["text"].(string); ok && s != "" {
			return s
		}
		codings, _ := tm["coding"].([]any)
		for _, c := range codings {
			cm, _ := c.(map[string]any)
			if s, ok := cm["display"].(string); ok && s != "" {
				return s
			}
		}
	}
	return "Organization"
}

func isHumanName(m map[string]any) bool {
	for _, k := range []string{"family", "given", "prefix", "suffix"} {
		if _, ok := m[k]; ok {
			return true
		}
	}
	return false
}

func isNarrative(key string, m map[string]any) bool {
	_, div := m["div"]
	return key == "text" && div
}

func isReference(m map[string]any) bool {
	if _, ok := m["reference"].(string); ok {
		return true
	}
	_, disp := m["display"]
	_, code := m["code"]
	_, sys := m["system"]
	if disp && !code && !sys {
		for k := range m {
			if k != "display" && k != "type" && k != "identifier" && k != "extension" && k != "id" {
				return false
			}
		}
		return true
	}
	return false
}

func isAttachment(m map[string]any) bool {
	_, ct := m["contentType"]
	_, data := m["data"]
	_, hash := m["hash"]
	return ct || data || hash
}

// deepCopy copies a decoded JSON tree.
func deepCopy(v any) any {
	switch v := v.(type) {
	case map[string]any:
		m := make(map[string]any, len(v))
		for k, x := range v {
			m[k] = deepCopy(x)
		}
		return m
	case []any:
		s := make([]any, len(v))
		for i, x := range v {
			s[i] = deepCopy(x)
		}
		return s
	}
	return v
}
