package deid

import (
	"errors"
	"fmt"
	"slices"
	"strings"
)

// ErrUnknownProfile is returned by [ParseDICOMProfile] and
// [ParseFHIRProfile] for a profile or option name they do not know, or for
// options that cannot be combined.
var ErrUnknownProfile = errors.New("deid: unknown profile or option")

// Kind says which kind of data a [Profile] applies to.
type Kind string

// Kinds of profile.
const (
	DICOM Kind = "dicom"
	FHIR  Kind = "fhir"
)

// Profile names.
const (
	// Basic is the DICOM PS3.15 Annex E Basic Application Level
	// Confidentiality Profile.
	Basic = "basic"
	// Shifted is the FHIR profile for second opinions (the default): dates
	// shift by the patient's offset so intervals survive, identifiers become
	// keyed pseudonyms. GDPR pseudonymisation.
	Shifted = "shifted"
	// SafeHarbor is the FHIR HIPAA Safe Harbor profile: dates cut to the
	// year, ages over 89 grouped, geography above the state dropped.
	SafeHarbor = "safe-harbor"
)

// Option modifies a profile. DICOM options are the PS3.15 Annex E options;
// each has a CID 7050 code that goes into the De-identification Method Code
// Sequence.
type Option string

// DICOM options (PS3.15 Table E.1-1 columns).
const (
	RetainLongModifiedDates Option = "retain-long-modified-dates"
	RetainLongFullDates     Option = "retain-long-full-dates"
	RetainPatientChars      Option = "retain-patient-chars"
	RetainDeviceID          Option = "retain-device-id"
	RetainInstitutionID     Option = "retain-institution-id"
	RetainUIDs              Option = "retain-uids"
	RetainSafePrivate       Option = "retain-safe-private"
	CleanDescriptors        Option = "clean-descriptors"
	CleanStructuredContent  Option = "clean-structured-content"
)

// FHIR options.
const (
	// KeepFreeText keeps notes, comments and other free text (Annotation,
	// CodeableConcept.text, descriptions). Narrative text is always dropped.
	KeepFreeText Option = "keep-free-text"
)

// Code is a coded concept (value, scheme, meaning), here a CID 7050
// de-identification method.
type Code struct {
	Value   string
	Scheme  string
	Meaning string
}

// cid7050 holds the CID 7050 codes of the profile and its options.
var cid7050 = map[Option]Code{
	Basic:                   {"113100", "DCM", "Basic Application Confidentiality Profile"},
	CleanStructuredContent:  {"113104", "DCM", "Clean Structured Content Option"},
	CleanDescriptors:        {"113105", "DCM", "Clean Descriptors Option"},
	RetainLongFullDates:     {"113106", "DCM", "Retain Longitudinal Temporal Information Full Dates Option"},
	RetainLongModifiedDates: {"113107", "DCM", "Retain Longitudinal Temporal Information Modified Dates Option"},
	RetainPatientChars:      {"113108", "DCM", "Retain Patient Characteristics Option"},
	RetainDeviceID:          {"113109", "DCM", "Retain Device Identity Option"},
	RetainUIDs:              {"113110", "DCM", "Retain UIDs Option"},
	RetainSafePrivate:       {"113111", "DCM", "Retain Safe Private Option"},
	RetainInstitutionID:     {"113112", "DCM", "Retain Institution Identity Option"},
}

var fhirOptions = []Option{KeepFreeText}

// Profile is a de-identification profile with its options. The zero value
// is not valid; use [ParseDICOMProfile] or [ParseFHIRProfile].
type Profile struct {
	// Kind is DICOM or FHIR.
	Kind Kind
	// Name is Basic for DICOM; Shifted or SafeHarbor for FHIR.
	Name string
	// Options are the options in effect, sorted, without duplicates.
	Options []Option
}

// ParseDICOMProfile parses the CLI form "basic[,option...]", for example
// "basic,retain-long-modified-dates,retain-patient-chars". It returns
// ErrUnknownProfile for an unknown name or option and when both date
// options are given.
func ParseDICOMProfile(s string) (Profile, error) {
	name, opts, err := split(s)
	if err != nil {
		return Profile{}, err
	}
	if name != Basic {
		return Profile{}, fmt.Errorf("%w: DICOM profile %q (want %q)", ErrUnknownProfile, name, Basic)
	}
	for _, o := range opts {
		if _, ok := cid7050[o]; !ok || o == Basic {
			return Profile{}, fmt.Errorf("%w: DICOM option %q", ErrUnknownProfile, o)
		}
	}
	if slices.Contains(opts, RetainLongFullDates) && slices.Contains(opts, RetainLongModifiedDates) {
		return Profile{}, fmt.Errorf("%w: %s and %s exclude each other", ErrUnknownProfile, RetainLongFullDates, RetainLongModifiedDates)
	}
	return Profile{Kind: DICOM, Name: Basic, Options: opts}, nil
}

// ParseFHIRProfile parses "shifted" or "safe-harbor", optionally followed by
// ",keep-free-text". The empty string means "shifted".
func ParseFHIRProfile(s string) (Profile, error) {
	if strings.TrimSpace(s) == "" {
		s = Shifted
	}
	name, opts, err := split(s)
	if err != nil {
		return Profile{}, err
	}
	if name != Shifted && name != SafeHarbor {
		return Profile{}, fmt.Errorf("%w: FHIR profile %q (want %q or %q)", ErrUnknownProfile, name, Shifted, SafeHarbor)
	}
	for _, o := range opts {
		if !slices.Contains(fhirOptions, o) {
			return Profile{}, fmt.Errorf("%w: FHIR option %q", ErrUnknownProfile, o)
		}
	}
	return Profile{Kind: FHIR, Name: name, Options: opts}, nil
}

func split(s string) (string, []Option, error) {
	parts := strings.Split(s, ",")
	name := strings.TrimSpace(parts[0])
	if name == "" {
		return "", nil, fmt.Errorf("%w: empty profile", ErrUnknownProfile)
	}
	var opts []Option
	for _, p := range parts[1:] {
		p = strings.TrimSpace(p)
		if p == "" {
			return "", nil, fmt.Errorf("%w: empty option in %q", ErrUnknownProfile, s)
		}
		if !slices.Contains(opts, Option(p)) {
			opts = append(opts, Option(p))
		}
	}
	slices.Sort(opts)
	return name, opts, nil
}

// Has reports whether the option is in effect.
func (p Profile) Has(o Option) bool { return slices.Contains(p.Options, o) }

// String returns the CLI form, which [ParseDICOMProfile] or
// [ParseFHIRProfile] parses back.
func (p Profile) String() string {
	var b strings.Builder
	b.WriteString(p.Name)
	for _, o := range p.Options {
		b.WriteByte(',')
		b.WriteString(string(o))
	}
	return b.String()
}

// Codes returns the CID 7050 codes of a DICOM profile: the Basic Profile
// first, then one per option, for the De-identification Method Code
// Sequence. FHIR profiles have none.
func (p Profile) Codes() []Code {
	if p.Kind != DICOM {
		return nil
	}
	codes := []Code{cid7050[Basic]}
	for _, o := range p.Options {
		codes = append(codes, cid7050[o])
	}
	return codes
}
