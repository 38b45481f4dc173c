package fhir

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/big"
	"slices"
	"strings"
	"time"

	"github.com/consilium/consilium/deid"
)

// Errors returned by [Deidentifier.Deidentify] and
// [Deidentifier.DeidentifyNDJSON].
var (
	// ErrNotFHIR is returned for input that is not JSON holding FHIR
	// resources (no resourceType).
	ErrNotFHIR = errors.New("fhir: not a FHIR resource")
	// ErrNoDeidPatientKey is returned when the key function gives an empty
	// key.
	ErrNoDeidPatientKey = errors.New("fhir: no patient key")
)

// DefaultSensitiveLabels are the meta.security codes (v3-ActCode) whose
// resources are excluded: psychiatry, HIV/AIDS, ethnicity, sexuality and
// reproductive health information.
var DefaultSensitiveLabels = []string{"PSY", "HIV", "ETH", "SEX"}

// DeidPatient names a patient whose data is being de-identified, so that
// the caller can choose its patient key.
type DeidPatient struct {
	// ID is the Patient resource id (from the resource, or from a
	// reference to it when the Patient is not in the input).
	ID string
	// MRN is the value of the Patient's identifier of type MR (v2-0203),
	// when the Patient resource is in the input; else "".
	MRN string
	// FullURL is the Bundle entry's fullUrl of the Patient, if any (a
	// transaction may create a Patient that has no id yet).
	FullURL string
}

// DeidOptions configure a [Deidentifier].
type DeidOptions struct {
	// Profile is a FHIR profile from deid.ParseFHIRProfile.
	Profile deid.Profile
	// Source gives pseudonyms, date offsets and new ids and UIDs: pass the
	// one DICOM de-identification uses, so that the two agree.
	Source deid.Source
	// PatientKey chooses the patient key (see package deid). Required.
	// The CLI uses the MRN, else the id; the gateway "<org>|<id>".
	PatientKey func(DeidPatient) (string, error)
	// SharedKey is the key under which ids of resources that belong to no
	// patient (Practitioner, Organization) are mapped. Default
	// "consilium|shared".
	SharedKey string
	// SensitiveLabels are meta.security codes, besides
	// DefaultSensitiveLabels, whose resources are excluded.
	SensitiveLabels []string
	// Now is used to tell ages of 90 and over from birth dates (default
	// time.Now).
	Now func() time.Time
}

// Deidentifier de-identifies FHIR R4 JSON. It is safe for concurrent use.
type Deidentifier struct {
	opts      DeidOptions
	sh        bool
	freeText  bool
	sensitive map[string]bool
}

