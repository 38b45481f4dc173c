package gateway

import (
	"bytes"
	"context"
	"errors"
	"iter"
	"mime"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/consilium/consilium/audit"
	"github.com/consilium/consilium/fhir"
	"github.com/consilium/consilium/policy"
)

// The FHIR R4 REST API (DESIGN.md): hospitals push and read their own
// organisation's records; compliance officers read Consent resources.
// Package fhir does the work (parsing, validation, storage, bundles,
// search); these handlers negotiate media types, ask the policy, and
// answer in FHIR JSON, errors included (OperationOutcome, see
// fhir_outcome.go).
//
// Authorisation: one fhir.write decision per written resource (per Bundle
// entry, per NDJSON line), one fhir.read decision per read of a resource
// (also for vread, history and $everything, where the resource is the
// Patient), one fhir.search decision per search (for the type and, when
// given, the patient; the results of a search the policy allowed are not
// decided one by one). A read the policy refuses answers 404, so that no
// one learns whether another organisation's record exists.

// Defaults for [FHIRConfig].
const (
	DefaultFHIRMaxBodyBytes = 64 << 20
	DefaultFHIRMaxLineBytes = fhir.DefaultMaxLineBytes
)

// FHIRConfig bounds the FHIR API's uploads. Zero values take the defaults.
type FHIRConfig struct {
	// MaxBodyBytes bounds a JSON request body (a resource or a Bundle).
	// Default 64 MiB. NDJSON bodies are unbounded and streamed.
	MaxBodyBytes int64 `json:"max_body_bytes,omitempty"`
	// MaxLineBytes bounds one NDJSON line. Default 16 MiB.
	MaxLineBytes int `json:"max_line_bytes,omitempty"`
}

func (c FHIRConfig) withDefaults() FHIRConfig {
	if c.MaxBodyBytes == 0 {
		c.MaxBodyBytes = DefaultFHIRMaxBodyBytes
	}
	if c.MaxLineBytes == 0 {
		c.MaxLineBytes = DefaultFHIRMaxLineBytes
	}
	return c
}

// OrganizationHeader names the organisation whose records a request
// addresses. Hospitals may leave it out (their own is the default; naming
// another gets 404s); compliance officers, who belong to no hospital, use
// it to read a hospital's Consent resources.
const OrganizationHeader = "X-Consilium-Organization"

// Media types.
const (
	fhirJSON   = "application/fhir+json"
	fhirNDJSON = "application/fhir+ndjson"
)

func newFHIRStore(s *Server) (*fhir.Store, error) {
	return fhir.NewStore(s.store, fhir.StoreOptions{Names: s.names, Logger: s.log, MaxLineBytes: s.cfg.FHIR.MaxLineBytes})
}

// FHIR returns the gateway's FHIR record store, for components built on
// it (policy inputs need a patient's consents, case packets a patient's
// records; see fhir.Store.Consents and fhir.Store.Everything).
func (s *Server) FHIR() *fhir.Store { return s.fhir }

// fhirRoute are the options of every FHIR route.
func fhirRoute(opts ...routeOption) []routeOption {
	return append([]routeOption{renderErrors(renderOutcome)}, opts...)
}

// fhirScope returns the organisation the request addresses.
func fhirScope(r *http.Request) (string, error) {
	p, _ := PrincipalFrom(r.Context())
	org := r.Header.Get(OrganizationHeader)
	if org == "" {
		return p.Org, nil
	}
	if len(org) > 64 || !printableASCII(org) {
		return "", errorf(http.StatusBadRequest, "%s is not an organisation name", OrganizationHeader)
	}
	return org, nil
}

func printableASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] <= 0x20 || s[i] > 0x7e {
			return false
		}
	}
	return true
}

// patientKey is the pseudonymous key of a patient in policy inputs.
func (s *Server) patientKey(org, patientID string) string {
	if patientID == "" {
		return ""
	}
	return s.names("patient", org+"|"+patientID)
}

