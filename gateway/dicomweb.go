package gateway

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"mime/multipart"
	"net/http"
	"net/textproto"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/consilium/consilium/audit"
	"github.com/consilium/consilium/dicom"
	"github.com/consilium/consilium/imaging"
	"github.com/consilium/consilium/policy"
)

// DICOMweb (PS3.18) under /dicomweb: STOW-RS stores instances, QIDO-RS
// searches them, WADO-RS retrieves them byte for byte and their metadata.
// Every request is confined to the caller's organisation: another
// organisation's study is simply not found. The archive behind it is
// package imaging; this file only speaks HTTP.
//
// Answers carry a few private attributes (creator "CONSILIUM 1", group
// 0009) that standard clients ignore: in STOW-RS answers the outcome of
// each instance (STORED, UNCHANGED, REPLACED, FAILED), the reason in text,
// and the instance's part number in the request; in error answers the
// request id and the policy's reasons.

// Private attributes of Consilium's DICOMweb answers.
const (
	privateCreatorTag dicom.Tag = 0x00090010
	privateCreator              = "CONSILIUM 1"
	tagOutcome        dicom.Tag = 0x00091001 // CS
	tagReasonText     dicom.Tag = 0x00091002 // UT
	tagPartNumber     dicom.Tag = 0x00091003 // UL
	tagRequestID      dicom.Tag = 0x00091010 // LO
	tagPolicyReasons  dicom.Tag = 0x00091011 // UT

	tagErrorComment             dicom.Tag = 0x00000902
	tagRetrieveURL              dicom.Tag = 0x00081190
	tagFailedSOPSequence        dicom.Tag = 0x00081198
	tagReferencedSOPSequence    dicom.Tag = 0x00081199
	tagReferencedSOPClassUID    dicom.Tag = 0x00081150
	tagReferencedSOPInstUID     dicom.Tag = 0x00081155
	tagFailureReason            dicom.Tag = 0x00081197
	tagWarningReason            dicom.Tag = 0x00081196
	mediaDICOM                            = "application/dicom"
	mediaDICOMJSON                        = "application/dicom+json"
	replaceParam                          = "replace"
	dicomwebRoot                          = "/dicomweb"
	metadataWorkers                       = 4
	bulkDataPath                          = "bulkdata"
	errDICOMwebNotConfiguredMsg           = "DICOMweb is not configured on this gateway (no object-name key)"
)

// renderDICOMError writes an error as a DICOM JSON dataset: Error Comment
// (0000,0902) with the message, the request id and any policy reasons as
// private attributes, and the message in a Warning header (PS3.18 8.10.3).
func renderDICOMError(w http.ResponseWriter, p problem) {
	ds := dicom.JSONDataset{}
	ds.Set(tagErrorComment, "LO", p.Message)
	ds.Set(privateCreatorTag, "LO", privateCreator)
	ds.Set(tagRequestID, "LO", p.RequestID)
	if len(p.Reasons) > 0 {
		ds.Set(tagPolicyReasons, "UT", strings.Join(p.Reasons, "\n"))
	}
	w.Header().Set("Warning", warningValue(p.Message))
	writeDICOMJSON(w, p.Status, ds)
}

// warningValue formats a Warning header value (RFC 7234 5.5) with code
// 299, as PS3.18 uses it.
func warningValue(msg string) string {
	msg = strings.Map(func(r rune) rune {
		if r == '"' || r == '\\' || r < 0x20 || r > 0x7e {
			return ' '
		}
		return r
	}, msg)
	return `299 consilium "` + msg + `"`
}

// writeDICOMJSON writes v as application/dicom+json.
func writeDICOMJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", mediaDICOMJSON)
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v) // the client may have gone; nothing more to do
}

// dicomwebReady refuses DICOMweb requests when the gateway has no archive.
func (s *Server) dicomwebReady() error {
	if s.dicom == nil {
		return errorf(http.StatusServiceUnavailable, errDICOMwebNotConfiguredMsg)
	}
	return nil
}

// baseURL is the DICOMweb service root as the caller reached it.
func baseURL(r *http.Request) string { return "https://" + r.Host + dicomwebRoot }

// mediaRange is one entry of an Accept header.
type mediaRange struct {
	typ    string
	params map[string]string
}

