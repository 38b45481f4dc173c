package gateway

import (
	"context"
	"errors"
	"net/http"
	"time"

	"github.com/consilium/consilium/cases"
	"github.com/consilium/consilium/imaging"
	"github.com/consilium/consilium/policy"
	"github.com/consilium/consilium/storage"
)

// routes registers every route of the gateway. Everything needs a client
// certificate except the two probes.
func (s *Server) routes() *http.ServeMux {
	mux := http.NewServeMux()
	mux.Handle("GET /healthz", s.wrap(s.healthz, public()))
	mux.Handle("GET /readyz", s.wrap(s.readyz, public()))
	mux.Handle("GET /whoami", s.wrap(s.whoami))
	mux.Handle("GET /metrics", s.wrap(s.metricsRoute, unaudited()))
	mux.Handle("GET /audit", s.wrap(s.auditSearch))
	mux.Handle("GET /audit/verify", s.wrap(s.auditVerify))
	mux.Handle("GET /audit/export", s.wrap(s.auditExport))
	mux.Handle("GET /policies", s.wrap(s.listPolicies))
	mux.Handle("PUT /policies/{version}", s.wrap(s.putPolicy, maxBody(maxBundleBytes)))
	mux.Handle("POST /policies/{version}/activate", s.wrap(s.activatePolicy))
	mux.Handle("POST /policies/{version}/dry-run", s.wrap(s.dryRunPolicy))
	// FHIR R4 REST (gateway/fhir*.go). NDJSON to POST /fhir streams; its
	// JSON bodies are bounded in the handler.
	fhirBody := maxBody(s.cfg.FHIR.MaxBodyBytes)
	mux.Handle("GET /fhir/metadata", s.wrap(s.fhirMetadata, fhirRoute()...))
	mux.Handle("POST /fhir", s.wrap(s.fhirPostBase, fhirRoute(maxBody(-1))...))
	mux.Handle("POST /fhir/{$}", s.wrap(s.fhirPostBase, fhirRoute(maxBody(-1))...))
	mux.Handle("POST /fhir/{type}", s.wrap(knownType(s.fhirCreate), fhirRoute(fhirBody)...))
	mux.Handle("PUT /fhir/{type}", s.wrap(knownType(s.fhirConditionalUpdate), fhirRoute(fhirBody)...))
	mux.Handle("PUT /fhir/{type}/{id}", s.wrap(knownType(s.fhirUpdate), fhirRoute(fhirBody)...))
	mux.Handle("DELETE /fhir/{type}", s.wrap(knownType(s.fhirConditionalDelete), fhirRoute()...))
	mux.Handle("DELETE /fhir/{type}/{id}", s.wrap(knownType(s.fhirDelete), fhirRoute()...))
	mux.Handle("GET /fhir/{type}", s.wrap(knownType(s.fhirSearch), fhirRoute()...))
	mux.Handle("GET /fhir/{type}/{id}", s.wrap(knownType(s.fhirRead), fhirRoute()...))
	mux.Handle("GET /fhir/{type}/{id}/_history", s.wrap(knownType(s.fhirHistory), fhirRoute()...))
	mux.Handle("GET /fhir/{type}/{id}/_history/{vid}", s.wrap(knownType(s.fhirVRead), fhirRoute()...))
	mux.Handle("GET /fhir/Patient/{id}/$everything", s.wrap(s.fhirEverything, fhirRoute()...))
	mux.Handle("/fhir", s.wrap(s.fhirNotFound, fhirRoute()...))
	mux.Handle("/fhir/", s.wrap(s.fhirNotFound, fhirRoute()...))
	// DICOMweb (dicomweb.go): STOW-RS, QIDO-RS, WADO-RS. Errors in DICOM JSON.
	dw := renderErrors(renderDICOMError)
	const study, series, sop = "/dicomweb/studies/{study}", "/series/{series}", "/instances/{sop}"
	mux.Handle("POST /dicomweb/studies", s.wrap(s.stow, maxBody(-1), dw))
	mux.Handle("POST "+study, s.wrap(s.stow, maxBody(-1), dw))
	mux.Handle("GET /dicomweb/studies", s.wrap(s.qido(imaging.StudyLevel), dw))
	mux.Handle("GET "+study+"/series", s.wrap(s.qido(imaging.SeriesLevel), dw))
	mux.Handle("GET "+study+"/instances", s.wrap(s.qido(imaging.InstanceLevel), dw))
	mux.Handle("GET "+study+series+"/instances", s.wrap(s.qido(imaging.InstanceLevel), dw))
	mux.Handle("GET "+study, s.wrap(s.wado, dw))
	mux.Handle("GET "+study+series, s.wrap(s.wado, dw))
	mux.Handle("GET "+study+series+sop, s.wrap(s.wado, dw))
	mux.Handle("GET "+study+"/metadata", s.wrap(s.wadoMetadata, dw))
	mux.Handle("GET "+study+series+"/metadata", s.wrap(s.wadoMetadata, dw))
	mux.Handle("GET "+study+series+sop+"/metadata", s.wrap(s.wadoMetadata, dw))
	mux.Handle("GET "+study+series+sop+"/bulkdata/{tag}", s.wrap(s.wadoBulkData, dw))
	mux.Handle("/dicomweb/", s.wrap(s.notFound, dw))
	// The case workflow (cases.go, packets.go, opinions.go).
	caseBody := maxBody(maxCaseBody)
	mux.Handle("POST /cases", s.wrap(s.createCase, caseBody))
	mux.Handle("GET /cases", s.wrap(s.listCases))
	mux.Handle("GET /cases/{id}", s.wrap(s.getCase))
	mux.Handle("POST /cases/{id}/assign", s.wrap(s.assignCase, caseBody))
	mux.Handle("POST /cases/{id}/release", s.wrap(s.releaseCase, caseBody))
	mux.Handle("POST /cases/{id}/cancel", s.wrap(s.endCase(cases.EventCancel, policy.ActionCaseCancel, "case cancelled"), caseBody))
	mux.Handle("POST /cases/{id}/close", s.wrap(s.endCase(cases.EventClose, policy.ActionCaseClose, "case closed"), caseBody))
	mux.Handle("GET /cases/{id}/packet", s.wrap(s.getPacket))
	mux.Handle("POST /cases/{id}/opinions", s.wrap(s.postOpinion, maxBody(maxOpinionBody)))
	mux.Handle("GET /cases/{id}/opinions", s.wrap(s.getOpinions))
	mux.Handle("PUT /principals/{id}/recipient", s.wrap(s.registerRecipient, caseBody))
	mux.Handle("GET /specialists", s.wrap(s.listSpecialists))
	mux.Handle("/", s.wrap(s.notFound))
	return mux
}