// fhirInput is a policy input about FHIR data of org.
func (s *Server) fhirInput(action policy.Action, org, typ, id, patient string, labels []string) policy.Input {
	return policy.Input{Action: action, Resource: policy.Resource{
		Kind: "fhir", Org: org, Type: typ, ID: id, Labels: labels, Patient: s.patientKey(org, patient),
	}}
}

// fhirWriteOptions returns the write options of a request: the
// authorizer asks the policy for every access of the request, and the
// request's audit entry (action, with status as outcome) is made durable
// right before the write becomes visible.
func (s *Server) fhirWriteOptions(r *http.Request, org, action string, status int) fhir.WriteOptions {
	setAuditAction(r, action)
	patients := map[string]bool{}
	return fhir.WriteOptions{
		Authorize: func(_ context.Context, a fhir.Access) error {
			action := policy.ActionFHIRRead
			switch {
			case a.Write:
				action = policy.ActionFHIRWrite
			case a.Search:
				action = policy.ActionFHIRSearch
			}
			in := s.fhirInput(action, org, a.Type, a.ID, a.Patient, a.Labels)
			if a.Write && in.Resource.Patient != "" {
				patients[in.Resource.Patient] = true
			}
			_, err := s.authorize(r, in)
			return err
		},
		BeforeCommit: func(context.Context) error {
			if len(patients) == 1 {
				for p := range patients {
					setAuditTarget(r, audit.Target{Patient: p})
				}
			}
			return s.auditCommit(r, status)
		},
		Representation: preferRepresentation(r, true),
		Base:           fhirBase(r),
	}
}

// preferRepresentation reads Prefer: return=…; def applies when absent.
func preferRepresentation(r *http.Request, def bool) bool {
	for _, p := range strings.Split(r.Header.Get("Prefer"), ",") {
		switch strings.TrimSpace(p) {
		case "return=minimal", "return=OperationOutcome":
			return false
		case "return=representation":
			return true
		}
	}
	return def
}

// fhirBase is the service base URL as the client addressed it.
func fhirBase(r *http.Request) string { return "https://" + r.Host + "/fhir" }

// fhirAccept refuses requests that ask for a format other than JSON.
func fhirAccept(r *http.Request) error {
	if f := r.URL.Query().Get("_format"); f != "" {
		switch f {
		case "json", fhirJSON, "application/json":
		default:
			return errorf(http.StatusNotAcceptable, "only JSON is served (_format=json)")
		}
	}
	accept := r.Header.Get("Accept")
	if accept == "" {
		return nil
	}
	for _, part := range strings.Split(accept, ",") {
		mt, _, err := mime.ParseMediaType(strings.TrimSpace(part))
		if err != nil {
			continue
		}
		switch mt {
		case fhirJSON, "application/json", "application/*", "*/*", "application/json+fhir":
			return nil
		}
	}
	return errorf(http.StatusNotAcceptable, "only %s is served", fhirJSON)
}

// requestMediaType returns the request's media type, lower case.
func requestMediaType(r *http.Request) string {
	mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if err != nil {
		return ""
	}
	return mt
}

func isJSONType(mt string) bool {
	return mt == fhirJSON || mt == "application/json" || mt == "application/json+fhir"
}

func isNDJSONType(mt string) bool {
	return mt == fhirNDJSON || mt == "application/ndjson" || mt == "application/x-ndjson"
}

// readJSONBody reads a JSON request body within the FHIR body bound.
func (s *Server) readJSONBody(w http.ResponseWriter, r *http.Request) ([]byte, error) {
	if mt := requestMediaType(r); !isJSONType(mt) {
		return nil, errorf(http.StatusUnsupportedMediaType, "send %s (got %q)", fhirJSON, mt)
	}
	var buf bytes.Buffer
	if n := r.ContentLength; n > 0 && n <= s.cfg.FHIR.MaxBodyBytes {
		buf.Grow(int(n) + 1) // one read past the end sees EOF
	}
	if _, err := buf.ReadFrom(http.MaxBytesReader(w, r.Body, s.cfg.FHIR.MaxBodyBytes)); err != nil {
		return nil, bodyError(err)
	}
	return buf.Bytes(), nil
}