// acceptRanges parses an Accept header; an empty header accepts anything.
func acceptRanges(r *http.Request) []mediaRange {
	var out []mediaRange
	for _, v := range r.Header.Values("Accept") {
		for _, part := range strings.Split(v, ",") {
			part = strings.TrimSpace(part)
			if part == "" {
				continue
			}
			t, params, err := mime.ParseMediaType(part)
			if err != nil {
				// Unquoted parameters with "/" (type=application/dicom) are
				// common; read the type alone.
				t = strings.ToLower(strings.TrimSpace(strings.SplitN(part, ";", 2)[0]))
				params = looseParams(part)
			}
			out = append(out, mediaRange{typ: t, params: params})
		}
	}
	if len(out) == 0 {
		out = append(out, mediaRange{typ: "*/*"})
	}
	return out
}

// looseParams reads key=value parameters without the strictness of
// mime.ParseMediaType.
func looseParams(s string) map[string]string {
	params := map[string]string{}
	for _, p := range strings.Split(s, ";")[1:] {
		k, v, ok := strings.Cut(strings.TrimSpace(p), "=")
		if ok {
			params[strings.ToLower(strings.TrimSpace(k))] = strings.Trim(strings.TrimSpace(v), `"`)
		}
	}
	return params
}

// acceptsDICOMJSON reports whether the caller takes a DICOM JSON answer.
func acceptsDICOMJSON(r *http.Request) bool {
	for _, m := range acceptRanges(r) {
		switch m.typ {
		case "*/*", "application/*", mediaDICOMJSON, "application/json":
			return true
		}
	}
	return false
}

// stow stores instances: POST /dicomweb/studies[/{study}], a
// multipart/related body of application/dicom parts. Each part streams
// through the archive; the answer lists each instance as stored (or
// unchanged) or failed with its reason: 200 when all were stored without
// warnings, 202 when some failed or have warnings, 409 when none was
// stored. ?replace=true lets different bytes replace an instance stored
// under the same SOP Instance UID.
func (s *Server) stow(w http.ResponseWriter, r *http.Request) error {
	if err := s.dicomwebReady(); err != nil {
		return err
	}
	p, _ := PrincipalFrom(r.Context())
	target := r.PathValue("study")
	mt, params, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if err != nil {
		mt, params = strings.ToLower(strings.TrimSpace(strings.SplitN(r.Header.Get("Content-Type"), ";", 2)[0])), looseParams(r.Header.Get("Content-Type"))
	}
	if mt != "multipart/related" {
		return errorf(http.StatusUnsupportedMediaType, `STOW-RS takes multipart/related; type="application/dicom"`)
	}
	if t := params["type"]; t != "" && !strings.EqualFold(t, mediaDICOM) {
		return errorf(http.StatusUnsupportedMediaType, "only application/dicom parts are accepted (metadata and bulk data STOW is not supported)")
	}
	if params["boundary"] == "" {
		return errorf(http.StatusBadRequest, "the multipart/related content type has no boundary")
	}
	if !acceptsDICOMJSON(r) {
		return errorf(http.StatusNotAcceptable, "STOW-RS answers are application/dicom+json")
	}
	replace, err := boolParam(r, replaceParam)
	if err != nil {
		return err
	}
	res := policy.Resource{Kind: "dicom", Org: p.Org}
	if target != "" {
		if !dicom.ValidUID(target) {
			return errorf(http.StatusBadRequest, "the study in the path is not a valid UID")
		}
		res.ID = s.dicom.StudyKey(target)
	}
	if _, err := s.authorize(r, policy.Input{Action: policy.ActionDICOMWrite, Resource: res}); err != nil {
		return err
	}
	in, err := s.dicom.Begin(imaging.IngestOptions{
		Org: p.Org, Study: target, Replace: replace,
		Authorize: func(_ context.Context, ref imaging.StudyRef) error {
			_, err := s.authorize(r, policy.Input{Action: policy.ActionDICOMWrite, Resource: policy.Resource{
				Kind: "dicom", Org: p.Org, ID: ref.Key, Patient: ref.PatientKey,
			}})
			if isDenied(err) {
				return fmt.Errorf("%w: %w", imaging.ErrNotAuthorized, err)
			}
			return err
		},
	})
	if err != nil {
		return err
	}
	// A large request may take longer than the handler timeout to read;
	// the answer must still be writable at its end.
	body := &deadlineExtender{r: r.Body, rc: http.NewResponseController(w), d: s.cfg.HandlerTimeout}
	mr := multipart.NewReader(body, params["boundary"])
	var parts []int // part number of each result
	for n := 1; ; n++ {
		part, err := mr.NextRawPart()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return withStatus(http.StatusBadRequest, "the multipart body is malformed or was cut off", err)
		}
		parts = append(parts, n)
		if ct := part.Header.Get("Content-Type"); ct != "" {
			pt, _, _ := mime.ParseMediaType(ct)
			if !strings.EqualFold(pt, mediaDICOM) {
				in.Refuse(imaging.StatusCannotUnderstand, fmt.Sprintf("part %d is %q, not application/dicom", n, pt))
				continue
			}
		}
		if _, err := in.Add(r.Context(), part); err != nil {
			return withStatus(http.StatusBadRequest, "the request body could not be read", err)
		}
	}
	if len(parts) == 0 {
		return errorf(http.StatusBadRequest, "the request holds no instance")
	}
	// The one commit step: after it, only the answer is written. The
	// audit entry is made durable first (fail closed).
	setAuditAction(r, "dicom.store")
	if target != "" {
		setAuditTarget(r, audit.Target{Study: res.ID})
	}
	if err := s.auditCommit(r, http.StatusOK); err != nil {
		return err
	}
	results := in.Commit(r.Context())
	status, ds := stowAnswer(results, parts, baseURL(r), target)
	writeDICOMJSON(w, status, ds)
	return nil
}