func (s *Server) notFound(w http.ResponseWriter, r *http.Request) error {
	return errorf(http.StatusNotFound, "no such route")
}

// healthz answers as long as the process serves HTTP.
func (s *Server) healthz(w http.ResponseWriter, r *http.Request) error {
	writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	return nil
}

// readyz answers 200 when the store and every registered check respond, so
// a load balancer only sends traffic to instances that can serve it.
func (s *Server) readyz(w http.ResponseWriter, r *http.Request) error {
	ctx, cancel := context.WithTimeout(r.Context(), 5*time.Second)
	defer cancel()
	if _, err := s.store.Stat(ctx, "readyz/probe"); err != nil && !errors.Is(err, storage.ErrNotFound) {
		s.log.Warn("not ready: store unreachable", "err", err.Error())
		writeJSON(w, http.StatusServiceUnavailable, map[string]string{"status": "unavailable", "reason": "object store unreachable"})
		return nil
	}
	for _, check := range s.ready {
		if err := check(ctx); err != nil {
			s.log.Warn("not ready", "err", err.Error())
			writeJSON(w, http.StatusServiceUnavailable, map[string]string{"status": "unavailable", "reason": err.Error()})
			return nil
		}
	}
	writeJSON(w, http.StatusOK, map[string]string{"status": "ready"})
	return nil
}

// whoami returns the caller's principal as the gateway sees it.
func (s *Server) whoami(w http.ResponseWriter, r *http.Request) error {
	if _, err := s.authorize(r, policy.Input{Action: policy.ActionWhoAmI, Resource: policy.Resource{Kind: "principal"}}); err != nil {
		return err
	}
	p, _ := PrincipalFrom(r.Context())
	writeJSON(w, http.StatusOK, p)
	return nil
}

func (s *Server) metricsRoute(w http.ResponseWriter, r *http.Request) error {
	if _, err := s.authorize(r, policy.Input{Action: policy.ActionMetricsRead, Resource: policy.Resource{Kind: "metrics"}}); err != nil {
		return err
	}
	s.metricsHandler().ServeHTTP(w, r)
	return nil
}
