package imaging

import (
	"slices"
	"sort"
	"strconv"
	"time"
)

// indexVersion is written into every index object, so that a later
// format can read (and upgrade) older ones.
const indexVersion = 1

// studyAttrs are the study and patient attributes of a study, as UTF-8
// text (person names keep their "=" separated component groups).
type studyAttrs struct {
	UID         string `json:"uid"`
	PatientKey  string `json:"pkey,omitempty"`
	PatientID   string `json:"pid,omitempty"`
	PatientName string `json:"pname,omitempty"`
	BirthDate   string `json:"birth,omitempty"`
	Sex         string `json:"sex,omitempty"`
	Date        string `json:"date,omitempty"`
	Time        string `json:"time,omitempty"`
	Accession   string `json:"acc,omitempty"`
	StudyID     string `json:"sid,omitempty"`
	Description string `json:"desc,omitempty"`
	Referring   string `json:"ref,omitempty"`
}

// fill sets the empty attributes of s from o: the first instance of a
// study defines them, later ones only complete them.
func (s *studyAttrs) fill(o studyAttrs) bool {
	changed := false
	set := func(dst *string, v string) {
		if *dst == "" && v != "" {
			*dst, changed = v, true
		}
	}
	set(&s.UID, o.UID)
	set(&s.PatientKey, o.PatientKey)
	set(&s.PatientID, o.PatientID)
	set(&s.PatientName, o.PatientName)
	set(&s.BirthDate, o.BirthDate)
	set(&s.Sex, o.Sex)
	set(&s.Date, o.Date)
	set(&s.Time, o.Time)
	set(&s.Accession, o.Accession)
	set(&s.StudyID, o.StudyID)
	set(&s.Description, o.Description)
	set(&s.Referring, o.Referring)
	return changed
}

// seriesEntry is one series of a study index.
type seriesEntry struct {
	UID         string           `json:"uid"`
	Modality    string           `json:"mod,omitempty"`
	Number      string           `json:"num,omitempty"`
	Description string           `json:"desc,omitempty"`
	Instances   []*instanceEntry `json:"inst"`
}

// instanceEntry is one stored instance.
type instanceEntry struct {
	UID            string `json:"uid"`
	Key            string `json:"key"` // keyed hash of UID: the object name's last segment
	SOPClassUID    string `json:"class"`
	TransferSyntax string `json:"ts"`
	Number         string `json:"num,omitempty"`
	Rows           int    `json:"rows,omitempty"`
	Columns        int    `json:"cols,omitempty"`
	Frames         int    `json:"frames,omitempty"`
	Bits           int    `json:"bits,omitempty"`
	Size           int64  `json:"size"`
	SHA256         string `json:"sha256"`
	// PixelData and PixelDataEnd are the offsets of the top-level Pixel
	// Data value (0 without); meaningless when Deflated.
	PixelData    int64     `json:"pd,omitempty"`
	PixelDataEnd int64     `json:"pdend,omitempty"`
	Encapsulated bool      `json:"encap,omitempty"`
	Trailing     bool      `json:"trail,omitempty"`
	Deflated     bool      `json:"defl,omitempty"`
	Stored       time.Time `json:"stored"`
}

// studyIndex is the object dicom/<org>/studies/<study>.
type studyIndex struct {
	V int `json:"v"`
	// Rev counts the index's writes; the catalog keeps the summary of the
	// highest revision it has seen, whatever order updates arrive in.
	Rev     int            `json:"rev"`
	Study   studyAttrs     `json:"study"`
	Series  []*seriesEntry `json:"series"`
	Updated time.Time      `json:"updated"`
}

// find returns the series and instance entries of sop, or nils.
func (x *studyIndex) find(sopUID string) (*seriesEntry, *instanceEntry) {
	for _, se := range x.Series {
		for _, in := range se.Instances {
			if in.UID == sopUID {
				return se, in
			}
		}
	}
	return nil, nil
}

// upsert puts an instance into the series given, replacing an entry of
// the same SOP Instance UID wherever it was. It reports a change.
func (x *studyIndex) upsert(series seriesEntry, inst *instanceEntry) bool {
	if se, old := x.find(inst.UID); old != nil {
		if se.UID == series.UID && *old == *inst {
			return false
		}
		x.remove(inst.UID)
	}
	var se *seriesEntry
	for _, s := range x.Series {
		if s.UID == series.UID {
			se = s
			break
		}
	}
	if se == nil {
		se = &seriesEntry{UID: series.UID, Modality: series.Modality, Number: series.Number, Description: series.Description}
		x.Series = append(x.Series, se)
	}
	if se.Modality == "" {
		se.Modality = series.Modality
	}
	if se.Number == "" {
		se.Number = series.Number
	}
	if se.Description == "" {
		se.Description = series.Description
	}
	se.Instances = append(se.Instances, inst)
	return true
}

// remove drops an instance (and its series when it was the last one).
func (x *studyIndex) remove(sopUID string) bool {
	for i, se := range x.Series {
		for j, in := range se.Instances {
			if in.UID != sopUID {
				continue
			}
			se.Instances = slices.Delete(se.Instances, j, j+1)
			if len(se.Instances) == 0 {
				x.Series = slices.Delete(x.Series, i, i+1)
			}
			return true
		}
	}
	return false
}

// sortEntries orders series by number and instances by number, then UID,
// which is the order retrievals and searches answer in.
func (x *studyIndex) sortEntries() {
	sort.SliceStable(x.Series, func(i, j int) bool {
		return lessNumbered(x.Series[i].Number, x.Series[i].UID, x.Series[j].Number, x.Series[j].UID)
	})
	for _, se := range x.Series {
		sort.SliceStable(se.Instances, func(i, j int) bool {
			a, b := se.Instances[i], se.Instances[j]
			return lessNumbered(a.Number, a.UID, b.Number, b.UID)
		})
	}
}

func lessNumbered(na, ua, nb, ub string) bool {
	ia, ea := strconv.Atoi(na)
	ib, eb := strconv.Atoi(nb)
	switch {
	case ea == nil && eb == nil && ia != ib:
		return ia < ib
	case (ea == nil) != (eb == nil):
		return ea == nil
	}
	return ua < ub
}

// summary returns the study's catalog entry.
func (x *studyIndex) summary() studySummary {
	s := studySummary{Attrs: x.Study, Series: len(x.Series), Rev: x.Rev}
	for _, se := range x.Series {
		s.Instances += len(se.Instances)
		if se.Modality != "" && !slices.Contains(s.Modalities, se.Modality) {
			s.Modalities = append(s.Modalities, se.Modality)
		}
	}
	slices.Sort(s.Modalities)
	return s
}

// studySummary is a study's entry in the catalog: what study-level
// searches match on and answer with.
type studySummary struct {
	Attrs      studyAttrs `json:"study"`
	Modalities []string   `json:"mods,omitempty"`
	Series     int        `json:"nseries"`
	Instances  int        `json:"ninst"`
	Rev        int        `json:"rev"`
}

// catalogShard is the object dicom/<org>/catalog/<x>: the summaries of
// the studies whose key starts with x.
type catalogShard struct {
	V       int                      `json:"v"`
	Studies map[string]*studySummary `json:"studies"`
}