// boolParam reads an optional true/false query parameter.
func boolParam(r *http.Request, name string) (bool, error) {
	switch v := r.URL.Query().Get(name); v {
	case "", "false":
		return false, nil
	case "true":
		return true, nil
	default:
		return false, errorf(http.StatusBadRequest, "%s must be true or false", name)
	}
}

// stowAnswer builds the Store Instances Response (PS3.18 10.5.3).
func stowAnswer(results []*imaging.Result, parts []int, base, target string) (int, dicom.JSONDataset) {
	ds := dicom.JSONDataset{}
	var referenced, failed []any
	warnings := false
	studies := map[string]bool{}
	for i, res := range results {
		item := dicom.JSONDataset{}
		item.Set(tagReferencedSOPClassUID, "UI", res.SOPClassUID)
		item.Set(tagReferencedSOPInstUID, "UI", res.SOPInstanceUID)
		item.Set(privateCreatorTag, "LO", privateCreator)
		item.Set(tagOutcome, "CS", strings.ToUpper(res.Outcome.String()))
		item.Set(tagPartNumber, "UL", parts[i])
		if res.Outcome == imaging.Failed {
			item.Set(tagFailureReason, "US", int(res.Status))
			item.Set(tagReasonText, "UT", res.Message)
			failed = append(failed, item)
			continue
		}
		studies[res.StudyInstanceUID] = true
		item.Set(tagRetrieveURL, "UR", base+"/studies/"+res.StudyInstanceUID+"/series/"+res.SeriesInstanceUID+"/instances/"+res.SOPInstanceUID)
		if res.Status != 0 {
			warnings = true
			item.Set(tagWarningReason, "US", int(res.Status))
			item.Set(tagReasonText, "UT", strings.Join(res.Warnings, "\n"))
		}
		referenced = append(referenced, item)
	}
	if target != "" {
		ds.Set(tagRetrieveURL, "UR", base+"/studies/"+target)
	} else if len(studies) == 1 {
		for uid := range studies {
			ds.Set(tagRetrieveURL, "UR", base+"/studies/"+uid)
		}
	}
	if len(referenced) > 0 {
		ds.Set(tagReferencedSOPSequence, "SQ", referenced...)
	}
	if len(failed) > 0 {
		ds.Set(tagFailedSOPSequence, "SQ", failed...)
	}
	switch {
	case len(referenced) == 0:
		return http.StatusConflict, ds
	case len(failed) > 0 || warnings:
		return http.StatusAccepted, ds
	}
	return http.StatusOK, ds
}

// deadlineExtender pushes the response's write deadline forward while
// the request body keeps arriving.
type deadlineExtender struct {
	r        io.Reader
	rc       *http.ResponseController
	d        time.Duration
	extended time.Time
}

func (e *deadlineExtender) Read(p []byte) (int, error) {
	n, err := e.r.Read(p)
	if now := time.Now(); n > 0 && now.Sub(e.extended) >= time.Second {
		e.extended = now
		_ = e.rc.SetWriteDeadline(now.Add(e.d))
	}
	return n, err
}

