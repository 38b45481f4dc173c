package policy

import (
	"errors"
	"fmt"
	"strings"
	"time"
)

// ErrDenied is what [Decision.Err] wraps when a decision denies. Callers that
// prefer errors branch on it with errors.Is; [DeniedError] carries the
// reasons.
var ErrDenied = errors.New("policy: denied")

// Decision is the policy's answer to one [Input].
type Decision struct {
	// Allow is true when the request may go ahead.
	Allow bool `json:"allow"`
	// Reasons say why, for an allow (the grants and the consent and
	// transfer basis) and for a deny (every failed condition). Human
	// readable; safe to show to the caller.
	Reasons []string `json:"reasons"`
	// Obligations are what the caller must do when it acts on an allow.
	Obligations Obligations `json:"obligations"`
	// InputDigest is the hex SHA-256 of the canonical JSON encoding of the
	// normalised input, for the audit trail.
	InputDigest string `json:"input_digest"`
	// PolicyVersion is the bundle version that decided.
	PolicyVersion string `json:"policy_version"`
}

// De-identification profiles an allow can require ([Obligations.DeidProfile]).
const (
	// ProfileShifted is GDPR pseudonymisation: keyed pseudonyms, dates
	// shifted by one per-patient offset.
	ProfileShifted = "shifted"
	// ProfileSafeHarbor is HIPAA Safe Harbor: the 18 identifiers removed,
	// dates cut to the year.
	ProfileSafeHarbor = "safe-harbor"
)

// Obligations come with an allow that shares patient data with a specialist
// (case.release, packet.read, a specialist's case.read); other allows carry
// at most an expiry.
type Obligations struct {
	// DeidProfile is the de-identification profile the packet must be
	// built with: "shifted" or "safe-harbor"; empty when nothing is shared.
	DeidProfile string `json:"deid_profile,omitempty"`
	// DeidOptions are PS3.15 options to apply on top of the profile
	// (retain-long-modified-dates, clean-descriptors, clean-graphics,
	// clean-structured-content, …).
	DeidOptions []string `json:"deid_options,omitempty"`
	// ExcludeLabels are meta.security codes (PSY, HIV, …) whose resources
	// must be left out of what is shared.
	ExcludeLabels []string `json:"exclude_labels,omitempty"`
	// WithholdBurnedIn says to leave out DICOM instances whose pixels may
	// carry burned-in text (BurnedInAnnotation YES or absent).
	WithholdBurnedIn bool `json:"withhold_burned_in,omitempty"`
	// Expires is when the grant ends (RFC 3339): the case deadline or the
	// consent's end, whichever is first; empty for no end.
	Expires string `json:"expires,omitempty"`
}

// ExpiresAt returns Expires as a time; ok is false when there is none.
func (o Obligations) ExpiresAt() (t time.Time, ok bool) {
	if o.Expires == "" {
		return time.Time{}, false
	}
	t, err := time.Parse(time.RFC3339Nano, o.Expires)
	return t, err == nil
}

// Err returns nil for an allow and a [*DeniedError] (which matches
// [ErrDenied]) for a deny.
func (d Decision) Err() error {
	if d.Allow {
		return nil
	}
	return &DeniedError{Reasons: d.Reasons, PolicyVersion: d.PolicyVersion}
}

// DeniedError is a deny as an error. It matches [ErrDenied].
type DeniedError struct {
	Reasons       []string
	PolicyVersion string
}

func (e *DeniedError) Error() string {
	if len(e.Reasons) == 0 {
		return "policy: denied"
	}
	return fmt.Sprintf("policy: denied: %s", strings.Join(e.Reasons, "; "))
}

// Unwrap makes errors.Is(err, ErrDenied) hold.
func (e *DeniedError) Unwrap() error { return ErrDenied }