// NewDeidentifier returns a Deidentifier for a FHIR profile.
func NewDeidentifier(opts DeidOptions) (*Deidentifier, error) {
	if opts.Profile.Kind != deid.FHIR {
		return nil, fmt.Errorf("fhir: %w: need a FHIR profile", deid.ErrUnknownProfile)
	}
	if opts.Source == nil || opts.PatientKey == nil {
		return nil, errors.New("fhir: de-identification needs a source and a patient key function")
	}
	if opts.SharedKey == "" {
		opts.SharedKey = "consilium|shared"
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	d := &Deidentifier{
		opts:      opts,
		sh:        opts.Profile.Name == deid.SafeHarbor,
		freeText:  opts.Profile.Has(deid.KeepFreeText) && opts.Profile.Name != deid.SafeHarbor,
		sensitive: map[string]bool{},
	}
	for _, l := range append(slices.Clone(DefaultSensitiveLabels), opts.SensitiveLabels...) {
		d.sensitive[l] = true
	}
	return d, nil
}

// Profile returns the profile the Deidentifier applies.
func (d *Deidentifier) Profile() deid.Profile { return d.opts.Profile }

// Deidentify de-identifies one resource or one Bundle (JSON) and returns
// the result (a Bundle stays a Bundle, without its excluded entries) and a
// report. An excluded single resource gives nil output. References are
// rewritten consistently within the input.
func (d *Deidentifier) Deidentify(ctx context.Context, in []byte) ([]byte, *DeidReport, error) {
	root, err := decode(in)
	if err != nil {
		return nil, nil, err
	}
	r := d.newRun()
	var res []*resource
	if root["resourceType"] == "Bundle" {
		res = r.bundleResources(root)
	} else {
		res = []*resource{{obj: root}}
	}
	if err := r.run(ctx, res); err != nil {
		return nil, nil, err
	}
	r.report.sort()
	if root["resourceType"] == "Bundle" {
		r.finishBundle(root, res)
	} else if res[0].excluded != "" {
		return nil, r.report, nil
	}
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	enc.SetIndent("", "  ")
	if err := enc.Encode(root); err != nil {
		return nil, nil, fmt.Errorf("fhir: encoding: %w", err)
	}
	return b.Bytes(), r.report, nil
}

// DeidentifyNDJSON de-identifies an NDJSON stream (one resource per line,
// as a FHIR bulk export writes them) and writes the kept resources, one
// per line. The whole input is read first, so that references between
// lines are rewritten consistently.
func (d *Deidentifier) DeidentifyNDJSON(ctx context.Context, w io.Writer, in io.Reader) (*DeidReport, error) {
	var res []*resource
	sc := bufio.NewScanner(in)
	sc.Buffer(make([]byte, 0, 1<<20), 256<<20)
	line := 0
	for sc.Scan() {
		line++
		b := bytes.TrimSpace(sc.Bytes())
		if len(b) == 0 {
			continue
		}
		obj, err := decode(b)
		if err != nil {
			return nil, fmt.Errorf("line %d: %w", line, err)
		}
		res = append(res, &resource{obj: obj})
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("fhir: reading NDJSON: %w", err)
	}
	r := d.newRun()
	if err := r.run(ctx, res); err != nil {
		return nil, err
	}
	r.report.sort()
	bw := bufio.NewWriter(w)
	enc := json.NewEncoder(bw)
	enc.SetEscapeHTML(false)
	for _, x := range res {
		if x.excluded != "" {
			continue
		}
		if err := enc.Encode(x.obj); err != nil {
			return nil, fmt.Errorf("fhir: encoding: %w", err)
		}
	}
	if err := bw.Flush(); err != nil {
		return nil, err
	}
	return r.report, nil
}

func decode(b []byte) (map[string]any, error) {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	var root map[string]any
	if err := dec.Decode(&root); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrNotFHIR, err)
	}
	if dec.More() {
		return nil, fmt.Errorf("%w: trailing data after the JSON object", ErrNotFHIR)
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, fmt.Errorf("%w: trailing data after the JSON object", ErrNotFHIR)
	}
	if t, _ := root["resourceType"].(string); t == "" {
		return nil, fmt.Errorf("%w: no resourceType", ErrNotFHIR)
	}
	return root, nil
}

// resource is one resource being de-identified.
type resource struct {
	obj      map[string]any
	typ, id  string
	fullURL  string
	entry    map[string]any // its Bundle entry, if any
	patient  *patientCtx    // whose data it is (nil: nobody's)
	excluded string         // why it is left out ("" when kept)
}

type patientCtx struct {
	key     string
	patient deid.Patient
}

// run is the state of one Deidentify call.
type run struct {
	d        *Deidentifier
	report   *DeidReport
	patients map[string]*patientCtx // by Patient id
	byRef    map[string]*resource   // "Type/id" and fullUrl → resource
	shared   *patientCtx            // the one patient of the input, if only one
	mapping  map[string]map[string]string
	collect  map[string]map[string]bool
	unknown  map[string]bool // ids of Patients referred to but not in the input
	now      time.Time
}

func (d *Deidentifier) newRun() *run {
	return &run{
		d:        d,
		report:   newDeidReport(d.opts.Profile),
		patients: map[string]*patientCtx{},
		byRef:    map[string]*resource{},
		mapping:  map[string]map[string]string{},
		now:      d.opts.Now(),
	}
}