// qido searches: GET /dicomweb/studies, /studies/{study}/series,
// /studies/{study}[/series/{series}]/instances.
func (s *Server) qido(level imaging.Level) handlerFunc {
	return func(w http.ResponseWriter, r *http.Request) error {
		if err := s.dicomwebReady(); err != nil {
			return err
		}
		p, _ := PrincipalFrom(r.Context())
		study, series := r.PathValue("study"), r.PathValue("series")
		res := policy.Resource{Kind: "dicom", Org: p.Org}
		if study != "" {
			res.ID = s.dicom.StudyKey(study)
		}
		if _, err := s.authorize(r, policy.Input{Action: policy.ActionDICOMRead, Resource: res}); err != nil {
			if study != "" {
				// As for retrievals: a study the caller may not see is
				// not found.
				return notFoundOnDeny(err)
			}
			return err
		}
		if !acceptsDICOMJSON(r) {
			return errorf(http.StatusNotAcceptable, "QIDO-RS answers are application/dicom+json")
		}
		q, warnings, err := imaging.ParseQuery(level, r.URL.Query())
		if err != nil {
			return withStatus(http.StatusBadRequest, strings.TrimPrefix(err.Error(), "imaging: "), err)
		}
		q.StudyUID, q.SeriesUID, q.BaseURL = study, series, baseURL(r)
		found, err := s.dicom.Search(r.Context(), p.Org, q)
		if err != nil {
			return err
		}
		for _, wmsg := range warnings {
			w.Header().Add("Warning", warningValue(wmsg))
		}
		if found.Truncated && q.Limit == imaging.MaxResults {
			w.Header().Add("Warning", warningValue("The number of results exceeded the maximum supported by the server. Additional results can be requested."))
		}
		matches := found.Matches
		if matches == nil {
			matches = []dicom.JSONDataset{}
		}
		writeDICOMJSON(w, http.StatusOK, matches)
		return nil
	}
}

// studyFor loads the study in the path for a retrieval and asks the
// policy; another organisation's study, or one the policy keeps from the
// caller, is not found.
func (s *Server) studyFor(r *http.Request) (*imaging.Study, []imaging.Instance, error) {
	if err := s.dicomwebReady(); err != nil {
		return nil, nil, err
	}
	p, _ := PrincipalFrom(r.Context())
	uid := r.PathValue("study")
	st, lookupErr := s.dicom.Study(r.Context(), p.Org, uid)
	res := policy.Resource{Kind: "dicom", Org: p.Org, ID: s.dicom.StudyKey(uid)}
	if lookupErr == nil {
		res.Patient = st.PatientKey
	}
	if _, err := s.authorize(r, policy.Input{Action: policy.ActionDICOMRead, Resource: res}); err != nil {
		return nil, nil, notFoundOnDeny(err)
	}
	if lookupErr != nil {
		return nil, nil, lookupErr
	}
	ins, err := st.Instances(r.PathValue("series"), r.PathValue("sop"))
	if err != nil {
		return nil, nil, err
	}
	return st, ins, nil
}

// wado retrieves instances: GET /dicomweb/studies/{study}[/series/{series}
// [/instances/{sop}]], as multipart/related; type="application/dicom",
// each instance byte for byte as stored (never transcoded), streamed.
func (s *Server) wado(w http.ResponseWriter, r *http.Request) error {
	_, ins, err := s.studyFor(r)
	if err != nil {
		return err
	}
	single, err := negotiateInstances(r, ins)
	if err != nil {
		return err
	}
	if single {
		return s.sendSingle(w, r, ins[0])
	}
	mw := multipart.NewWriter(w)
	w.Header().Set("Content-Type", `multipart/related; type="application/dicom"; boundary=`+mw.Boundary())
	for i, in := range ins {
		rc, err := s.dicom.Open(r.Context(), in)
		if err != nil {
			if i == 0 {
				return err
			}
			s.cutStream(r, err)
		}
		h := textproto.MIMEHeader{}
		h.Set("Content-Type", mediaDICOM+"; transfer-syntax="+in.TransferSyntaxUID)
		h.Set("Content-Length", strconv.FormatInt(in.Size, 10))
		pw, err := mw.CreatePart(h)
		if err == nil {
			_, err = io.Copy(pw, rc)
		}
		rc.Close()
		if err != nil {
			s.cutStream(r, err)
		}
	}
	if err := mw.Close(); err != nil {
		s.cutStream(r, err)
	}
	return nil
}

