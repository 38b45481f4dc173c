package e2e

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"slices"
	"strings"
	"testing"
	"time"
)

// identity is what identifies the test's patient: what must appear
// nowhere in a packet.
type identity struct {
	// Names are name parts (given and family names of every name, the
	// mother's maiden name): matched as whole words, ignoring case.
	Names []string
	// Exact are identifier values, resource ids, telephone numbers,
	// address lines, the birth date in every usual notation and the
	// original DICOM UIDs: matched anywhere, ignoring case.
	Exact []string

	// The parts the DICOM series is given.
	Family, Given, Maiden, Mother string
	MRN, Issuer, BirthDate, Sex   string
	Phone, Address                string
	OtherIDs                      []string
}

// fhirPatient is the part of a FHIR Patient the test reads.
type fhirPatient struct {
	ResourceType string `json:"resourceType"`
	ID           string `json:"id"`
	Name         []struct {
		Use    string   `json:"use"`
		Family string   `json:"family"`
		Given  []string `json:"given"`
	} `json:"name"`
	Identifier []struct {
		System string `json:"system"`
		Value  string `json:"value"`
		Type   struct {
			Coding []struct {
				Code string `json:"code"`
			} `json:"coding"`
		} `json:"type"`
	} `json:"identifier"`
	Telecom []struct {
		System string `json:"system"`
		Value  string `json:"value"`
	} `json:"telecom"`
	Address []struct {
		Line       []string `json:"line"`
		City       string   `json:"city"`
		State      string   `json:"state"`
		PostalCode string   `json:"postalCode"`
	} `json:"address"`
	BirthDate string `json:"birthDate"`
	Gender    string `json:"gender"`
	Extension []struct {
		URL         string `json:"url"`
		ValueString string `json:"valueString"`
	} `json:"extension"`
}

// readIdentity reads the Patient of a Synthea transaction bundle.
func readIdentity(t *testing.T, bundleFile string) identity {
	t.Helper()
	raw, err := os.ReadFile(bundleFile)
	if err != nil {
		t.Fatal(err)
	}
	var b struct {
		Entry []struct {
			FullURL  string          `json:"fullUrl"`
			Resource json.RawMessage `json:"resource"`
		} `json:"entry"`
	}
	if err := json.Unmarshal(raw, &b); err != nil {
		t.Fatal(err)
	}
	var p fhirPatient
	for _, e := range b.Entry {
		var head fhirPatient
		if json.Unmarshal(e.Resource, &head) == nil && head.ResourceType == "Patient" {
			p = head
			break
		}
	}
	if p.ID == "" || len(p.Name) == 0 || p.BirthDate == "" || len(p.Telecom) == 0 || len(p.Address) == 0 {
		t.Fatalf("%s: no Patient with a name, birth date, telephone and address", bundleFile)
	}
	var id identity
	id.Exact = append(id.Exact, p.ID)
	for _, n := range p.Name {
		id.Names = append(id.Names, n.Family)
		id.Names = append(id.Names, n.Given...)
		switch n.Use {
		case "official":
			id.Family, id.Given = n.Family, strings.Join(n.Given, " ")
		case "maiden":
			id.Maiden = n.Family
		}
	}
	for _, e := range p.Extension {
		if e.URL == "http://hl7.org/fhir/StructureDefinition/patient-mothersMaidenName" {
			id.Names = append(id.Names, strings.Fields(e.ValueString)...)
			f := strings.Fields(e.ValueString)
			id.Mother = f[len(f)-1] + "^" + strings.Join(f[:len(f)-1], " ")
		}
	}
	for _, ident := range p.Identifier {
		id.Exact = append(id.Exact, ident.Value)
		code := ""
		if len(ident.Type.Coding) > 0 {
			code = ident.Type.Coding[0].Code
		}
		switch code {
		case "MR":
			id.MRN, id.Issuer = ident.Value, ident.System
		case "":
		default:
			id.OtherIDs = append(id.OtherIDs, ident.Value)
		}
	}
	for _, tc := range p.Telecom {
		id.Exact = append(id.Exact, tc.Value)
		if tc.System == "phone" && id.Phone == "" {
			id.Phone = tc.Value
		}
	}
	for _, a := range p.Address {
		id.Exact = append(id.Exact, a.Line...)
		if id.Address == "" {
			id.Address = fmt.Sprintf("%s, %s, %s %s", strings.Join(a.Line, " "), a.City, a.State, a.PostalCode)
		}
	}
	birth, err := time.Parse(time.DateOnly, p.BirthDate)
	if err != nil {
		t.Fatalf("birth date %q: %v", p.BirthDate, err)
	}
	for _, layout := range []string{"2006-01-02", "20060102", "2006/01/02", "02/01/2006", "01/02/2006", "2 Jan 2006",
		"02 Jan 2006", "Jan 2, 2006", "2 January 2006", "January 2, 2006", "02.01.2006"} {
		id.Exact = append(id.Exact, birth.Format(layout))
	}
	id.BirthDate = birth.Format("20060102")
	id.Sex = map[string]string{"female": "F", "male": "M"}[p.Gender]
	if id.MRN == "" || id.Family == "" || id.Given == "" {
		t.Fatalf("%s: the Patient has no MRN or official name", bundleFile)
	}
	id.Exact = append(id.Exact, id.Address)
	return id
}

