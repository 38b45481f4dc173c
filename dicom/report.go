package dicom

import (
	"cmp"
	"slices"
	"strings"
)

// Report says what de-identification did to one instance. It holds no
// original value, so it can go into a packet's de-identification receipt;
// [MergeActions] adds up the reports of a packet.
type Report struct {
	// Profile is the profile applied, in its CLI form.
	Profile           string `json:"profile"`
	TransferSyntaxUID string `json:"transferSyntaxUID"`
	SOPClassUID       string `json:"sopClassUID"`
	Modality          string `json:"modality"`
	// The new UIDs of the output instance.
	StudyInstanceUID  string `json:"studyInstanceUID"`
	SeriesInstanceUID string `json:"seriesInstanceUID"`
	SOPInstanceUID    string `json:"sopInstanceUID"`
	// Pseudonym is the patient's pseudonym (the output's Patient ID and
	// Patient's Name); OffsetDays the date shift (applied only with
	// retain-long-modified-dates).
	Pseudonym  string `json:"pseudonym"`
	OffsetDays int    `json:"offsetDays"`
	// BurnedIn reports that the pixels may show text (names, dates) that
	// de-identification of the header cannot remove; a packet should
	// withhold the instance. BurnedInReason says why.
	BurnedIn       bool   `json:"burnedIn"`
	BurnedInReason string `json:"burnedInReason,omitempty"`
	// Actions counts, per attribute and action, what was done.
	Actions []ActionCount `json:"actions"`
	// PixelBytes is the number of Pixel Data bytes copied through.
	PixelBytes int64 `json:"pixelBytes"`
	// Problems lists what Inspect would have refused the input for,
	// without stopping de-identification (the output fixes some of them,
	// invalid UIDs for instance).
	Problems []Reason `json:"problems,omitempty"`
}

// ActionCount is how often one action was applied to one attribute.
type ActionCount struct {
	// Tag is the attribute; for Private it is (gggg,0000) and stands for
	// the whole private group.
	Tag     Tag    `json:"tag"`
	Keyword string `json:"keyword"`
	// Rule is the action of Table E.1-1 under the options in effect
	// (ActionNone for attributes the table does not list); Applied is what
	// was done (compound codes resolved: see resolveCompound).
	Rule    Action `json:"rule"`
	Applied Action `json:"applied"`
	Private bool   `json:"private,omitempty"`
	Count   int    `json:"count"`
}

// MergeActions adds up the action counts of several reports.
func MergeActions(reports ...*Report) []ActionCount {
	type key struct {
		tag           Tag
		keyword       string
		rule, applied Action
		private       bool
	}
	sum := map[key]int{}
	for _, r := range reports {
		for _, a := range r.Actions {
			sum[key{a.Tag, a.Keyword, a.Rule, a.Applied, a.Private}] += a.Count
		}
	}
	out := make([]ActionCount, 0, len(sum))
	for k, n := range sum {
		out = append(out, ActionCount{Tag: k.tag, Keyword: k.keyword, Rule: k.rule, Applied: k.applied, Private: k.private, Count: n})
	}
	sortActions(out)
	return out
}

func sortActions(a []ActionCount) {
	slices.SortFunc(a, func(x, y ActionCount) int {
		switch {
		case x.Tag != y.Tag:
			return cmp.Compare(x.Tag, y.Tag)
		case x.Applied != y.Applied:
			return cmp.Compare(x.Applied, y.Applied)
		}
		return strings.Compare(x.Keyword, y.Keyword)
	})
}

// Removed returns the number of attributes removed or emptied (X and Z).
func (r *Report) Removed() int {
	n := 0
	for _, a := range r.Actions {
		if a.Applied == ActionX || a.Applied == ActionZ {
			n += a.Count
		}
	}
	return n
}
