package packet

import (
	"cmp"
	"slices"
	"time"

	"github.com/consilium/consilium/dicom"
	"github.com/consilium/consilium/fhir"
)

// ReceiptFormat is the value of [Receipt.Format].
const ReceiptFormat = "consilium-deid-receipt/1"

// Receipt is deid-receipt.json: what de-identification changed, what was
// withheld and why, and what the residual scan found. It holds counts,
// attribute names, paths and reasons, never a value from the input.
type Receipt struct {
	Format   string    `json:"format"`
	PacketID string    `json:"packetId"`
	CaseID   string    `json:"caseId"`
	Created  time.Time `json:"created"`
	// DICOM aggregates the reports of the included instances.
	DICOM *DICOMReceipt `json:"dicom,omitempty"`
	// FHIR is the report of the Bundle's de-identification: changes per
	// element path and action, resources excluded per type and reason.
	FHIR     *fhir.DeidReport `json:"fhir,omitempty"`
	Withheld []Withheld       `json:"withheld"`
	// ResidualScan is the result of scanning every file for the patient's
	// original identifiers, except deid-receipt.json itself and
	// manifest.json, whose hits [Build] returns in [Result.Hits].
	ResidualScan ScanReport `json:"residualScan"`
}

// DICOMReceipt sums up the de-identification of the included instances.
type DICOMReceipt struct {
	Profile   string `json:"profile"`
	Instances int    `json:"instances"`
	// PixelBytes is the Pixel Data copied through unchanged.
	PixelBytes int64 `json:"pixelBytes"`
	// Actions counts, per attribute and action, what was done (see
	// [dicom.ActionCount]).
	Actions []dicom.ActionCount `json:"actions"`
	// Problems counts what the inputs had wrong, per reason.
	Problems []ProblemCount `json:"problems,omitempty"`
}

// ProblemCount is how many instances had one problem.
type ProblemCount struct {
	Reason dicom.Reason `json:"reason"`
	Count  int          `json:"count"`
}

// ScanReport is the result of the residual scan.
type ScanReport struct {
	// Files is the number of files scanned.
	Files int `json:"files"`
	// Values is the number of identifying values (and written forms of
	// them: a phone's digits, a date as YYYYMMDD) searched for; TooShort
	// those not searched because they are shorter than three characters.
	Values   int `json:"values"`
	TooShort int `json:"tooShort"`
	// PixelData says whether DICOM Pixel Data was scanned too (it holds
	// samples, not text; burned-in text is handled by withholding).
	PixelData bool `json:"pixelData"`
	// Clean is true when nothing was found.
	Clean bool  `json:"clean"`
	Hits  []Hit `json:"hits"`
}

// dicomTotals accumulates the DICOM part of the receipt.
type dicomTotals struct {
	profile  string
	n        int
	pixels   int64
	acc      *dicom.Report
	pending  []*dicom.Report // merged in batches: a merge sorts
	problems map[dicom.Reason]int
}

func (t *dicomTotals) add(r *dicom.Report) {
	if t.acc == nil {
		t.acc = &dicom.Report{}
		t.problems = map[dicom.Reason]int{}
	}
	if t.profile == "" {
		t.profile = r.Profile
	}
	t.n++
	t.pixels += r.PixelBytes
	for _, p := range r.Problems {
		t.problems[p]++
	}
	t.pending = append(t.pending, r)
	if len(t.pending) == 64 {
		t.merge()
	}
}

func (t *dicomTotals) merge() {
	t.acc.Actions = dicom.MergeActions(append(t.pending, t.acc)...)
	t.pending = t.pending[:0]
}

func (t *dicomTotals) receipt() *DICOMReceipt {
	if t.n == 0 {
		return nil
	}
	t.merge()
	d := &DICOMReceipt{Profile: t.profile, Instances: t.n, PixelBytes: t.pixels, Actions: t.acc.Actions}
	for r, n := range t.problems {
		d.Problems = append(d.Problems, ProblemCount{Reason: r, Count: n})
	}
	slices.SortFunc(d.Problems, func(a, b ProblemCount) int { return cmp.Compare(a.Reason, b.Reason) })
	return d
}