// bodyError classifies a failure to read a request body.
func bodyError(err error) error {
	var tooBig *http.MaxBytesError
	if errors.As(err, &tooBig) || errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	return withStatus(http.StatusBadRequest, "could not read the request body", err)
}

// writeFHIR answers with a FHIR JSON body.
func writeFHIR(w http.ResponseWriter, status int, body []byte) {
	h := w.Header()
	h.Set("Content-Type", fhirJSON+"; charset=utf-8")
	h.Set("X-Content-Type-Options", "nosniff")
	if body == nil {
		w.WriteHeader(status)
		return
	}
	h.Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(status)
	_, _ = w.Write(body) // the client may have gone; nothing more to do
}

// setVersionHeaders sets ETag and Last-Modified.
func setVersionHeaders(w http.ResponseWriter, etag, lastUpdated string) {
	if etag != "" {
		w.Header().Set("ETag", etag)
	}
	if t, err := time.Parse(time.RFC3339Nano, lastUpdated); err == nil {
		w.Header().Set("Last-Modified", t.UTC().Format(http.TimeFormat))
	}
}

// fhirPostBase is POST /fhir: a transaction or batch Bundle (JSON), or an
// NDJSON bulk load.
func (s *Server) fhirPostBase(w http.ResponseWriter, r *http.Request) error {
	if err := fhirAccept(r); err != nil {
		return err
	}
	org, err := fhirScope(r)
	if err != nil {
		return err
	}
	opts := s.fhirWriteOptions(r, org, "fhir.transaction", http.StatusOK)
	opts.Representation = preferRepresentation(r, false)
	mt := requestMediaType(r)
	var res *fhir.BundleResult
	switch {
	case isNDJSONType(mt):
		res, err = s.fhir.LoadNDJSON(r.Context(), org, r.Body, opts)
		if err != nil {
			var fe *fhir.Error
			if !errors.As(err, &fe) {
				err = bodyError(err)
			}
		}
	case isJSONType(mt):
		var body []byte
		if body, err = s.readJSONBody(w, r); err != nil {
			return err
		}
		res, err = s.fhir.ProcessBundle(r.Context(), org, body, opts)
	default:
		return errorf(http.StatusUnsupportedMediaType, "send a Bundle as %s or resources as %s (got %q)", fhirJSON, fhirNDJSON, mt)
	}
	if err != nil {
		return fhirError(err)
	}
	writeFHIR(w, http.StatusOK, res.AppendJSON(nil))
	return nil
}

// fhirWriteBody checks a write's Accept header and organisation scope and
// reads its bounded JSON body.
func (s *Server) fhirWriteBody(w http.ResponseWriter, r *http.Request) (org string, body []byte, err error) {
	if err := fhirAccept(r); err != nil {
		return "", nil, err
	}
	if org, err = fhirScope(r); err != nil {
		return "", nil, err
	}
	if body, err = s.readJSONBody(w, r); err != nil {
		return "", nil, err
	}
	return org, body, nil
}

// fhirCreate is POST /fhir/{type}.
func (s *Server) fhirCreate(w http.ResponseWriter, r *http.Request) error {
	org, body, err := s.fhirWriteBody(w, r)
	if err != nil {
		return err
	}
	res, err := s.fhir.Create(r.Context(), org, r.PathValue("type"), body, r.Header.Get("If-None-Exist"), s.fhirWriteOptions(r, org, "fhir.create", http.StatusCreated))
	if err != nil {
		return fhirError(err)
	}
	return s.answerWrite(w, r, org, res)
}

// fhirUpdate is PUT /fhir/{type}/{id}.
func (s *Server) fhirUpdate(w http.ResponseWriter, r *http.Request) error {
	org, body, err := s.fhirWriteBody(w, r)
	if err != nil {
		return err
	}
	res, err := s.fhir.Update(r.Context(), org, r.PathValue("type"), r.PathValue("id"), body, r.Header.Get("If-Match"), s.fhirWriteOptions(r, org, "fhir.update", http.StatusOK))
	if err != nil {
		return fhirError(err)
	}
	return s.answerWrite(w, r, org, res)
}

