package gateway

import (
	"net/http"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/consilium/consilium/audit"
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
		setAuditDecision(r, audit.Decision{Allow: false, Reasons: []string{"the policy engine could not decide"}, PolicyVersion: d.PolicyVersion})
	} else {
		setAuditDecision(r, audit.Decision{Allow: d.Allow, Reasons: auditReasons(d.Reasons), InputDigest: d.InputDigest, PolicyVersion: d.PolicyVersion})
	}
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

// auditReasons fits a decision's reasons into the audit entry's limits
// (a custom policy bundle may say more): at most 32 reasons of at most 500
// bytes, control characters replaced.
func auditReasons(reasons []string) []string {
	const maxReasons, maxLen = 32, 500
	if len(reasons) > maxReasons {
		reasons = reasons[:maxReasons]
	}
	out := make([]string, 0, len(reasons))
	for _, r := range reasons {
		r = strings.Map(func(c rune) rune {
			if c < 0x20 || c == 0x7f || c == utf8.RuneError {
				return ' '
			}
			return c
		}, strings.ToValidUTF8(r, " "))
		if len(r) > maxLen {
			r = strings.ToValidUTF8(r[:maxLen], "") // drops a cut rune
		}
		out = append(out, r)
	}
	return out
}
