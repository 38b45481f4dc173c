package policy

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"
)

// Conventions Consilium adds to FHIR R4 Consent. See README.md of the
// default bundle for examples.
const (
	// RecipientCountryExtension is the URL of the extension on
	// Consent.provision that limits the countries a permit (or a deny)
	// applies to. It repeats; each valueCode is an ISO 3166-1 alpha-2 code
	// in upper case. Absent means any country the cross-border table
	// allows.
	RecipientCountryExtension = "https://consilium.health/fhir/StructureDefinition/recipient-country"
	// PurposeCodeSystem is Consilium's code system for purposes of use
	// that v3-ActReason lacks; its one code is "second-opinion".
	PurposeCodeSystem = "https://consilium.health/fhir/CodeSystem/purpose"
	// ActReasonCodeSystem is HL7 v3 ActReason, where TREAT (treatment) is
	// the purpose a second opinion falls under.
	ActReasonCodeSystem = "http://terminology.hl7.org/CodeSystem/v3-ActReason"
	// ActCodeSystem is HL7 v3 ActCode, where Consent.policyRule codes
	// OPTIN, OPTINR, OPTOUT and OPTOUTE live.
	ActCodeSystem = "http://terminology.hl7.org/CodeSystem/v3-ActCode"
	// ConsentActionSystem holds Consent.provision.action codes.
	ConsentActionSystem = "http://terminology.hl7.org/CodeSystem/consentaction"
)

// MaxConsentSize is the largest Consent resource [ConsentFromFHIR] reads.
const MaxConsentSize = 1 << 20

// maxProvisionDepth bounds the nesting of Consent.provision that
// [ConsentFromFHIR] follows.
const maxProvisionDepth = 16

// ErrInvalidConsent is returned by [ConsentFromFHIR] for input that is not a
// FHIR R4 Consent resource in JSON.
var ErrInvalidConsent = errors.New("policy: invalid consent")

// Consent is a patient's FHIR R4 Consent as the policy sees it, normalised
// by [ConsentFromFHIR]. Only the root provision grants or refuses; nested
// deny provisions with security labels exclude data classes; anything
// Consilium cannot interpret is listed in Uninterpreted, and the default
// policy then refuses to share on the strength of that consent, and blocks
// sharing while it is active (a restriction it cannot read must not be
// ignored).
type Consent struct {
	// ID is the Consent resource id.
	ID string `json:"id"`
	// Status is Consent.status: draft, proposed, active, rejected,
	// inactive or entered-in-error. Only "active" counts; revoking a
	// consent means setting it to inactive.
	Status string `json:"status"`
	// Scope is the code of Consent.scope (patient-privacy, treatment, …).
	Scope string `json:"scope"`
	// Decision is "permit" or "deny": Consent.provision.type of the root
	// provision, or else from Consent.policyRule (v3-ActCode OPTIN and
	// OPTINR permit, OPTOUT and OPTOUTE deny); empty when neither says.
	Decision string `json:"decision"`
	// Start is when the root provision's period starts (RFC 3339,
	// inclusive); empty for no start. A date without time starts at 00:00
	// UTC.
	Start string `json:"start"`
	// End is when the period ends (RFC 3339, exclusive); empty for no end.
	// A partial date ends at the end of that year, month or day (UTC).
	End string `json:"end"`
	// Purposes are the root provision's purposes as "system|code" tokens,
	// for example "http://terminology.hl7.org/CodeSystem/v3-ActReason|TREAT";
	// a coding without system gives "|code".
	Purposes []string `json:"purposes"`
	// RecipientCountries are the values of [RecipientCountryExtension] on
	// the root provision; empty for no limit.
	RecipientCountries []string `json:"recipient_countries"`
	// ExcludeLabels are the security-label codes of nested deny provisions
	// (PSY, HIV, ETH, SEX, …): data carrying them must be left out.
	ExcludeLabels []string `json:"exclude_labels"`
	// Uninterpreted names the parts of the consent that Consilium cannot
	// interpret; empty when it understood all of it.
	Uninterpreted []string `json:"uninterpreted"`
}

// Minimal FHIR R4 structures: only what the policy needs, so that parsing is
// fast and nothing else of the resource is retained.
type (
	fhirConsent struct {
		ResourceType      string            `json:"resourceType"`
		ID                string            `json:"id"`
		Status            string            `json:"status"`
		Scope             *fhirConcept      `json:"scope"`
		PolicyRule        *fhirConcept      `json:"policyRule"`
		Provision         *fhirProvision    `json:"provision"`
		ModifierExtension []json.RawMessage `json:"modifierExtension"`
	}
	fhirConcept struct {
		Coding []fhirCoding `json:"coding"`
	}
	fhirCoding struct {
		System string `json:"system"`
		Code   string `json:"code"`
	}
	fhirPeriod struct {
		Start string `json:"start"`
		End   string `json:"end"`
	}
	fhirExtension struct {
		URL       string  `json:"url"`
		ValueCode *string `json:"valueCode"`
	}
	fhirProvision struct {
		Type              string            `json:"type"`
		Period            *fhirPeriod       `json:"period"`
		Purpose           []fhirCoding      `json:"purpose"`
		SecurityLabel     []fhirCoding      `json:"securityLabel"`
		Action            []fhirConcept     `json:"action"`
		Extension         []fhirExtension   `json:"extension"`
		ModifierExtension []json.RawMessage `json:"modifierExtension"`
		Provision         []fhirProvision   `json:"provision"`
		// Conditions the policy does not interpret; their presence on
		// the root provision makes the consent uninterpreted.
		Actor      json.RawMessage `json:"actor"`
		Class      json.RawMessage `json:"class"`
		Code       json.RawMessage `json:"code"`
		DataPeriod json.RawMessage `json:"dataPeriod"`
		Data       json.RawMessage `json:"data"`
	}
)

