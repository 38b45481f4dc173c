package gateway

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"mime/multipart"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/consilium/consilium/cases"
	"github.com/consilium/consilium/certs"
	"github.com/consilium/consilium/deid"
	"github.com/consilium/consilium/policy"
)

// # Opinions
//
// A specialist answers with a FHIR DiagnosticReport about the packet's
// pseudonymous patient ("Patient/<pseudonym>", the manifest's
// case.patient), optionally with a PDF. The gateway checks it, keeps it
// as sent, and re-identifies it whenever the hospital reads it: the
// subject becomes the hospital's own Patient, and study UIDs issued for
// the packet become the original ones. Only the gateway can do this: the
// pseudonym source maps back.

// Limits of an opinion.
const (
	maxOpinionReport = 4 << 20
	maxOpinionBody   = maxOpinionReport + cases.MaxPDF + 1<<20
	dicomUIDSystem   = "urn:dicom:uid"
)

// postOpinion is POST /cases/{id}/opinions.
func (s *Server) postOpinion(w http.ResponseWriter, r *http.Request) error {
	setAuditAction(r, "opinion.create")
	c, p, err := s.loadCase(r, r.PathValue("id"))
	if err != nil {
		return err
	}
	if _, err := s.authorize(r, s.caseInput(policy.ActionOpinionCreate, c, "opinion")); err != nil {
		return err
	}
	rel, ok := c.Releases[p.ID]
	if !ok {
		return errorf(http.StatusConflict, "the case has not been released to you")
	}
	if _, err := cases.Transition(c.Status, cases.EventOpinion); err != nil {
		return err
	}
	report, pdf, err := readOpinion(r)
	if err != nil {
		return err
	}
	pseudonym, err := s.casePseudonym(r, c, rel)
	if err != nil {
		return err
	}
	if err := s.checkReport(report, pseudonym); err != nil {
		return err
	}
	if err := s.auditCommit(r, http.StatusCreated); err != nil {
		return err
	}
	o := &cases.Opinion{Case: c.ID, Specialist: p.ID, Received: s.now(), Report: report}
	if err := s.cases.PutOpinion(r.Context(), o, pdf); err != nil {
		return err
	}
	if _, err := s.cases.Update(r.Context(), c.ID, func(c *cases.Case) error {
		note := "opinion received from " + p.ID
		if o.Version > 1 {
			note = fmt.Sprintf("opinion version %d received from %s", o.Version, p.ID)
		}
		if err := c.Apply(cases.EventOpinion, p.ID, s.now(), note); err != nil {
			return err
		}
		if !slices.Contains(c.Opinions, p.ID) {
			c.Opinions = append(c.Opinions, p.ID)
			slices.Sort(c.Opinions)
		}
		return nil
	}); err != nil {
		return err
	}
	w.Header().Set("Location", "/cases/"+c.ID+"/opinions")
	writeJSON(w, http.StatusCreated, map[string]any{
		"id": opinionID(c.ID, p.ID), "case": c.ID, "specialist": p.ID, "version": o.Version, "received": o.Received,
	})
	return nil
}

func opinionID(caseID, specialist string) string { return caseID + "-" + specialist }

// readOpinion reads the report (and PDF) from a FHIR JSON or a
// multipart/form-data body.
func readOpinion(r *http.Request) (report, pdf []byte, err error) {
	mt, params, _ := mime.ParseMediaType(r.Header.Get("Content-Type"))
	switch {
	case isJSONType(mt):
		report, err = io.ReadAll(io.LimitReader(r.Body, maxOpinionReport+1))
		if err != nil {
			return nil, nil, bodyError(err)
		}
		if len(report) > maxOpinionReport {
			return nil, nil, errorf(http.StatusRequestEntityTooLarge, "the report is larger than %d bytes", maxOpinionReport)
		}
		return report, nil, nil
	case mt == "multipart/form-data":
		mr := multipart.NewReader(r.Body, params["boundary"])
		for {
			part, err := mr.NextPart()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				return nil, nil, withStatus(http.StatusBadRequest, "the multipart body is malformed or was cut off", err)
			}
			switch part.FormName() {
			case "report":
				if report, err = readPart(part, maxOpinionReport); err != nil {
					return nil, nil, err
				}
			case "pdf":
				if pdf, err = readPart(part, cases.MaxPDF); err != nil {
					return nil, nil, err
				}
				if !bytes.HasPrefix(pdf, []byte("%PDF-")) {
					return nil, nil, errorf(http.StatusUnsupportedMediaType, `the "pdf" part is not a PDF file`)
				}
			default:
				return nil, nil, errorf(http.StatusBadRequest, `unexpected part %q: send "report" and optionally "pdf"`, part.FormName())
			}
		}
		if report == nil {
			return nil, nil, errorf(http.StatusBadRequest, `the multipart body has no "report" part`)
		}
		return report, pdf, nil
	default:
		return nil, nil, errorf(http.StatusUnsupportedMediaType, "send the DiagnosticReport as application/fhir+json, or multipart/form-data with parts report and pdf")
	}
}