// fhirConditionalUpdate is PUT /fhir/{type}?search.
func (s *Server) fhirConditionalUpdate(w http.ResponseWriter, r *http.Request) error {
	org, body, err := s.fhirWriteBody(w, r)
	if err != nil {
		return err
	}
	q := r.URL.Query()
	q.Del("_format")
	if len(q) == 0 {
		return errorf(http.StatusMethodNotAllowed, "PUT needs an id, or search parameters for a conditional update")
	}
	res, err := s.fhir.ConditionalUpdate(r.Context(), org, r.PathValue("type"), q.Encode(), body, s.fhirWriteOptions(r, org, "fhir.update", http.StatusOK))
	if err != nil {
		return fhirError(err)
	}
	return s.answerWrite(w, r, org, res)
}

// fhirDelete is DELETE /fhir/{type}/{id}.
func (s *Server) fhirDelete(w http.ResponseWriter, r *http.Request) error {
	org, err := fhirScope(r)
	if err != nil {
		return err
	}
	res, err := s.fhir.Delete(r.Context(), org, r.PathValue("type"), r.PathValue("id"), s.fhirWriteOptions(r, org, "fhir.delete", http.StatusNoContent))
	if err != nil {
		return fhirError(err)
	}
	setVersionHeaders(w, res.ETag(), res.LastModified)
	writeFHIR(w, http.StatusNoContent, nil)
	return nil
}

// fhirConditionalDelete is DELETE /fhir/{type}?search.
func (s *Server) fhirConditionalDelete(w http.ResponseWriter, r *http.Request) error {
	org, err := fhirScope(r)
	if err != nil {
		return err
	}
	q := r.URL.Query()
	q.Del("_format")
	if len(q) == 0 {
		return errorf(http.StatusMethodNotAllowed, "DELETE needs an id, or search parameters for a conditional delete")
	}
	res, err := s.fhir.ConditionalDelete(r.Context(), org, r.PathValue("type"), q.Encode(), s.fhirWriteOptions(r, org, "fhir.delete", http.StatusNoContent))
	if err != nil {
		return fhirError(err)
	}
	setVersionHeaders(w, res.ETag(), res.LastModified)
	writeFHIR(w, http.StatusNoContent, nil)
	return nil
}

// answerWrite answers a create or update.
func (s *Server) answerWrite(w http.ResponseWriter, r *http.Request, org string, res fhir.EntryResult) error {
	if loc := res.Location(); loc != "" {
		w.Header().Set("Location", fhirBase(r)+"/"+loc)
		w.Header().Set("Content-Location", fhirBase(r)+"/"+loc)
	}
	setVersionHeaders(w, res.ETag(), res.LastModified)
	prefer := r.Header.Get("Prefer")
	switch {
	case strings.Contains(prefer, "return=minimal"):
		writeFHIR(w, res.Status, nil)
	case strings.Contains(prefer, "return=OperationOutcome"):
		writeFHIR(w, res.Status, fhir.AppendOutcome(nil, res.Warnings))
	case res.Resource != nil:
		writeFHIR(w, res.Status, res.Resource)
	default:
		// A conditional create that found its match: show the match.
		v, err := s.fhir.Read(r.Context(), org, res.Type, res.ID)
		if err != nil {
			return fhirError(err)
		}
		body, err := s.fhir.Body(r.Context(), v)
		if err != nil {
			return err
		}
		writeFHIR(w, res.Status, body)
	}
	return nil
}

// fhirRead is GET /fhir/{type}/{id}.
func (s *Server) fhirRead(w http.ResponseWriter, r *http.Request) error {
	setAuditAction(r, "fhir.read")
	return s.readVersion(w, r, 0)
}

// fhirVRead is GET /fhir/{type}/{id}/_history/{vid}.
func (s *Server) fhirVRead(w http.ResponseWriter, r *http.Request) error {
	setAuditAction(r, "fhir.vread")
	vid, err := strconv.Atoi(r.PathValue("vid"))
	if err != nil || vid < 1 {
		return errorf(http.StatusNotFound, "no such version")
	}
	return s.readVersion(w, r, vid)
}