// add adds exact terms (the DICOM series' UIDs, the server's ids).
func (id *identity) add(terms ...string) { id.Exact = append(id.Exact, terms...) }

// dicomName is the patient's name as a DICOM PN.
func (id identity) dicomName() string { return id.Family + "^" + id.Given + "^^Mrs." }

// hit is a term found where it must not be.
type hit struct{ file, where, term string }

func (h hit) String() string { return fmt.Sprintf("%s (%s): %q", h.file, h.where, h.term) }

// scan reports every term of id in data. Name parts are scanned only in
// the first namesUpTo bytes (the DICOM header: pixel values are binary
// and would match short names by chance); namesUpTo < 0 means all.
func (id identity) scan(file, where string, data []byte, namesUpTo int) []hit {
	low := lowerASCII(data)
	var hits []hit
	for _, term := range id.Exact {
		if term != "" && bytes.Contains(low, lowerASCII([]byte(term))) {
			hits = append(hits, hit{file, where, term})
		}
	}
	if namesUpTo >= 0 && namesUpTo < len(low) {
		low = low[:namesUpTo]
	}
	for _, name := range id.Names {
		if name != "" && containsWord(low, lowerASCII([]byte(name))) {
			hits = append(hits, hit{file, where, name})
		}
	}
	return hits
}

// lowerASCII lower-cases ASCII letters and leaves every other byte, so
// that offsets stay those of the original.
func lowerASCII(b []byte) []byte {
	out := make([]byte, len(b))
	for i, c := range b {
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		out[i] = c
	}
	return out
}

// containsWord reports whether word occurs in s not preceded or followed
// by a letter or digit ("Conn" in "Conn^Liz" but not in "Connective").
func containsWord(s, word []byte) bool {
	wordByte := func(c byte) bool { return 'a' <= c && c <= 'z' || '0' <= c && c <= '9' || c >= 0x80 }
	for from := 0; ; {
		i := bytes.Index(s[from:], word)
		if i < 0 {
			return false
		}
		i += from
		end := i + len(word)
		if (i == 0 || !wordByte(s[i-1])) && (end == len(s) || !wordByte(s[end])) {
			return true
		}
		from = i + 1
	}
}

// dedupeTerms removes repeated and empty terms.
func (id *identity) dedupeTerms() {
	clean := func(s []string) []string {
		s = slices.DeleteFunc(slices.Clone(s), func(x string) bool { return strings.TrimSpace(x) == "" })
		slices.Sort(s)
		return slices.Compact(s)
	}
	id.Names, id.Exact = clean(id.Names), clean(id.Exact)
}