func readPart(part *multipart.Part, limit int64) ([]byte, error) {
	b, err := io.ReadAll(io.LimitReader(part, limit+1))
	if err != nil {
		return nil, bodyError(err)
	}
	if int64(len(b)) > limit {
		return nil, errorf(http.StatusRequestEntityTooLarge, "part %q is larger than %d bytes", part.FormName(), limit)
	}
	return b, nil
}

// checkReport validates a submitted DiagnosticReport: valid FHIR R4, about
// the packet's pseudonymous patient, with a conclusion.
func (s *Server) checkReport(report []byte, pseudonym string) error {
	res, err := s.fhir.Parser().Parse(report)
	if err != nil {
		return fhirAsProblem(err)
	}
	if res.Type != "DiagnosticReport" {
		return errorf(http.StatusUnprocessableEntity, "an opinion is a DiagnosticReport, not a %s", res.Type)
	}
	var dr struct {
		Status     string `json:"status"`
		Conclusion string `json:"conclusion"`
		Subject    struct {
			Reference string `json:"reference"`
		} `json:"subject"`
	}
	if err := json.Unmarshal(report, &dr); err != nil {
		return withStatus(http.StatusBadRequest, "the report is not valid JSON", err)
	}
	var problems []string
	switch dr.Status {
	case "final", "preliminary", "amended", "corrected":
	default:
		problems = append(problems, "status must be final, preliminary, amended or corrected")
	}
	if strings.TrimSpace(dr.Conclusion) == "" {
		problems = append(problems, "conclusion is required")
	}
	if dr.Subject.Reference != "Patient/"+pseudonym {
		problems = append(problems, "subject must reference the packet's patient, Patient/"+pseudonym+" (case.patient in manifest.json)")
	}
	if len(problems) > 0 {
		return errorf(http.StatusUnprocessableEntity, "the opinion is not valid: %s", strings.Join(problems, "; "))
	}
	return nil
}

// fhirAsProblem turns a FHIR parse error into a 400/422 with its issues.
func fhirAsProblem(err error) error {
	status, _ := statusOf(fhirError(err))
	if status >= 500 {
		return err
	}
	return withStatus(status, "the report is not a valid FHIR R4 resource: "+err.Error(), err)
}

// casePseudonym is the patient's pseudonym in the specialist's packet.
func (s *Server) casePseudonym(r *http.Request, c *cases.Case, rel cases.Release) (string, error) {
	src, _, _, err := s.deidFor(rel)
	if err != nil {
		return "", err
	}
	pt, err := src.Patient(r.Context(), c.Org+"|"+c.Patient)
	if err != nil {
		return "", fmt.Errorf("the patient's pseudonym: %w", err)
	}
	return pt.Pseudonym, nil
}

