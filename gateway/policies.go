package gateway

import (
	"net/http"

	"github.com/consilium/consilium/policy"
)

// Policy bundle management for compliance officers. A bundle is an OPA
// bundle archive (tar.gz, as `opa build` makes); it is refused with 422 and
// every problem when it does not compile, has no tests, or a test fails.
// Activation is atomic and every gateway on the same store follows it
// within its poll interval.

// maxBundleBytes bounds an uploaded bundle archive; the policy package
// also bounds its unpacked size.
const maxBundleBytes = 4 << 20

func (s *Server) listPolicies(w http.ResponseWriter, r *http.Request) error {
	if _, err := s.authorize(r, policy.Input{Action: policy.ActionPolicyRead, Resource: policy.Resource{Kind: "policy"}}); err != nil {
		return err
	}
	v, err := s.policy.List(r.Context())
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, v)
	return nil
}

func (s *Server) putPolicy(w http.ResponseWriter, r *http.Request) error {
	version := r.PathValue("version")
	if _, err := s.authorize(r, policy.Input{Action: policy.ActionPolicyWrite, Resource: policy.Resource{Kind: "policy", ID: version}}); err != nil {
		return err
	}
	info, err := s.policy.Upload(r.Context(), version, r.Body)
	if err != nil {
		return err
	}
	w.Header().Set("Location", "/policies/"+version)
	writeJSON(w, http.StatusCreated, info)
	return nil
}

func (s *Server) activatePolicy(w http.ResponseWriter, r *http.Request) error {
	version := r.PathValue("version")
	if _, err := s.authorize(r, policy.Input{Action: policy.ActionPolicyActivate, Resource: policy.Resource{Kind: "policy", ID: version}}); err != nil {
		return err
	}
	a, err := s.policy.Activate(r.Context(), version)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, a)
	return nil
}

func (s *Server) dryRunPolicy(w http.ResponseWriter, r *http.Request) error {
	version := r.PathValue("version")
	if _, err := s.authorize(r, policy.Input{Action: policy.ActionPolicyDryRun, Resource: policy.Resource{Kind: "policy", ID: version}}); err != nil {
		return err
	}
	c, err := s.policy.DryRun(r.Context(), version)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, c)
	return nil
}