func (r *run) bundleResources(b map[string]any) []*resource {
	var out []*resource
	entries, _ := b["entry"].([]any)
	for _, e := range entries {
		entry, ok := e.(map[string]any)
		if !ok {
			continue
		}
		obj, ok := entry["resource"].(map[string]any)
		if !ok {
			continue
		}
		url, _ := entry["fullUrl"].(string)
		out = append(out, &resource{obj: obj, entry: entry, fullURL: url})
	}
	return out
}

// run de-identifies the resources in place.
func (r *run) run(ctx context.Context, res []*resource) error {
	for _, x := range res {
		x.typ, _ = x.obj["resourceType"].(string)
		x.id, _ = x.obj["id"].(string)
		if x.typ == "" {
			return fmt.Errorf("%w: an entry without resourceType", ErrNotFHIR)
		}
		if x.id != "" {
			r.byRef[x.typ+"/"+x.id] = x
		}
		if x.fullURL != "" {
			r.byRef[x.fullURL] = x
		}
	}
	// Patients first: their keys name everything else.
	for _, x := range res {
		if x.typ != "Patient" {
			continue
		}
		pc, err := r.patientFor(ctx, DeidPatient{ID: x.id, MRN: mrnOf(x.obj), FullURL: x.fullURL})
		if err != nil {
			return err
		}
		x.patient = pc
	}
	if len(r.patients) == 1 {
		for _, pc := range r.patients {
			r.shared = pc
		}
	}
	for _, x := range res {
		if x.patient == nil {
			pc, err := r.ownerOf(ctx, x)
			if err != nil {
				return err
			}
			x.patient = pc
		}
		x.excluded = r.d.exclusion(x.obj)
		if x.excluded != "" {
			r.report.excluded(x.typ, x.excluded)
		}
	}
	// Two passes: the first learns which ids and UIDs need mapping, so
	// that the source is asked once per patient; the second rewrites.
	r.collect, r.unknown = map[string]map[string]bool{}, map[string]bool{}
	for _, x := range res {
		if x.excluded == "" {
			r.resource(x, deepCopy(x.obj).(map[string]any), nil)
		}
	}
	if err := r.resolve(ctx); err != nil {
		return err
	}
	r.collect = nil
	for _, x := range res {
		if x.excluded == "" {
			r.resource(x, x.obj, r.report)
		}
	}
	return ctx.Err()
}

// patientFor returns the context of the patient with this id, creating it.
func (r *run) patientFor(ctx context.Context, p DeidPatient) (*patientCtx, error) {
	ident := p.ID
	if ident == "" {
		ident = "fullUrl|" + p.FullURL
	}
	if pc, ok := r.patients[ident]; ok {
		return pc, nil
	}
	key, err := r.d.opts.PatientKey(p)
	if err != nil {
		return nil, fmt.Errorf("fhir: choosing the patient key: %w", err)
	}
	if key == "" {
		return nil, ErrNoDeidPatientKey
	}
	pt, err := r.d.opts.Source.Patient(ctx, key)
	if err != nil {
		return nil, fmt.Errorf("fhir: pseudonym: %w", err)
	}
	pc := &patientCtx{key: key, patient: pt}
	r.patients[ident] = pc
	return pc, nil
}

// patientRefKeys are the elements that say whose data a resource is.
var patientRefKeys = []string{"subject", "patient", "beneficiary", "individual"}

// ownerOf finds the patient a resource belongs to: the Patient its
// subject (or patient, ...) refers to; else, when the input has a single
// patient, that one; else nobody.
func (r *run) ownerOf(ctx context.Context, x *resource) (*patientCtx, error) {
	for _, k := range patientRefKeys {
		ref, _ := x.obj[k].(map[string]any)
		s, _ := ref["reference"].(string)
		if s == "" {
			continue
		}
		if t, ok := r.byRef[s]; ok && t.typ == "Patient" {
			return t.patient, nil
		}
		if typ, id, ok := splitRef(s); ok && typ == "Patient" {
			if t, ok := r.byRef["Patient/"+id]; ok {
				return t.patient, nil
			}
			return r.patientFor(ctx, DeidPatient{ID: id})
		}
	}
	return r.shared, nil
}