// getOpinions is GET /cases/{id}/opinions: a Bundle of the opinions,
// re-identified for the hospital (a specialist reads only its own, as
// sent).
func (s *Server) getOpinions(w http.ResponseWriter, r *http.Request) error {
	setAuditAction(r, "opinion.read")
	c, p, err := s.loadCase(r, r.PathValue("id"))
	if err != nil {
		return err
	}
	if p.Role == certs.RoleSpecialist && !c.IsAssigned(p.ID) {
		return cases.ErrNotFound
	}
	if _, err := s.authorize(r, s.caseInput(policy.ActionOpinionRead, c, "opinion")); err != nil {
		return err
	}
	ops, err := s.cases.Opinions(r.Context(), c.ID)
	if err != nil {
		return err
	}
	entries := []any{}
	for _, o := range ops {
		if p.Role == certs.RoleSpecialist && o.Specialist != p.ID {
			continue
		}
		res, err := s.presentOpinion(r, c, o, p.Role != certs.RoleSpecialist)
		if err != nil {
			return err
		}
		entries = append(entries, map[string]any{"fullUrl": fhirBase(r) + "/DiagnosticReport/" + opinionID(c.ID, o.Specialist), "resource": res})
	}
	body, err := json.Marshal(map[string]any{
		"resourceType": "Bundle", "type": "collection", "timestamp": s.now().Format(time.RFC3339),
		"total": len(entries), "entry": entries,
	})
	if err != nil {
		return err
	}
	writeFHIR(w, http.StatusOK, body)
	return nil
}

// presentOpinion returns an opinion as a DiagnosticReport to show:
// identified by case and specialist, with the specialist as performer and
// the PDF attached, and re-identified when reidentify is set.
func (s *Server) presentOpinion(r *http.Request, c *cases.Case, o *cases.Opinion, reidentify bool) (map[string]any, error) {
	var dr map[string]any
	if err := json.Unmarshal(o.Report, &dr); err != nil {
		return nil, fmt.Errorf("a stored opinion: %w", err)
	}
	dr["id"] = opinionID(c.ID, o.Specialist)
	dr["meta"] = map[string]any{"versionId": strconv.Itoa(o.Version), "lastUpdated": o.Received.Format(time.RFC3339Nano)}
	if _, ok := dr["issued"]; !ok {
		dr["issued"] = o.Received.Format(time.RFC3339Nano)
	}
	dr["performer"] = []any{map[string]any{"display": o.Specialist}}
	if o.PDFSize > 0 {
		pdf, err := s.cases.OpinionPDF(r.Context(), o)
		if err != nil {
			return nil, err
		}
		dr["presentedForm"] = []any{map[string]any{
			"contentType": "application/pdf", "title": "Opinion of " + o.Specialist,
			"size": len(pdf), "data": base64.StdEncoding.EncodeToString(pdf),
		}}
	}
	if !reidentify {
		return dr, nil
	}
	dr["subject"] = map[string]any{"reference": "Patient/" + c.Patient}
	if err := s.reidentifyStudies(r, c, o, dr); err != nil {
		return nil, err
	}
	return dr, nil
}

// reidentifyStudies maps the study UIDs the report names (imagingStudy
// identifiers, system urn:dicom:uid) back to the hospital's own.
// References to the packet's ImagingStudy resources cannot point anywhere
// at the hospital, so they become identifiers of the original study.
func (s *Server) reidentifyStudies(r *http.Request, c *cases.Case, o *cases.Opinion, dr map[string]any) error {
	studies, _ := dr["imagingStudy"].([]any)
	if len(studies) == 0 {
		return nil
	}
	rel, ok := c.Releases[o.Specialist]
	if !ok {
		rel = cases.Release{DeidProfile: policy.ProfileShifted}
	}
	src, _, _, err := s.deidFor(rel)
	if err != nil {
		return err
	}
	rev, ok := src.(deid.Reverser)
	if !ok {
		return errors.New("the pseudonym source cannot map back")
	}
	pseudonym, err := s.casePseudonym(r, c, rel)
	if err != nil {
		return err
	}
	out := make([]any, 0, len(studies))
	for _, st := range studies {
		ref, _ := st.(map[string]any)
		ident, _ := ref["identifier"].(map[string]any)
		uid, _ := ident["value"].(string)
		uid = strings.TrimPrefix(uid, "urn:oid:")
		if uid == "" {
			continue // a reference into the packet only: nothing to point at
		}
		orig, err := rev.OriginalUIDs(r.Context(), pseudonym, []string{uid})
		if err != nil {
			continue // not a UID issued for this patient: leave it out
		}
		out = append(out, map[string]any{
			"identifier": map[string]any{"system": dicomUIDSystem, "value": "urn:oid:" + orig[0]},
			"display":    "study " + orig[0],
		})
	}
	dr["imagingStudy"] = out
	return nil
}