// readVersion reads the current version (vid 0) or version vid. The
// policy decides with what the index knows of the resource before its
// content is read.
func (s *Server) readVersion(w http.ResponseWriter, r *http.Request, vid int) error {
	if err := fhirAccept(r); err != nil {
		return err
	}
	org, err := fhirScope(r)
	if err != nil {
		return err
	}
	typ, id := r.PathValue("type"), r.PathValue("id")
	var v fhir.Version
	if vid == 0 {
		v, err = s.fhir.Read(r.Context(), org, typ, id)
	} else {
		v, err = s.fhir.VRead(r.Context(), org, typ, id, vid)
	}
	if _, aerr := s.authorize(r, s.fhirInput(policy.ActionFHIRRead, org, typ, id, v.Patient, v.Labels)); aerr != nil {
		return notFoundOnDeny(aerr)
	}
	if err != nil {
		if errors.Is(err, fhir.ErrDeleted) {
			setVersionHeaders(w, v.ETag(), v.LastUpdated)
		}
		return fhirError(err)
	}
	if inm := r.Header.Get("If-None-Match"); inm != "" && inm == v.ETag() {
		setVersionHeaders(w, v.ETag(), v.LastUpdated)
		w.WriteHeader(http.StatusNotModified)
		return nil
	}
	body, err := s.fhir.Body(r.Context(), v)
	if err != nil {
		return err
	}
	setVersionHeaders(w, v.ETag(), v.LastUpdated)
	writeFHIR(w, http.StatusOK, body)
	return nil
}

// fhirHistory is GET /fhir/{type}/{id}/_history.
func (s *Server) fhirHistory(w http.ResponseWriter, r *http.Request) error {
	setAuditAction(r, "fhir.history")
	if err := fhirAccept(r); err != nil {
		return err
	}
	org, err := fhirScope(r)
	if err != nil {
		return err
	}
	typ, id := r.PathValue("type"), r.PathValue("id")
	vs, err := s.fhir.History(r.Context(), org, typ, id)
	var patient string
	var labels []string
	if len(vs) > 0 {
		patient, labels = vs[0].Patient, vs[0].Labels
	}
	if _, aerr := s.authorize(r, s.fhirInput(policy.ActionFHIRRead, org, typ, id, patient, labels)); aerr != nil {
		return notFoundOnDeny(aerr)
	}
	if err != nil {
		return fhirError(err)
	}
	var live []fhir.Version
	for _, v := range vs {
		if !v.Deleted {
			live = append(live, v)
		}
	}
	bodies := map[int][]byte{}
	i := 0
	for b, err := range s.fhir.Bodies(r.Context(), live) {
		if err != nil {
			return err
		}
		bodies[live[i].VersionID] = b
		i++
	}
	w.Header().Set("Content-Type", fhirJSON+"; charset=utf-8")
	w.WriteHeader(http.StatusOK)
	bw := fhir.NewBundleWriter(w, "history", len(vs), []fhir.Link{{Relation: "self", URL: fhirBase(r) + "/" + typ + "/" + id + "/_history"}})
	for _, v := range vs {
		if err := bw.AddHistory(fhir.FullURL(fhirBase(r), typ, id), v, bodies[v.VersionID]); err != nil {
			return nil // the client went away; the status is sent
		}
	}
	_ = bw.Close()
	return nil
}

// fhirSearch is GET /fhir/{type}?….
func (s *Server) fhirSearch(w http.ResponseWriter, r *http.Request) error {
	setAuditAction(r, "fhir.search")
	if err := fhirAccept(r); err != nil {
		return err
	}
	org, err := fhirScope(r)
	if err != nil {
		return err
	}
	typ := r.PathValue("type")
	q, err := fhir.ParseQuery(typ, r.URL.Query())
	if err != nil {
		return fhirError(err)
	}
	if _, err := s.authorize(r, s.fhirInput(policy.ActionFHIRSearch, org, typ, "", q.Patient, nil)); err != nil {
		return err
	}
	total, page, err := s.fhir.Search(r.Context(), org, q)
	if err != nil {
		return fhirError(err)
	}
	links := []fhir.Link{{Relation: "self", URL: pageURL(r, q, q.Offset)}}
	if q.Offset+q.Count < total && q.Count > 0 {
		links = append(links, fhir.Link{Relation: "next", URL: pageURL(r, q, q.Offset+q.Count)})
	}
	if q.Offset > 0 {
		links = append(links, fhir.Link{Relation: "previous", URL: pageURL(r, q, max(q.Offset-q.Count, 0))})
	}
	return s.streamBundle(w, r, "searchset", total, links, page)
}

