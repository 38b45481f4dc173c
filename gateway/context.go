package gateway

import (
	"context"

	"github.com/consilium/consilium/certs"
)

// requestInfo is what the gateway learns about a request while serving it.
// The outermost middleware creates it; inner layers fill it in, and the
// access log reads it at the end.
type requestInfo struct {
	id        string
	principal *certs.Principal
	// decisions are the policy decisions taken for the request, in order.
	decisions []decisionRecord
	// render, when set, writes error answers in the route family's own
	// format (OperationOutcome on FHIR routes, DICOM JSON on DICOMweb).
	render errorRenderer
	// audit is what the handler tells the audit hook (audit.go).
	audit auditState
}

type requestInfoKey struct{}

func withRequestInfo(ctx context.Context, ri *requestInfo) context.Context {
	return context.WithValue(ctx, requestInfoKey{}, ri)
}

func requestInfoFrom(ctx context.Context) *requestInfo {
	ri, _ := ctx.Value(requestInfoKey{}).(*requestInfo)
	if ri == nil {
		return &requestInfo{}
	}
	return ri
}

// RequestID returns the id the gateway gave the request in ctx, or "".
func RequestID(ctx context.Context) string { return requestInfoFrom(ctx).id }

// PrincipalFrom returns the authenticated caller of the request in ctx.
// ok is false on public routes (health probes).
func PrincipalFrom(ctx context.Context) (p certs.Principal, ok bool) {
	ri := requestInfoFrom(ctx)
	if ri.principal == nil {
		return certs.Principal{}, false
	}
	return *ri.principal, true
}
