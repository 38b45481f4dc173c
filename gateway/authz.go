package gateway

import (
	"net/http"
	"time"

	"github.com/consilium/consilium/certs"
	"github.com/consilium/consilium/policy"
)

// authorize is the policy enforcement point. Every handler calls it before
// touching data, with the action and whatever it knows about the resource,
// case, recipient and consents; authorize fills in the caller and the time,
// asks the engine, remembers the decision for the audit trail, and returns
// it. A deny comes back as an error (a *policy.DeniedError) that renders as
// 403 with the policy's reasons; handlers that must not confirm that a
// record exists (another organisation's FHIR or DICOM data) turn it into
// 404 themselves with [notFoundOnDeny].
//
// An engine failure (invalid input, a broken bundle) also refuses: deny by
// default.
func (s *Server) authorize(r *http.Request, in policy.Input) (policy.Decision, error) {
	p, _ := PrincipalFrom(r.Context())
	in.Principal = policyPrincipal(p)
	if in.Time.IsZero() {
		in.Time = time.Now()
	}
	d, err := s.policy.Decide(r.Context(), in)
	ri := requestInfoFrom(r.Context())
	ri.decisions = append(ri.decisions, decisionRecord{action: in.Action, decision: d})
	if err != nil {
		return d, withStatus(http.StatusInternalServerError, "the policy engine could not decide", err)
	}
	if err := d.Err(); err != nil {
		return d, err
	}
	return d, nil
}

// notFoundOnDeny turns a policy deny into 404, so that a caller cannot
// learn whether another organisation's record exists. Other errors pass.
func notFoundOnDeny(err error) error {
	if isDenied(err) {
		return withStatus(http.StatusNotFound, "not found", err)
	}
	return err
}

// policyPrincipal converts the certificate's principal to the policy's.
func policyPrincipal(p certs.Principal) policy.Principal {
	return policy.Principal{
		ID: p.ID, Org: p.Org, Role: string(p.Role), Country: p.Country,
		Specialty: p.Specialty, Languages: p.Languages,
	}
}

// decisionRecord is one policy decision taken while serving a request.
type decisionRecord struct {
	action   policy.Action
	decision policy.Decision
}