// mrnOf returns the value of a Patient's MR identifier.
func mrnOf(p map[string]any) string {
	ids, _ := p["identifier"].([]any)
	for _, i := range ids {
		id, _ := i.(map[string]any)
		typ, _ := id["type"].(map[string]any)
		codings, _ := typ["coding"].([]any)
		for _, c := range codings {
			cm, _ := c.(map[string]any)
			if cm["code"] == "MR" {
				v, _ := id["value"].(string)
				return v
			}
		}
	}
	return ""
}

// splitRef splits a literal reference "[base/]Type/id[/_history/v]".
func splitRef(s string) (typ, id string, ok bool) {
	if strings.HasPrefix(s, "#") || strings.HasPrefix(s, "urn:") || strings.Contains(s, "?") {
		return "", "", false
	}
	parts := strings.Split(s, "/")
	if n := len(parts); n >= 4 && parts[n-2] == "_history" {
		parts = parts[:n-2]
	}
	n := len(parts)
	if n < 2 {
		return "", "", false
	}
	typ, id = parts[n-2], parts[n-1]
	if typ == "" || id == "" || typ[0] < 'A' || typ[0] > 'Z' {
		return "", "", false
	}
	return typ, id, true
}

// exclusion says why a resource is left out, or "".
func (d *Deidentifier) exclusion(obj map[string]any) string {
	meta, _ := obj["meta"].(map[string]any)
	sec, _ := meta["security"].([]any)
	for _, s := range sec {
		c, _ := s.(map[string]any)
		if code, _ := c["code"].(string); d.sensitive[code] {
			return "sensitive label " + code
		}
	}
	typ, _ := obj["resourceType"].(string)
	if why, ok := notExported[typ]; ok {
		return why
	}
	if typ == "Location" {
		pt, _ := obj["physicalType"].(map[string]any)
		codings, _ := pt["coding"].([]any)
		for _, c := range codings {
			if cm, _ := c.(map[string]any); cm["code"] == "ho" {
				return "the patient's home"
			}
		}
	}
	if m, ok := obj["modifierExtension"].([]any); ok && len(m) > 0 {
		// Dropping a modifier extension changes what the resource means.
		return "modifier extension"
	}
	return ""
}

// notExported lists resource types never sent to a specialist
// (fhir-r4-deid-rules.md 3.15, 3.17, 3.19).
var notExported = map[string]string{
	"RelatedPerson":               "relatives and household members",
	"Person":                      "identity links",
	"Consent":                     "kept at the gateway as evidence",
	"AuditEvent":                  "kept at the gateway",
	"Claim":                       "not needed for an opinion (data minimisation)",
	"ClaimResponse":               "not needed for an opinion (data minimisation)",
	"ExplanationOfBenefit":        "not needed for an opinion (data minimisation)",
	"Coverage":                    "not needed for an opinion (data minimisation)",
	"Account":                     "not needed for an opinion (data minimisation)",
	"PaymentNotice":               "not needed for an opinion (data minimisation)",
	"PaymentReconciliation":       "not needed for an opinion (data minimisation)",
	"CoverageEligibilityRequest":  "not needed for an opinion (data minimisation)",
	"CoverageEligibilityResponse": "not needed for an opinion (data minimisation)",
}

// resolve asks the source for every id and UID the collect pass found,
// one call per patient key.
func (r *run) resolve(ctx context.Context) error {
	for id := range r.unknown {
		if _, err := r.patientFor(ctx, DeidPatient{ID: id}); err != nil {
			return err
		}
	}
	keys := make([]string, 0, len(r.collect))
	for k := range r.collect {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		origs := make([]string, 0, len(r.collect[k]))
		for o := range r.collect[k] {
			origs = append(origs, o)
		}
		slices.Sort(origs)
		news, err := r.d.opts.Source.UIDs(ctx, k, origs)
		if err != nil {
			return fmt.Errorf("fhir: new ids: %w", err)
		}
		m := map[string]string{}
		for i, o := range origs {
			m[o] = news[i]
		}
		r.mapping[k] = m
	}
	return nil
}