// ConsentFromFHIR reads a FHIR R4 Consent resource (JSON) and normalises it
// for the policy input. It returns [ErrInvalidConsent] when raw is not JSON,
// not a Consent, lacks an id, or is larger than [MaxConsentSize]. Content it
// cannot interpret (an unknown modifier extension, provision conditions
// other than security labels, a bad date or country code) does not fail: it
// is listed in [Consent.Uninterpreted], which the default policy treats as
// blocking.
func ConsentFromFHIR(raw []byte) (Consent, error) {
	if len(raw) > MaxConsentSize {
		return Consent{}, fmt.Errorf("%w: %d bytes is more than %d", ErrInvalidConsent, len(raw), MaxConsentSize)
	}
	var fc fhirConsent
	dec := json.NewDecoder(bytes.NewReader(raw))
	if err := dec.Decode(&fc); err != nil {
		return Consent{}, fmt.Errorf("%w: %v", ErrInvalidConsent, err)
	}
	if dec.More() {
		return Consent{}, fmt.Errorf("%w: data after the resource", ErrInvalidConsent)
	}
	if fc.ResourceType != "Consent" {
		return Consent{}, fmt.Errorf("%w: resourceType is %q, not Consent", ErrInvalidConsent, fc.ResourceType)
	}
	if fc.ID == "" {
		return Consent{}, fmt.Errorf("%w: no id", ErrInvalidConsent)
	}
	c := Consent{
		ID:                 fc.ID,
		Status:             fc.Status,
		Purposes:           []string{},
		RecipientCountries: []string{},
		ExcludeLabels:      []string{},
		Uninterpreted:      []string{},
	}
	if fc.Scope != nil && len(fc.Scope.Coding) > 0 {
		c.Scope = fc.Scope.Coding[0].Code
	}
	if len(fc.ModifierExtension) > 0 {
		c.Uninterpreted = append(c.Uninterpreted, "modifierExtension")
	}
	c.Decision = policyRuleDecision(fc.PolicyRule)
	if p := fc.Provision; p != nil {
		c.readRoot(p)
	}
	c.Purposes = sortedUnique(c.Purposes)
	c.RecipientCountries = sortedUnique(c.RecipientCountries)
	c.ExcludeLabels = sortedUnique(c.ExcludeLabels)
	return c, nil
}

// policyRuleDecision maps Consent.policyRule to permit or deny.
func policyRuleDecision(rule *fhirConcept) string {
	if rule == nil {
		return ""
	}
	for _, cd := range rule.Coding {
		if cd.System != ActCodeSystem {
			continue
		}
		switch cd.Code {
		case "OPTIN", "OPTINR":
			return "permit"
		case "OPTOUT", "OPTOUTE":
			return "deny"
		}
	}
	return ""
}

func (c *Consent) readRoot(p *fhirProvision) {
	switch p.Type {
	case "permit", "deny":
		c.Decision = p.Type
	case "":
	default:
		c.Uninterpreted = append(c.Uninterpreted, "provision.type")
	}
	if p.Period != nil {
		var err error
		if c.Start, err = fhirInstant(p.Period.Start, false); err != nil {
			c.Uninterpreted = append(c.Uninterpreted, "provision.period.start")
		}
		if c.End, err = fhirInstant(p.Period.End, true); err != nil {
			c.Uninterpreted = append(c.Uninterpreted, "provision.period.end")
		}
	}
	for _, cd := range p.Purpose {
		if cd.Code == "" {
			continue
		}
		c.Purposes = append(c.Purposes, cd.System+"|"+cd.Code)
	}
	for _, ext := range p.Extension {
		if ext.URL != RecipientCountryExtension {
			continue
		}
		if ext.ValueCode == nil || !countryCode.MatchString(*ext.ValueCode) {
			c.Uninterpreted = append(c.Uninterpreted, "provision.extension[recipient-country]")
			continue
		}
		c.RecipientCountries = append(c.RecipientCountries, *ext.ValueCode)
	}
	if !disclosureCovered(p.Action) {
		c.Uninterpreted = append(c.Uninterpreted, "provision.action")
	}
	for name, v := range map[string]json.RawMessage{
		"actor": p.Actor, "class": p.Class, "code": p.Code, "dataPeriod": p.DataPeriod, "data": p.Data,
	} {
		if len(v) > 0 && string(v) != "null" {
			c.Uninterpreted = append(c.Uninterpreted, "provision."+name)
		}
	}
	if len(p.SecurityLabel) > 0 {
		c.Uninterpreted = append(c.Uninterpreted, "provision.securityLabel")
	}
	if len(p.ModifierExtension) > 0 {
		c.Uninterpreted = append(c.Uninterpreted, "provision.modifierExtension")
	}
	c.readNested(p.Provision, "provision", 1)
	slices.Sort(c.Uninterpreted)
}

