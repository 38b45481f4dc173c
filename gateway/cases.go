package gateway

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/consilium/consilium/audit"
	"github.com/consilium/consilium/cases"
	"github.com/consilium/consilium/certs"
	"github.com/consilium/consilium/dicom"
	"github.com/consilium/consilium/fhir"
	"github.com/consilium/consilium/imaging"
	"github.com/consilium/consilium/policy"
)

// The case API: hospitals open cases for their patients, case managers
// assign specialists and release, specialists pull packets (packets.go)
// and send opinions (opinions.go). Every handler asks the policy engine;
// the workflow rules (which step may follow which) are package cases'.

// Limits of a case request.
const (
	maxCaseBody     = 1 << 20
	maxQuestionLen  = 8000
	maxCaseStudies  = 64
	maxCaseTypes    = 64
	maxSpecialists  = 16
	maxCaseLanguage = 16
)

var (
	tokenRE    = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$`)
	fhirIDRE   = regexp.MustCompile(`^[A-Za-z0-9.-]{1,64}$`)
	fhirTypeRE = regexp.MustCompile(`^[A-Z][A-Za-z]{1,63}$`)
)

// caseRequest is the body of POST /cases.
type caseRequest struct {
	Patient   string     `json:"patient"`
	Question  string     `json:"question"`
	Specialty string     `json:"specialty"`
	Languages []string   `json:"languages"`
	Studies   []string   `json:"studies"`
	Resources []string   `json:"resources"`
	Deadline  *time.Time `json:"deadline"`
}

// caseView is a case as a caller sees it: fields it may not see are left
// out (the patient reference and studies are the hospital's only; a
// specialist sees only itself among the assigned).
type caseView struct {
	ID        string        `json:"id"`
	Org       string        `json:"org"`
	Patient   string        `json:"patient,omitempty"`
	Studies   []string      `json:"studies,omitempty"`
	Resources []string      `json:"resources,omitempty"`
	Question  string        `json:"question"`
	Specialty string        `json:"specialty"`
	Languages []string      `json:"languages"`
	Deadline  *time.Time    `json:"deadline,omitempty"`
	Status    cases.Status  `json:"status"`
	Assigned  []string      `json:"assigned"`
	Released  []string      `json:"released"`
	Created   time.Time     `json:"created"`
	Updated   time.Time     `json:"updated"`
	Overdue   bool          `json:"overdue"`
	Opinions  int           `json:"opinions"`
	Timeline  []cases.Entry `json:"timeline"`
}

func (s *Server) view(c *cases.Case, p certs.Principal) caseView {
	v := caseView{
		ID: c.ID, Org: c.Org, Question: c.Question, Specialty: c.Specialty,
		Languages: nonNil(c.Languages), Status: c.Status, Assigned: nonNil(c.Assigned), Released: []string{},
		Created: c.Created, Updated: c.Updated, Overdue: c.Overdue(s.now()), Opinions: len(c.Opinions),
		Timeline: c.Timeline,
	}
	for id := range c.Releases {
		v.Released = append(v.Released, id)
	}
	slices.Sort(v.Released)
	if !c.Deadline.IsZero() {
		d := c.Deadline
		v.Deadline = &d
	}
	switch p.Role {
	case certs.RoleHospital:
		v.Patient, v.Studies, v.Resources = "Patient/"+c.Patient, c.Studies, c.Resources
	case certs.RoleSpecialist:
		v.Assigned = filter(v.Assigned, p.ID)
		v.Released = filter(v.Released, p.ID)
		v.Opinions = len(filter(c.Opinions, p.ID))
	}
	return v
}

func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

func filter(s []string, keep string) []string {
	out := []string{}
	if slices.Contains(s, keep) {
		out = append(out, keep)
	}
	return out
}

// now is the gateway's clock.
func (s *Server) now() time.Time { return time.Now().UTC() }

// decodeStrict decodes a bounded JSON body into v, refusing unknown
// fields and trailing data.
func decodeStrict(r *http.Request, v any) error {
	if mt := requestMediaType(r); mt != "application/json" && mt != "" {
		return errorf(http.StatusUnsupportedMediaType, "send application/json")
	}
	dec := json.NewDecoder(r.Body)
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			return err
		}
		return withStatus(http.StatusBadRequest, "the body is not valid JSON for this request: "+jsonErrorText(err), err)
	}
	if dec.More() {
		return errorf(http.StatusBadRequest, "the body holds more than one JSON value")
	}
	return nil
}

// jsonErrorText describes a decoding error without echoing values.
func jsonErrorText(err error) string {
	var te *json.UnmarshalTypeError
	var se *json.SyntaxError
	switch {
	case errors.As(err, &te):
		return fmt.Sprintf("field %q has the wrong type", te.Field)
	case errors.As(err, &se):
		return fmt.Sprintf("syntax error at byte %d", se.Offset)
	case strings.HasPrefix(err.Error(), "json: unknown field"):
		return strings.TrimPrefix(err.Error(), "json: ")
	}
	return "malformed JSON"
}

// caseInput is the policy input about case c.
func (s *Server) caseInput(action policy.Action, c *cases.Case, kind string) policy.Input {
	in := policy.Input{
		Action: action,
		Resource: policy.Resource{
			Kind: kind, Org: c.Org, ID: c.ID, Patient: s.patientKey(c.Org, c.Patient),
		},
		Case: policy.Case{
			ID: c.ID, Org: c.Org, Status: string(c.Status), Specialty: c.Specialty,
			Assigned: c.Assigned, Purpose: policy.PurposeSecondOpinion, SourceCountry: c.SourceCountry,
		},
	}
	if !c.Deadline.IsZero() {
		in.Case.Deadline = c.Deadline.UTC().Format(time.RFC3339Nano)
	}
	return in
}

// withConsents adds the patient's consents to in: every action that
// shares data with a specialist needs them.
func (s *Server) withConsents(r *http.Request, in policy.Input, c *cases.Case) (policy.Input, error) {
	raws, err := s.fhir.Consents(r.Context(), c.Org, c.Patient)
	if err != nil {
		return in, fmt.Errorf("reading the patient's consents: %w", err)
	}
	for _, raw := range raws {
		cs, err := policy.ConsentFromFHIR(raw)
		if err != nil {
			// A stored Consent the policy cannot read never permits:
			// leave it out, the policy then finds no consent.
			s.log.Warn("a stored Consent could not be read for a decision", "request_id", RequestID(r.Context()), "err", err.Error())
			continue
		}
		in.Consents = append(in.Consents, cs)
	}
	return in, nil
}

// loadCase reads case id for the caller. A hospital asking for another
// organisation's case, and a specialist never assigned to it, get 404:
// neither may learn that it exists.
func (s *Server) loadCase(r *http.Request, id string) (*cases.Case, certs.Principal, error) {
	p, _ := PrincipalFrom(r.Context())
	setAuditTarget(r, audit.Target{Case: id})
	c, err := s.cases.Get(r.Context(), id)
	if err != nil {
		return nil, p, err
	}
	if p.Role == certs.RoleHospital && c.Org != p.Org {
		return nil, p, cases.ErrNotFound
	}
	setAuditTarget(r, audit.Target{Case: id, Patient: s.patientKey(c.Org, c.Patient)})
	return c, p, nil
}

// createCase is POST /cases.
func (s *Server) createCase(w http.ResponseWriter, r *http.Request) error {
	setAuditAction(r, "case.create")
	p, _ := PrincipalFrom(r.Context())
	var req caseRequest
	if err := decodeStrict(r, &req); err != nil {
		return err
	}
	c, err := s.newCase(r, p, req)
	if err != nil {
		return err
	}
	if _, err := s.authorize(r, s.caseInput(policy.ActionCaseCreate, c, "case")); err != nil {
		return err
	}
	// The patient and the studies must be the hospital's own.
	if _, err := s.fhir.Read(r.Context(), p.Org, "Patient", c.Patient); err != nil {
		if errors.Is(err, fhir.ErrNotFound) || errors.Is(err, fhir.ErrDeleted) {
			return errorf(http.StatusUnprocessableEntity, "there is no Patient/%s in your organisation's records", c.Patient)
		}
		return err
	}
	for _, uid := range c.Studies {
		if _, err := s.dicom.Study(r.Context(), p.Org, uid); err != nil {
			if errors.Is(err, imaging.ErrNotFound) {
				return errorf(http.StatusUnprocessableEntity, "there is no study %s in your organisation's archive", uid)
			}
			return err
		}
	}
	setAuditTarget(r, audit.Target{Case: c.ID, Patient: s.patientKey(c.Org, c.Patient)})
	if err := s.auditCommit(r, http.StatusCreated); err != nil {
		return err
	}
	if err := s.cases.Create(r.Context(), c); err != nil {
		return err
	}
	w.Header().Set("Location", "/cases/"+c.ID)
	writeJSON(w, http.StatusCreated, s.view(c, p))
	return nil
}

// newCase checks a case request and builds the draft case.
func (s *Server) newCase(r *http.Request, p certs.Principal, req caseRequest) (*cases.Case, error) {
	var problems []string
	patient := strings.TrimPrefix(req.Patient, "Patient/")
	if !fhirIDRE.MatchString(patient) {
		problems = append(problems, `"patient" must be a reference to one of your Patients: "Patient/<id>"`)
	}
	q := strings.TrimSpace(req.Question)
	if q == "" || len(q) > maxQuestionLen {
		problems = append(problems, fmt.Sprintf(`"question" is required, at most %d bytes`, maxQuestionLen))
	}
	if !tokenRE.MatchString(req.Specialty) {
		problems = append(problems, `"specialty" is required: a code such as "oncology"`)
	}
	if len(req.Languages) > maxCaseLanguage || slices.ContainsFunc(req.Languages, func(l string) bool { return !tokenRE.MatchString(l) }) {
		problems = append(problems, `"languages" are BCP 47 tags such as "en"`)
	}
	if len(req.Studies) > maxCaseStudies || slices.ContainsFunc(req.Studies, func(u string) bool { return !dicom.ValidUID(u) }) {
		problems = append(problems, fmt.Sprintf(`"studies" are at most %d Study Instance UIDs`, maxCaseStudies))
	}
	if len(req.Resources) > maxCaseTypes || slices.ContainsFunc(req.Resources, func(t string) bool { return !fhirTypeRE.MatchString(t) }) {
		problems = append(problems, `"resources" are FHIR resource types such as "Condition"`)
	}
	now := s.now()
	var deadline time.Time
	if req.Deadline != nil {
		deadline = req.Deadline.UTC()
		if !deadline.After(now) {
			problems = append(problems, `"deadline" must be in the future`)
		}
	}
	if len(problems) > 0 {
		return nil, errorf(http.StatusBadRequest, "the case is not valid: %s", strings.Join(problems, "; "))
	}
	c := &cases.Case{
		ID: cases.NewID(), Org: p.Org, SourceCountry: p.Country, Patient: patient,
		Studies: dedupe(req.Studies), Resources: dedupe(req.Resources),
		Question: q, Specialty: strings.ToLower(req.Specialty), Languages: dedupe(req.Languages),
		Deadline: deadline, Status: cases.Draft, Assigned: []string{}, Created: now, Updated: now,
		Timeline: []cases.Entry{{At: now, Status: cases.Draft, By: p.ID, Note: "case created"}},
	}
	return c, nil
}

func dedupe(s []string) []string {
	if len(s) == 0 {
		return nil
	}
	out := slices.Clone(s)
	slices.Sort(out)
	return slices.Compact(out)
}

// listCases is GET /cases[?status=][&overdue=true].
func (s *Server) listCases(w http.ResponseWriter, r *http.Request) error {
	setAuditAction(r, "case.list")
	p, _ := PrincipalFrom(r.Context())
	if _, err := s.authorize(r, policy.Input{Action: policy.ActionCaseList, Resource: policy.Resource{Kind: "case", Org: p.Org}}); err != nil {
		return err
	}
	q := r.URL.Query()
	status := cases.Status(q.Get("status"))
	overdue := q.Get("overdue") == "true"
	now := s.now()
	views := []caseView{}
	for c, err := range s.cases.List(r.Context()) {
		if err != nil {
			return err
		}
		switch p.Role {
		case certs.RoleHospital:
			if c.Org != p.Org {
				continue
			}
		case certs.RoleSpecialist:
			if _, released := c.Releases[p.ID]; !released || !c.IsAssigned(p.ID) {
				continue
			}
		case certs.RoleCaseManager:
		default:
			continue
		}
		if status != "" && c.Status != status || overdue && !c.Overdue(now) {
			continue
		}
		views = append(views, s.view(c, p))
	}
	slices.SortFunc(views, func(a, b caseView) int { return b.Created.Compare(a.Created) })
	writeJSON(w, http.StatusOK, map[string]any{"cases": views})
	return nil
}

// getCase is GET /cases/{id}.
func (s *Server) getCase(w http.ResponseWriter, r *http.Request) error {
	setAuditAction(r, "case.read")
	c, p, err := s.loadCase(r, r.PathValue("id"))
	if err != nil {
		return err
	}
	in := s.caseInput(policy.ActionCaseRead, c, "case")
	if p.Role == certs.RoleSpecialist {
		if !c.IsAssigned(p.ID) {
			return cases.ErrNotFound
		}
		if in, err = s.withConsents(r, in, c); err != nil {
			return err
		}
	}
	if _, err := s.authorize(r, in); err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, s.view(c, p))
	return nil
}

// assignCase is POST /cases/{id}/assign: the body's specialists replace
// the assignment.
func (s *Server) assignCase(w http.ResponseWriter, r *http.Request) error {
	setAuditAction(r, "case.assign")
	c, p, err := s.loadCase(r, r.PathValue("id"))
	if err != nil {
		return err
	}
	var req struct {
		Specialists []string `json:"specialists"`
	}
	if err := decodeStrict(r, &req); err != nil {
		return err
	}
	ids := dedupe(req.Specialists)
	if len(ids) == 0 || len(ids) > maxSpecialists {
		return errorf(http.StatusBadRequest, `"specialists" must name 1 to %d specialists`, maxSpecialists)
	}
	for _, id := range ids {
		if _, err := s.directory.Get(r.Context(), id); err != nil {
			if errors.Is(err, cases.ErrNotFound) {
				return errorf(http.StatusUnprocessableEntity, "%q is not in the specialist directory (a specialist registers with PUT /principals/{id}/recipient)", id)
			}
			return err
		}
	}
	if _, err := cases.Transition(c.Status, cases.EventAssign); err != nil {
		return err
	}
	if _, err := s.authorize(r, s.caseInput(policy.ActionCaseAssign, c, "case")); err != nil {
		return err
	}
	if err := s.auditCommit(r, http.StatusOK); err != nil {
		return err
	}
	c, err = s.cases.Update(r.Context(), c.ID, func(c *cases.Case) error {
		removed := []string{}
		for _, a := range c.Assigned {
			if !slices.Contains(ids, a) {
				removed = append(removed, a)
				delete(c.Releases, a) // access ends at once
			}
		}
		note := "assigned " + strings.Join(ids, ", ")
		if len(removed) > 0 {
			note += "; unassigned " + strings.Join(removed, ", ")
		}
		if err := c.Apply(cases.EventAssign, p.ID, s.now(), note); err != nil {
			return err
		}
		c.Assigned = ids
		return nil
	})
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, s.view(c, p))
	return nil
}

// releaseCase is POST /cases/{id}/release: the policy is asked once per
// assigned specialist; any deny refuses the whole release.
func (s *Server) releaseCase(w http.ResponseWriter, r *http.Request) error {
	setAuditAction(r, "case.release")
	c, p, err := s.loadCase(r, r.PathValue("id"))
	if err != nil {
		return err
	}
	if _, err := cases.Transition(c.Status, cases.EventRelease); err != nil {
		return err
	}
	releases := map[string]cases.Release{}
	var denied []string
	for _, id := range c.Assigned {
		sp, err := s.directory.Get(r.Context(), id)
		if err != nil {
			return fmt.Errorf("directory entry of an assigned specialist: %w", err)
		}
		in := s.caseInput(policy.ActionCaseRelease, c, "case")
		in.Recipient = policy.Recipient{ID: sp.ID, Org: sp.Org, Country: sp.Country}
		if in, err = s.withConsents(r, in, c); err != nil {
			return err
		}
		d, err := s.authorize(r, in)
		if isDenied(err) {
			for _, reason := range d.Reasons {
				denied = append(denied, sp.ID+": "+reason)
			}
			continue
		}
		if err != nil {
			return err
		}
		ob := d.Obligations
		releases[id] = cases.Release{
			DeidProfile: ob.DeidProfile, DeidOptions: ob.DeidOptions, ExcludeLabels: ob.ExcludeLabels,
			WithholdBurnedIn: ob.WithholdBurnedIn, PolicyVersion: d.PolicyVersion,
		}
	}
	if len(denied) > 0 {
		setAuditDecision(r, audit.Decision{Allow: false, Reasons: auditReasons(denied)})
		return &policy.DeniedError{Reasons: denied}
	}
	if err := s.auditCommit(r, http.StatusOK); err != nil {
		return err
	}
	c, err = s.cases.Update(r.Context(), c.ID, func(c *cases.Case) error {
		if err := c.Apply(cases.EventRelease, p.ID, s.now(), "released to "+strings.Join(c.Assigned, ", ")); err != nil {
			return err
		}
		if c.Releases == nil {
			c.Releases = map[string]cases.Release{}
		}
		for id, rel := range releases {
			if !c.IsAssigned(id) {
				continue // unassigned meanwhile
			}
			rel.Seq = c.Releases[id].Seq + 1
			rel.At = s.now()
			c.Releases[id] = rel
		}
		return nil
	})
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, s.view(c, p))
	return nil
}

// endCase is POST /cases/{id}/cancel and /close.
func (s *Server) endCase(event cases.Event, action policy.Action, note string) handlerFunc {
	return func(w http.ResponseWriter, r *http.Request) error {
		setAuditAction(r, string(action))
		c, p, err := s.loadCase(r, r.PathValue("id"))
		if err != nil {
			return err
		}
		if _, err := cases.Transition(c.Status, event); err != nil {
			return err
		}
		if _, err := s.authorize(r, s.caseInput(action, c, "case")); err != nil {
			return err
		}
		if err := s.auditCommit(r, http.StatusOK); err != nil {
			return err
		}
		c, err = s.cases.Update(r.Context(), c.ID, func(c *cases.Case) error {
			if err := c.Apply(event, p.ID, s.now(), note); err != nil {
				return err
			}
			c.Releases = nil // no packet is served any more
			return nil
		})
		if err != nil {
			return err
		}
		writeJSON(w, http.StatusOK, s.view(c, p))
		return nil
	}
}

// registerRecipient is PUT /principals/{id}/recipient: a specialist
// registers the age recipient its packets are encrypted to.
func (s *Server) registerRecipient(w http.ResponseWriter, r *http.Request) error {
	setAuditAction(r, "principal.recipient.write")
	p, _ := PrincipalFrom(r.Context())
	id := r.PathValue("id")
	setAuditTarget(r, audit.Target{Principal: id})
	var req struct {
		Recipient string `json:"recipient"`
	}
	if err := decodeStrict(r, &req); err != nil {
		return err
	}
	if _, err := s.authorize(r, policy.Input{Action: policy.ActionPrincipalRecipientWrite, Resource: policy.Resource{Kind: "principal", Org: p.Org, ID: id}}); err != nil {
		return err
	}
	if p.ID != id || p.Role != certs.RoleSpecialist {
		return errorf(http.StatusForbidden, "a specialist registers its own recipient only")
	}
	sp := cases.Specialist{
		ID: p.ID, Org: p.Org, Country: p.Country, Specialty: p.Specialty, Languages: p.Languages,
		Recipient: strings.TrimSpace(req.Recipient), Updated: s.now(),
	}
	if err := s.auditCommit(r, http.StatusOK); err != nil {
		return err
	}
	if err := s.directory.Register(r.Context(), sp); err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, sp)
	return nil
}

// listSpecialists is GET /specialists[?specialty=][&language=].
func (s *Server) listSpecialists(w http.ResponseWriter, r *http.Request) error {
	setAuditAction(r, "specialist.list")
	if _, err := s.authorize(r, policy.Input{Action: policy.ActionSpecialistList, Resource: policy.Resource{Kind: "principal"}}); err != nil {
		return err
	}
	q := r.URL.Query()
	sps, err := s.directory.Search(r.Context(), q.Get("specialty"), q.Get("language"))
	if err != nil {
		return err
	}
	if sps == nil {
		sps = []cases.Specialist{}
	}
	writeJSON(w, http.StatusOK, map[string]any{"specialists": sps})
	return nil
}

// Directory is the specialist directory: `serve --dev` registers the
// demo specialists' age recipients in it at start.
func (s *Server) Directory() *cases.Directory { return s.directory }
