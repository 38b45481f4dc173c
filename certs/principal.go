package certs

import (
	"crypto/x509"
	"errors"
	"fmt"
	"net/url"
	"regexp"
	"slices"
	"strings"
)

// Role is what a principal does in the exchange. It is carried in the
// certificate's OrganizationalUnit.
type Role string

// The four roles of DESIGN.md.
const (
	RoleHospital    Role = "hospital"
	RoleCaseManager Role = "case-manager"
	RoleSpecialist  Role = "specialist"
	RoleCompliance  Role = "compliance"
)

// Roles lists every valid role.
var roles = []Role{RoleHospital, RoleCaseManager, RoleSpecialist, RoleCompliance}

// Valid reports whether r is one of the four roles.
func (r Role) Valid() bool { return slices.Contains(roles, r) }

// URI prefixes of the SAN URIs that carry a specialist's specialty and
// languages.
const (
	specialtyURIPrefix = "urn:consilium:specialty:"
	languageURIPrefix  = "urn:consilium:language:"
)

// ErrInvalidPrincipal is returned when a principal (or the certificate it
// is read from) lacks a required attribute or has a malformed one.
var ErrInvalidPrincipal = errors.New("certs: invalid principal")

// Principal is an authenticated caller, read from a verified client
// certificate: CN is the id, O the organisation, OU the role, C the country,
// and SAN URIs carry the specialty and languages of specialists.
type Principal struct {
	ID        string   `json:"id"`
	Org       string   `json:"org"`
	Role      Role     `json:"role"`
	Country   string   `json:"country"`
	Specialty string   `json:"specialty,omitempty"`
	Languages []string `json:"languages,omitempty"`
}

var (
	// Principal ids and organisations end up in audit entries and object
	// names, so they are restricted to a safe charset.
	idPattern      = regexp.MustCompile(`^[a-z0-9][a-z0-9._-]{0,62}$`)
	countryPattern = regexp.MustCompile(`^[A-Z]{2}$`)
	codePattern    = regexp.MustCompile(`^[a-z0-9][a-z0-9-]{0,62}$`)
	langPattern    = regexp.MustCompile(`^[a-z]{2,3}(-[A-Za-z0-9]{2,8})?$`)
)

// Validate checks every attribute; it returns an error wrapping
// [ErrInvalidPrincipal] that names the first bad one.
func (p Principal) Validate() error {
	bad := func(format string, a ...any) error {
		return fmt.Errorf("%w: %s", ErrInvalidPrincipal, fmt.Sprintf(format, a...))
	}
	switch {
	case !idPattern.MatchString(p.ID):
		return bad("id %q must be 1-63 characters of a-z, 0-9, '.', '_' or '-'", p.ID)
	case !idPattern.MatchString(p.Org):
		return bad("organisation %q must be 1-63 characters of a-z, 0-9, '.', '_' or '-'", p.Org)
	case !p.Role.Valid():
		return bad("role %q is not one of hospital, case-manager, specialist, compliance", p.Role)
	case !countryPattern.MatchString(p.Country):
		return bad("country %q must be an ISO 3166 alpha-2 code such as GB", p.Country)
	case p.Specialty != "" && !codePattern.MatchString(p.Specialty):
		return bad("specialty %q must be a lower-case code such as oncology", p.Specialty)
	case p.Role == RoleSpecialist && p.Specialty == "":
		return bad("a specialist needs a specialty")
	}
	for _, l := range p.Languages {
		if !langPattern.MatchString(l) {
			return bad("language %q must be a BCP 47 tag such as en or es", l)
		}
	}
	return nil
}

// PrincipalFromCertificate reads the principal from a client certificate.
// The certificate must already have been verified against the CA; this
// function only extracts and validates attributes. Errors wrap
// [ErrInvalidPrincipal].
func PrincipalFromCertificate(c *x509.Certificate) (Principal, error) {
	first := func(v []string) string {
		if len(v) == 0 {
			return ""
		}
		return v[0]
	}
	p := Principal{
		ID:      c.Subject.CommonName,
		Org:     first(c.Subject.Organization),
		Role:    Role(first(c.Subject.OrganizationalUnit)),
		Country: first(c.Subject.Country),
	}
	for _, u := range c.URIs {
		s := u.String()
		switch {
		case strings.HasPrefix(s, specialtyURIPrefix):
			p.Specialty = strings.TrimPrefix(s, specialtyURIPrefix)
		case strings.HasPrefix(s, languageURIPrefix):
			p.Languages = append(p.Languages, strings.TrimPrefix(s, languageURIPrefix))
		}
	}
	if err := p.Validate(); err != nil {
		return Principal{}, err
	}
	return p, nil
}

// uris returns the SAN URIs that encode the specialty and languages.
func (p Principal) uris() []*url.URL {
	var out []*url.URL
	if p.Specialty != "" {
		out = append(out, &url.URL{Scheme: "urn", Opaque: strings.TrimPrefix(specialtyURIPrefix, "urn:") + p.Specialty})
	}
	for _, l := range p.Languages {
		out = append(out, &url.URL{Scheme: "urn", Opaque: strings.TrimPrefix(languageURIPrefix, "urn:") + l})
	}
	return out
}