// disclosureCovered: a root provision without actions covers every action;
// one with actions must include disclosure, which sharing with a specialist
// is.
func disclosureCovered(actions []fhirConcept) bool {
	if len(actions) == 0 {
		return true
	}
	for _, a := range actions {
		for _, cd := range a.Coding {
			if cd.System == ConsentActionSystem && cd.Code == "disclose" {
				return true
			}
		}
	}
	return false
}

// readNested walks nested provisions. A nested deny with security labels
// excludes those data classes (whatever its other conditions: excluding
// more is the safe reading); a nested deny without them is uninterpreted.
// Nested permits are exceptions that can only widen what the root allows,
// so ignoring them is safe.
func (c *Consent) readNested(ps []fhirProvision, path string, depth int) {
	for i, p := range ps {
		here := fmt.Sprintf("%s.provision[%d]", path, i)
		if depth > maxProvisionDepth {
			c.Uninterpreted = append(c.Uninterpreted, here+": nested too deep")
			return
		}
		if len(p.ModifierExtension) > 0 {
			c.Uninterpreted = append(c.Uninterpreted, here+".modifierExtension")
		}
		switch p.Type {
		case "deny":
			if len(p.SecurityLabel) == 0 {
				c.Uninterpreted = append(c.Uninterpreted, here+": deny without securityLabel")
			}
			for _, cd := range p.SecurityLabel {
				if cd.Code != "" {
					c.ExcludeLabels = append(c.ExcludeLabels, cd.Code)
				}
			}
		case "permit":
		default:
			c.Uninterpreted = append(c.Uninterpreted, here+".type")
		}
		c.readNested(p.Provision, here, depth+1)
	}
}

// fhirInstant turns a FHIR dateTime (YYYY, YYYY-MM, YYYY-MM-DD or a full
// date-time with zone) into RFC 3339 in UTC. For an end (exclusive), a
// partial date becomes the first instant after it.
func fhirInstant(s string, end bool) (string, error) {
	if s == "" {
		return "", nil
	}
	layouts := []struct {
		layout string
		next   func(time.Time) time.Time
	}{
		{"2006", func(t time.Time) time.Time { return t.AddDate(1, 0, 0) }},
		{"2006-01", func(t time.Time) time.Time { return t.AddDate(0, 1, 0) }},
		{"2006-01-02", func(t time.Time) time.Time { return t.AddDate(0, 0, 1) }},
	}
	for _, l := range layouts {
		if len(s) != len(l.layout) {
			continue
		}
		t, err := time.Parse(l.layout, s)
		if err != nil {
			return "", fmt.Errorf("parse date %q: %w", s, err)
		}
		if end {
			t = l.next(t)
		}
		return t.UTC().Format(time.RFC3339Nano), nil
	}
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return "", fmt.Errorf("parse date-time %q: %w", s, err)
	}
	return t.UTC().Format(time.RFC3339Nano), nil
}

// normalize checks a consent built by hand (or decoded from a recorded
// input) and puts it in canonical form.
func (c Consent) normalize() (Consent, error) {
	switch c.Decision {
	case "permit", "deny", "":
	default:
		return c, fmt.Errorf("decision %q is neither permit nor deny", c.Decision)
	}
	for _, t := range []string{c.Start, c.End} {
		if t == "" {
			continue
		}
		if _, err := time.Parse(time.RFC3339Nano, t); err != nil {
			return c, fmt.Errorf("period %q is not RFC 3339", t)
		}
	}
	for _, cc := range c.RecipientCountries {
		if !countryCode.MatchString(cc) {
			return c, fmt.Errorf("recipient country %q is not an ISO 3166-1 alpha-2 code", cc)
		}
	}
	c.Purposes = sortedUnique(c.Purposes)
	c.RecipientCountries = sortedUnique(c.RecipientCountries)
	c.ExcludeLabels = sortedUnique(c.ExcludeLabels)
	c.Uninterpreted = sortedUnique(c.Uninterpreted)
	return c, nil
}

func sortedUnique(s []string) []string {
	out := make([]string, 0, len(s))
	for _, v := range s {
		if v = strings.TrimSpace(v); v != "" {
			out = append(out, v)
		}
	}
	slices.Sort(out)
	return slices.Compact(out)
}