// pageURL is the search's URL at offset.
func pageURL(r *http.Request, q fhir.Query, offset int) string {
	v := url.Values{}
	for k, vals := range r.URL.Query() {
		if k != "_offset" && k != "_count" {
			v[k] = vals
		}
	}
	v.Set("_count", strconv.Itoa(q.Count))
	v.Set("_offset", strconv.Itoa(offset))
	return fhirBase(r) + "/" + q.Type + "?" + v.Encode()
}

// streamBundle writes a searchset of vs, reading their bodies as it goes.
func (s *Server) streamBundle(w http.ResponseWriter, r *http.Request, typ string, total int, links []fhir.Link, vs []fhir.Version) error {
	next, stop := iter.Pull2(s.fhir.Bodies(r.Context(), vs))
	defer stop()
	// Read the first body before the status goes out, so that a storage
	// failure can still be answered as an error.
	first, ferr, ok := next()
	if ok && ferr != nil {
		return ferr
	}
	w.Header().Set("Content-Type", fhirJSON+"; charset=utf-8")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(http.StatusOK)
	bw := fhir.NewBundleWriter(w, typ, total, links)
	base := fhirBase(r)
	for i := 0; ok; i++ {
		if ferr != nil {
			// The status is sent: cut the body short so the client sees
			// invalid JSON rather than a Bundle that looks complete.
			s.log.Error("FHIR bundle cut short", "request_id", RequestID(r.Context()), "err", ferr.Error())
			panic(http.ErrAbortHandler)
		}
		if err := bw.Add(fhir.FullURL(base, vs[i].Type, vs[i].ID), first); err != nil {
			return nil // the client went away
		}
		first, ferr, ok = next()
	}
	_ = bw.Close()
	return nil
}

// fhirEverything is GET /fhir/Patient/{id}/$everything.
func (s *Server) fhirEverything(w http.ResponseWriter, r *http.Request) error {
	setAuditAction(r, "fhir.everything")
	if err := fhirAccept(r); err != nil {
		return err
	}
	org, err := fhirScope(r)
	if err != nil {
		return err
	}
	id := r.PathValue("id")
	vs, err := s.fhir.Everything(r.Context(), org, id)
	var labels []string
	if len(vs) > 0 && vs[0].Type == "Patient" {
		labels = vs[0].Labels
	}
	if _, aerr := s.authorize(r, s.fhirInput(policy.ActionFHIRRead, org, "Patient", id, id, labels)); aerr != nil {
		return notFoundOnDeny(aerr)
	}
	if err != nil {
		return fhirError(err)
	}
	return s.streamBundle(w, r, "searchset", len(vs), []fhir.Link{{Relation: "self", URL: fhirBase(r) + "/Patient/" + id + "/$everything"}}, vs)
}

// fhirError gives package fhir's failures their HTTP status. Policy
// refusals keep theirs (403 with reasons).
func fhirError(err error) error {
	if err == nil || isDenied(err) {
		return err
	}
	if k := fhir.KindOf(err); k != nil {
		return withStatus(fhir.HTTPStatus(err), err.Error(), err)
	}
	return err
}

// fhirNotFound answers unknown paths under /fhir.
func (s *Server) fhirNotFound(w http.ResponseWriter, r *http.Request) error {
	return errorf(http.StatusNotFound, "no such FHIR interaction: see /fhir/metadata")
}

// knownType answers 404 for paths whose type is not an R4 resource type.
func knownType(h handlerFunc) handlerFunc {
	return func(w http.ResponseWriter, r *http.Request) error {
		if !fhir.KnownType(r.PathValue("type")) {
			return errorf(http.StatusNotFound, "not a FHIR R4 resource type")
		}
		return h(w, r)
	}
}