// mapped returns the new value for an original under a key ("" while
// collecting).
func (r *run) mapped(key, orig string) string {
	if r.collect != nil {
		if r.collect[key] == nil {
			r.collect[key] = map[string]bool{}
		}
		r.collect[key][orig] = true
		return ""
	}
	return r.mapping[key][orig]
}

func (r *run) keyOf(pc *patientCtx) string {
	if pc == nil {
		return r.d.opts.SharedKey
	}
	return pc.key
}

// newID is the pseudonymous id of a resource: the patient's pseudonym for
// a Patient, else a UUID made from the id's mapping. t is the resource
// when it is in the input; owner is whose data refers to it.
func (r *run) newID(t *resource, typ, id string, owner *patientCtx) string {
	if typ == "Patient" {
		if t != nil && t.patient != nil {
			return t.patient.patient.Pseudonym
		}
		if pc, ok := r.patients[id]; ok && id != "" {
			return pc.patient.Pseudonym
		}
		if r.collect != nil {
			r.unknown[id] = true
		}
		return ""
	}
	pc := owner
	if t != nil {
		pc = t.patient
		if id == "" {
			id = t.fullURL
		}
	}
	return uuidOf(r.mapped(r.keyOf(pc), "fhir:"+typ+"/"+id))
}

// uuidOf formats a "2.25.<decimal>" UID, or 32 hex digits, as a UUID.
func uuidOf(u string) string {
	var hex string
	if n, ok := new(big.Int).SetString(strings.TrimPrefix(u, "2.25."), 10); ok && strings.HasPrefix(u, "2.25.") {
		hex = fmt.Sprintf("%032x", n)
	} else if len(u) == 32 {
		hex = u
	} else {
		return ""
	}
	return hex[:8] + "-" + hex[8:12] + "-" + hex[12:16] + "-" + hex[16:20] + "-" + hex[20:]
}

// finishBundle removes excluded entries and rewrites the Bundle's own
// elements.
func (r *run) finishBundle(b map[string]any, res []*resource) {
	var kept []any
	for _, x := range res {
		if x.excluded != "" {
			continue
		}
		e := x.entry
		if x.fullURL != "" {
			e["fullUrl"] = "urn:uuid:" + uuidString(r.newID(x, x.typ, x.id, x.patient))
		}
		if req, ok := e["request"].(map[string]any); ok {
			r.request(req, x)
		}
		delete(e, "response")
		delete(e, "link")
		delete(e, "search")
		kept = append(kept, e)
	}
	if len(kept) > 0 {
		b["entry"] = kept
	} else {
		delete(b, "entry")
	}
	delete(b, "link")
	delete(b, "signature")
	delete(b, "identifier")
	delete(b, "text")
	if id, ok := b["id"].(string); ok && id != "" {
		b["id"] = uuidOf(r.mapped(r.keyOf(r.shared), "fhir:Bundle/"+id))
		if b["id"] == "" {
			delete(b, "id")
		}
	}
	if ts, ok := b["timestamp"].(string); ok {
		if v, ok := r.date(ts, r.shared); ok {
			b["timestamp"] = v
		} else {
			delete(b, "timestamp")
		}
	}
	delete(b, "meta")
}

// uuidString makes an id usable after "urn:uuid:": ids from this package
// already are UUIDs or 32-hex pseudonyms.
func uuidString(id string) string {
	if len(id) == 32 {
		return uuidOf(id)
	}
	return id
}

// request rewrites Bundle.entry.request: the URL keeps only the resource
// type and the pseudonymous id; conditional queries (which hold
// identifiers) go.
func (r *run) request(req map[string]any, x *resource) {
	delete(req, "ifNoneExist")
	delete(req, "ifMatch")
	delete(req, "ifNoneMatch")
	delete(req, "ifModifiedSince")
	url, _ := req["url"].(string)
	switch {
	case url == x.typ:
	case strings.HasPrefix(url, x.typ+"/") || strings.HasPrefix(url, x.typ+"?"):
		if id, _ := x.obj["id"].(string); id != "" {
			req["url"] = x.typ + "/" + id
		} else {
			req["url"] = x.typ
		}
	default:
		req["url"] = x.typ
	}
}