// sendSingle answers with one instance as application/dicom.
func (s *Server) sendSingle(w http.ResponseWriter, r *http.Request, in imaging.Instance) error {
	rc, err := s.dicom.Open(r.Context(), in)
	if err != nil {
		return err
	}
	defer rc.Close()
	w.Header().Set("Content-Type", mediaDICOM+"; transfer-syntax="+in.TransferSyntaxUID)
	w.Header().Set("Content-Length", strconv.FormatInt(in.Size, 10))
	if _, err := io.Copy(w, rc); err != nil {
		s.cutStream(r, err)
	}
	return nil
}

// negotiateInstances checks the Accept header of an instance retrieval:
// multipart/related with type application/dicom (the default) or, for one
// instance, application/dicom. Instances are served as stored: a
// transfer-syntax parameter must name theirs, or be "*" or absent.
func negotiateInstances(r *http.Request, ins []imaging.Instance) (single bool, err error) {
	for _, m := range acceptRanges(r) {
		switch {
		case m.typ == "*/*" || m.typ == "multipart/*" ||
			m.typ == "multipart/related" && (m.params["type"] == "" || strings.EqualFold(m.params["type"], mediaDICOM)):
		case m.typ == mediaDICOM && len(ins) == 1:
			single = true
		default:
			continue
		}
		ts := m.params["transfer-syntax"]
		if ts == "" || ts == "*" || allSyntax(ins, ts) {
			return single, nil
		}
		single = false
	}
	return false, errorf(http.StatusNotAcceptable, `instances are served as stored, without transcoding: accept multipart/related; type="application/dicom" with transfer-syntax=* (or their own)`)
}

func allSyntax(ins []imaging.Instance, ts string) bool {
	for _, in := range ins {
		if in.TransferSyntaxUID != ts {
			return false
		}
	}
	return true
}

// wadoMetadata answers GET .../metadata with the instances' headers in
// DICOM JSON; Pixel Data and large binary values carry a BulkDataURI.
func (s *Server) wadoMetadata(w http.ResponseWriter, r *http.Request) error {
	_, ins, err := s.studyFor(r)
	if err != nil {
		return err
	}
	if !acceptsDICOMJSON(r) {
		return errorf(http.StatusNotAcceptable, "metadata answers are application/dicom+json")
	}
	base := baseURL(r)
	out := make([]dicom.JSONDataset, len(ins))
	errs := make([]error, len(ins))
	var wg sync.WaitGroup
	next := make(chan int)
	for range min(metadataWorkers, len(ins)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				in := ins[i]
				uri := func(t dicom.Tag) string {
					return base + "/studies/" + in.StudyInstanceUID + "/series/" + in.SeriesInstanceUID +
						"/instances/" + in.SOPInstanceUID + "/" + bulkDataPath + "/" + dicom.JSONKey(t)
				}
				out[i], errs[i] = s.dicom.Metadata(r.Context(), in, uri)
			}
		}()
	}
	for i := range ins {
		next <- i
	}
	close(next)
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return err
	}
	writeDICOMJSON(w, http.StatusOK, out)
	return nil
}

// wadoBulkData serves a BulkDataURI: the value of one top-level element
// of an instance, as multipart/related; type="application/octet-stream"
// (or a single application/octet-stream body when that is what the caller
// accepts).
func (s *Server) wadoBulkData(w http.ResponseWriter, r *http.Request) error {
	t, ok := dicom.LookupKeyword(r.PathValue("tag"))
	if !ok {
		return errorf(http.StatusNotFound, "no such bulk data")
	}
	_, ins, err := s.studyFor(r)
	if err != nil {
		return err
	}
	single := false
	for _, m := range acceptRanges(r) {
		if m.typ == "application/octet-stream" {
			single = true
			break
		}
		if m.typ == "*/*" || m.typ == "multipart/related" {
			break
		}
	}
	rc, err := s.dicom.BulkData(r.Context(), ins[0], t)
	if err != nil {
		return err
	}
	defer rc.Close()
	if single {
		w.Header().Set("Content-Type", "application/octet-stream")
		if _, err := io.Copy(w, rc); err != nil {
			s.cutStream(r, err)
		}
		return nil
	}
	mw := multipart.NewWriter(w)
	w.Header().Set("Content-Type", `multipart/related; type="application/octet-stream"; boundary=`+mw.Boundary())
	h := textproto.MIMEHeader{}
	h.Set("Content-Type", "application/octet-stream")
	pw, err := mw.CreatePart(h)
	if err == nil {
		_, err = io.Copy(pw, rc)
	}
	if err == nil {
		err = mw.Close()
	}
	if err != nil {
		s.cutStream(r, err)
	}
	return nil
}
