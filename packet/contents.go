package packet

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"

	"github.com/consilium/consilium/dicom"
	"github.com/consilium/consilium/fhir"
)

// Contents is what goes into a packet. Each item comes either as an
// original, which [Build] de-identifies (Options.Deid must then name a
// pseudonym source and a patient key), or already de-identified together
// with the report of its de-identification, which Build passes through.
type Contents struct {
	// Case says what the specialist is asked.
	Case Case
	// Bundle is the patient's FHIR Bundle (JSON): the original, or with
	// BundleReport set an already de-identified one. Nil: no FHIR.
	Bundle       []byte
	BundleReport *fhir.DeidReport
	// Instances yields the DICOM instances. Nil: no imaging.
	Instances Instances
	// Withheld lists what the caller left out before building (by
	// policy, for example); it is copied to the manifest and the receipt.
	Withheld []Withheld
	// Identifiers are the patient's original identifiers for the residual
	// scan. Build adds those of the Patient of an original Bundle and of
	// every original DICOM instance it de-identifies.
	Identifiers Identifiers
}

// Instance is one DICOM instance.
type Instance struct {
	// Body is the Part 10 file; Build closes it.
	Body io.ReadCloser
	// Size is Body's length, or -1 when unknown. With Report set, a
	// known Size and a Body that is an io.ReaderAt (an *os.File), Build
	// reads the instance in place instead of copying it first; the file
	// must not change during Build.
	Size int64
	// Report is the report of the instance's de-identification; set, it
	// says that Body is already de-identified.
	Report *dicom.Report
}

// Instances yields DICOM instances one at a time, so that a caller can
// stream them from a store: Build asks for the next one only when it is
// ready for it (it keeps at most a few in flight).
type Instances interface {
	// Next returns the next instance, or io.EOF after the last one.
	Next(ctx context.Context) (Instance, error)
}

// InstancesFunc adapts a function to [Instances].
type InstancesFunc func(ctx context.Context) (Instance, error)

var _ Instances = InstancesFunc(nil)

// Next calls f.
func (f InstancesFunc) Next(ctx context.Context) (Instance, error) { return f(ctx) }

// Files yields the original DICOM instances in the named files, opening
// each only when it is asked for.
func Files(paths ...string) Instances {
	i := 0
	return InstancesFunc(func(ctx context.Context) (Instance, error) {
		if err := ctx.Err(); err != nil {
			return Instance{}, err
		}
		if i >= len(paths) {
			return Instance{}, io.EOF
		}
		p := paths[i]
		i++
		f, err := os.Open(p)
		if err != nil {
			return Instance{}, err
		}
		fi, err := f.Stat()
		if err != nil {
			f.Close()
			return Instance{}, err
		}
		return Instance{Body: f, Size: fi.Size()}, nil
	})
}

// PatientIdentifiers collects the identifying values of the Patient
// resources in a FHIR Bundle or of a single Patient resource: names
// (official, maiden, contacts', the mother's maiden name), identifier
// values and the resource id, telecoms, address lines and the birth date.
// The gateway passes them (with the DICOM ones, see
// [Identifiers.AddDICOM]) to the residual scan.
func PatientIdentifiers(b []byte) (Identifiers, error) {
	var root struct {
		ResourceType string `json:"resourceType"`
		Entry        []struct {
			Resource json.RawMessage `json:"resource"`
		} `json:"entry"`
	}
	if err := json.Unmarshal(b, &root); err != nil {
		return Identifiers{}, fmt.Errorf("packet: reading the bundle: %w", err)
	}
	var ids Identifiers
	if root.ResourceType != "Bundle" {
		if root.ResourceType == "Patient" {
			err := addPatient(&ids, b)
			return ids, err
		}
		return ids, nil
	}
	for _, e := range root.Entry {
		if err := addPatient(&ids, e.Resource); err != nil {
			return ids, err
		}
	}
	return ids, nil
}

type humanName struct {
	Text   string   `json:"text"`
	Family string   `json:"family"`
	Given  []string `json:"given"`
}

type contactPoint struct {
	System string `json:"system"`
	Value  string `json:"value"`
}

type address struct {
	Text string   `json:"text"`
	Line []string `json:"line"`
}

func addPatient(ids *Identifiers, raw json.RawMessage) error {
	if len(raw) == 0 {
		return nil
	}
	var typ struct {
		ResourceType string `json:"resourceType"`
	}
	if err := json.Unmarshal(raw, &typ); err != nil {
		return fmt.Errorf("packet: reading a resource: %w", err)
	}
	if typ.ResourceType != "Patient" {
		return nil
	}
	var p struct {
		ID         string                   `json:"id"`
		Name       []humanName              `json:"name"`
		Identifier []struct{ Value string } `json:"identifier"`
		Telecom    []contactPoint           `json:"telecom"`
		Address    []address                `json:"address"`
		BirthDate  string                   `json:"birthDate"`
		Extension  []struct {
			URL         string `json:"url"`
			ValueString string `json:"valueString"`
		} `json:"extension"`
		Contact []struct {
			Name    humanName      `json:"name"`
			Telecom []contactPoint `json:"telecom"`
			Address address        `json:"address"`
		} `json:"contact"`
	}
	if err := json.Unmarshal(raw, &p); err != nil {
		return fmt.Errorf("packet: reading the Patient: %w", err)
	}
	names := func(n humanName) {
		ids.Names = append(ids.Names, n.Given...)
		for _, s := range []string{n.Family, n.Text} {
			if s != "" {
				ids.Names = append(ids.Names, s)
			}
		}
	}
	telecoms := func(ts []contactPoint) {
		for _, t := range ts {
			switch t.System {
			case "phone", "fax", "sms", "pager":
				ids.Phones = append(ids.Phones, t.Value)
			case "email":
				ids.Emails = append(ids.Emails, t.Value)
			default:
				ids.Other = append(ids.Other, t.Value)
			}
		}
	}
	addresses := func(as ...address) {
		for _, a := range as {
			ids.Addresses = append(ids.Addresses, a.Line...)
			if a.Text != "" {
				ids.Addresses = append(ids.Addresses, a.Text)
			}
		}
	}
	if p.ID != "" {
		ids.IDs = append(ids.IDs, p.ID)
	}
	for _, n := range p.Name {
		names(n)
	}
	for _, i := range p.Identifier {
		if i.Value != "" {
			ids.IDs = append(ids.IDs, i.Value)
		}
	}
	telecoms(p.Telecom)
	addresses(p.Address...)
	if p.BirthDate != "" {
		ids.BirthDates = append(ids.BirthDates, p.BirthDate)
	}
	for _, e := range p.Extension {
		if e.URL == "http://hl7.org/fhir/StructureDefinition/patient-mothersMaidenName" && e.ValueString != "" {
			ids.Names = append(ids.Names, e.ValueString)
		}
	}
	for _, c := range p.Contact {
		names(c.Name)
		telecoms(c.Telecom)
		addresses(c.Address)
	}
	return nil
}
