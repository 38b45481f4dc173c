package imaging

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"path"
	"sort"
	"strconv"
	"strings"
	"sync"

	"github.com/consilium/consilium/dicom"
)

// Level is what a search returns.
type Level int

// Search levels (QIDO-RS resources).
const (
	StudyLevel Level = iota
	SeriesLevel
	InstanceLevel
)

// Query is a parsed QIDO-RS search.
type Query struct {
	Level Level
	// StudyUID scopes series and instance searches (from the path);
	// SeriesUID scopes instance searches further.
	StudyUID, SeriesUID string
	// Filters are the matching keys, all of which must match.
	Filters []Filter
	// Limit bounds the answer (at most MaxResults); Offset skips matches.
	Limit, Offset int
	// BaseURL is the DICOMweb service root that Retrieve URLs start with
	// ("https://gateway.example/dicomweb").
	BaseURL string
}

// Filter is one matching key: an attribute and the value it must match
// (PS3.4 C.2.2.2: single value, list of UIDs, wildcards * and ?, date
// and time ranges; an empty value matches everything).
type Filter struct {
	Tag   dicom.Tag
	Value string
}

// MaxResults bounds one search answer.
const MaxResults = 1000

// ErrBadQuery is returned by [ParseQuery] for parameters that cannot be
// a QIDO-RS query (an unknown attribute, a bad number).
var ErrBadQuery = errors.New("imaging: bad query")

// attr is an attribute searches match on and answer with.
type attr struct {
	tag   dicom.Tag
	vr    string
	level Level
	get   func(r *record) []string
}

// record is one search answer: a study (and a series, and an instance).
type record struct {
	study  *studySummary
	series *seriesEntry
	inst   *instanceEntry
}

func one(s string) []string {
	if s == "" {
		return nil
	}
	return []string{s}
}

// attrs are the attributes of the index, by level.
var attrs = []attr{
	{0x00100020, "LO", StudyLevel, func(r *record) []string { return one(r.study.Attrs.PatientID) }},
	{0x00100010, "PN", StudyLevel, func(r *record) []string { return one(r.study.Attrs.PatientName) }},
	{0x00100030, "DA", StudyLevel, func(r *record) []string { return one(r.study.Attrs.BirthDate) }},
	{0x00100040, "CS", StudyLevel, func(r *record) []string { return one(r.study.Attrs.Sex) }},
	{0x00080020, "DA", StudyLevel, func(r *record) []string { return one(r.study.Attrs.Date) }},
	{0x00080030, "TM", StudyLevel, func(r *record) []string { return one(r.study.Attrs.Time) }},
	{0x00080050, "SH", StudyLevel, func(r *record) []string { return one(r.study.Attrs.Accession) }},
	{0x0020000D, "UI", StudyLevel, func(r *record) []string { return one(r.study.Attrs.UID) }},
	{0x00200010, "SH", StudyLevel, func(r *record) []string { return one(r.study.Attrs.StudyID) }},
	{0x00080061, "CS", StudyLevel, func(r *record) []string { return r.study.Modalities }},
	{0x00080090, "PN", StudyLevel, func(r *record) []string { return one(r.study.Attrs.Referring) }},
	{0x00081030, "LO", StudyLevel, func(r *record) []string { return one(r.study.Attrs.Description) }},
	{0x00201206, "IS", StudyLevel, func(r *record) []string { return []string{strconv.Itoa(r.study.Series)} }},
	{0x00201208, "IS", StudyLevel, func(r *record) []string { return []string{strconv.Itoa(r.study.Instances)} }},
	{0x00080060, "CS", SeriesLevel, func(r *record) []string { return one(r.series.Modality) }},
	{0x0020000E, "UI", SeriesLevel, func(r *record) []string { return one(r.series.UID) }},
	{0x00200011, "IS", SeriesLevel, func(r *record) []string { return one(r.series.Number) }},
	{0x0008103E, "LO", SeriesLevel, func(r *record) []string { return one(r.series.Description) }},
	{0x00201209, "IS", SeriesLevel, func(r *record) []string { return []string{strconv.Itoa(len(r.series.Instances))} }},
	{0x00080016, "UI", InstanceLevel, func(r *record) []string { return one(r.inst.SOPClassUID) }},
	{0x00080018, "UI", InstanceLevel, func(r *record) []string { return one(r.inst.UID) }},
	{0x00200013, "IS", InstanceLevel, func(r *record) []string { return one(r.inst.Number) }},
	{0x00083002, "UI", InstanceLevel, func(r *record) []string { return one(r.inst.TransferSyntax) }},
	{0x00280010, "US", InstanceLevel, func(r *record) []string { return num(r.inst.Rows) }},
	{0x00280011, "US", InstanceLevel, func(r *record) []string { return num(r.inst.Columns) }},
	{0x00280100, "US", InstanceLevel, func(r *record) []string { return num(r.inst.Bits) }},
	{0x00280008, "IS", InstanceLevel, func(r *record) []string { return num(r.inst.Frames) }},
}

func num(n int) []string {
	if n == 0 {
		return nil
	}
	return []string{strconv.Itoa(n)}
}

func findAttr(t dicom.Tag) *attr {
	for i := range attrs {
		if attrs[i].tag == t {
			return &attrs[i]
		}
	}
	return nil
}

// ParseQuery reads QIDO-RS query parameters (PS3.18 8.3.4 and 10.6):
// attribute keys by keyword or tag, limit, offset, includefield and
// fuzzymatching. Attributes this archive does not index, and include
// fields it cannot return, are ignored and reported in warnings, as
// PS3.18 asks; an unknown keyword or a bad number is ErrBadQuery.
func ParseQuery(level Level, params url.Values) (Query, []string, error) {
	q := Query{Level: level, Limit: MaxResults}
	var warnings, unsupported, notReturned []string
	for key, values := range params {
		switch key {
		case "limit", "offset":
			n, err := strconv.Atoi(values[len(values)-1])
			if err != nil || n < 0 {
				return q, nil, fmt.Errorf("%w: %s must be a non-negative number", ErrBadQuery, key)
			}
			if key == "offset" {
				q.Offset = n
			} else if n > MaxResults {
				warnings = append(warnings, fmt.Sprintf("limit %d exceeds the maximum of %d results", n, MaxResults))
			} else if n > 0 {
				q.Limit = n
			}
			continue
		case "fuzzymatching":
			continue // person names always match case-insensitively
		case "includefield":
			for _, v := range values {
				for _, f := range strings.Split(v, ",") {
					if f == "all" || f == "" {
						continue
					}
					t, ok := dicom.LookupKeyword(f)
					if !ok {
						return q, nil, fmt.Errorf("%w: includefield %q is not a DICOM attribute", ErrBadQuery, f)
					}
					if findAttr(t) == nil {
						notReturned = append(notReturned, f)
					}
				}
			}
			continue
		}
		t, ok := dicom.LookupKeyword(key)
		if !ok {
			return q, nil, fmt.Errorf("%w: %q is not a DICOM attribute or a query parameter", ErrBadQuery, key)
		}
		a := findAttr(t)
		if a == nil || a.level > level {
			unsupported = append(unsupported, key)
			continue
		}
		for _, v := range values {
			q.Filters = append(q.Filters, Filter{Tag: t, Value: v})
		}
	}
	sort.Strings(unsupported)
	sort.Strings(notReturned)
	if len(unsupported) > 0 {
		warnings = append(warnings, "the following attributes are not supported for matching: "+strings.Join(unsupported, ", "))
	}
	if len(notReturned) > 0 {
		warnings = append(warnings, "the following attributes are not supported as include fields: "+strings.Join(notReturned, ", "))
	}
	sort.Slice(q.Filters, func(i, j int) bool { return q.Filters[i].Tag < q.Filters[j].Tag })
	return q, warnings, nil
}

// SearchResult is a search's answer.
type SearchResult struct {
	// Matches are the datasets to answer with, in the DICOM JSON Model.
	Matches []dicom.JSONDataset
	// Truncated reports more matches than Limit returned.
	Truncated bool
}

// Search runs a query over org's studies: study-level queries read the
// catalog, series and instance queries the study's index. Answers carry
// every indexed attribute of their level and the levels above, Retrieve
// URL and Instance Availability, with text in UTF-8.
func (a *Archive) Search(ctx context.Context, org string, q Query) (SearchResult, error) {
	var recs []*record
	switch q.Level {
	case StudyLevel:
		sums, err := a.catalog(ctx, org)
		if err != nil {
			return SearchResult{}, err
		}
		for _, s := range sums {
			recs = append(recs, &record{study: s})
		}
		sort.Slice(recs, func(i, j int) bool {
			a, b := recs[i].study.Attrs, recs[j].study.Attrs
			if a.Date+a.Time != b.Date+b.Time {
				return a.Date+a.Time > b.Date+b.Time
			}
			return a.UID < b.UID
		})
	default:
		var x studyIndex
		_, exists, err := a.loadJSON(ctx, a.studyName(org, a.StudyKey(q.StudyUID)), &x)
		if err != nil {
			return SearchResult{}, err
		}
		if !exists || x.Study.UID != q.StudyUID {
			return SearchResult{}, ErrNotFound
		}
		sum := x.summary()
		for _, se := range x.Series {
			if q.SeriesUID != "" && se.UID != q.SeriesUID {
				continue
			}
			if q.Level == SeriesLevel {
				recs = append(recs, &record{study: &sum, series: se})
				continue
			}
			for _, in := range se.Instances {
				recs = append(recs, &record{study: &sum, series: se, inst: in})
			}
		}
		if q.SeriesUID != "" && len(recs) == 0 {
			return SearchResult{}, ErrNotFound
		}
	}
	var res SearchResult
	skipped := 0
	for _, r := range recs {
		if !r.matches(q.Filters) {
			continue
		}
		if skipped < q.Offset {
			skipped++
			continue
		}
		if len(res.Matches) == q.Limit {
			res.Truncated = true
			break
		}
		res.Matches = append(res.Matches, r.dataset(q))
	}
	return res, nil
}

// catalog reads the study summaries of org from every shard.
func (a *Archive) catalog(ctx context.Context, org string) ([]*studySummary, error) {
	shards := make([]catalogShard, len(catalogShards))
	errs := make([]error, len(catalogShards))
	var wg sync.WaitGroup
	sem := make(chan struct{}, 8)
	for i := range catalogShards {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sem <- struct{}{}
			defer func() { <-sem }()
			name := a.orgPrefix(org) + "catalog/" + catalogShards[i:i+1]
			_, _, errs[i] = a.loadJSON(ctx, name, &shards[i])
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("imaging: reading the catalog: %w", err)
	}
	var out []*studySummary
	for _, sh := range shards {
		for _, s := range sh.Studies {
			if s.Instances > 0 { // not a removed study's tombstone
				out = append(out, s)
			}
		}
	}
	return out, nil
}

func (r *record) level() Level {
	switch {
	case r.inst != nil:
		return InstanceLevel
	case r.series != nil:
		return SeriesLevel
	}
	return StudyLevel
}

func (r *record) matches(filters []Filter) bool {
	for _, f := range filters {
		a := findAttr(f.Tag)
		if a == nil || a.level > r.level() {
			continue
		}
		if !matchValue(a.vr, f.Value, a.get(r)) {
			return false
		}
	}
	return true
}

// matchValue applies one matching key to an attribute's values.
func matchValue(vr, key string, values []string) bool {
	if key == "" || key == "*" {
		return true // universal matching
	}
	switch vr {
	case "UI":
		for _, k := range strings.FieldsFunc(key, func(r rune) bool { return r == ',' || r == '\\' }) {
			for _, v := range values {
				if k == v {
					return true
				}
			}
		}
		return false
	case "DA", "TM":
		for _, v := range values {
			if matchRange(vr, key, v) {
				return true
			}
		}
		return false
	}
	keys := []string{key}
	if vr == "CS" {
		keys = strings.FieldsFunc(key, func(r rune) bool { return r == ',' || r == '\\' })
	}
	for _, k := range keys {
		for _, v := range values {
			if vr == "PN" {
				// Case-insensitive, on the whole name or any of its
				// component groups.
				lk := strings.ToLower(k)
				for _, g := range append([]string{v}, strings.Split(v, "=")...) {
					if wildcard(lk, strings.ToLower(g)) {
						return true
					}
				}
				continue
			}
			if wildcard(k, v) {
				return true
			}
		}
	}
	return false
}

// wildcard matches with * and ? (PS3.4 C.2.2.2.4).
func wildcard(pattern, s string) bool {
	if !strings.ContainsAny(pattern, "*?") {
		return pattern == s
	}
	// path.Match knows * and ?, but also [ and \, which DICOM does not.
	p := strings.NewReplacer(`\`, `\\`, `[`, `\[`, `]`, `\]`).Replace(pattern)
	ok, err := path.Match(p, strings.ReplaceAll(s, "/", "\x00"))
	return err == nil && ok
}

// matchRange matches a date or time against a single value or a range
// ("a-b", "-b", "a-").
func matchRange(vr, key, v string) bool {
	norm := func(s string, pad byte) string {
		s = strings.ReplaceAll(s, ":", "")
		if vr == "TM" {
			for len(s) < 6 {
				s += string(pad)
			}
		}
		return s
	}
	if v == "" {
		return false
	}
	lo, hi, isRange := strings.Cut(key, "-")
	if !isRange {
		if vr == "TM" {
			return strings.HasPrefix(norm(v, '0'), strings.ReplaceAll(key, ":", ""))
		}
		return v == key
	}
	val := norm(v, '0')
	if lo != "" && val < norm(lo, '0') {
		return false
	}
	if hi != "" && val > norm(hi, '9') {
		return false
	}
	return true
}

// dataset builds a search answer's dataset.
func (r *record) dataset(q Query) dicom.JSONDataset {
	ds := dicom.JSONDataset{}
	lvl := r.level()
	for _, a := range attrs {
		if a.level > lvl {
			continue
		}
		if a.level == StudyLevel && lvl > StudyLevel && (a.tag == 0x00201206 || a.tag == 0x00201208) {
			continue // study counts only on study answers
		}
		vals := a.get(r)
		switch a.vr {
		case "PN":
			var pns []any
			for _, v := range vals {
				g := strings.SplitN(v, "=", 3)
				pn := dicom.JSONPersonName{Alphabetic: g[0]}
				if len(g) > 1 {
					pn.Ideographic = g[1]
				}
				if len(g) > 2 {
					pn.Phonetic = g[2]
				}
				pns = append(pns, pn)
			}
			ds.Set(a.tag, a.vr, pns...)
		case "IS", "US":
			var ns []any
			for _, v := range vals {
				if n, err := strconv.Atoi(strings.TrimSpace(v)); err == nil {
					ns = append(ns, n)
				}
			}
			ds.Set(a.tag, a.vr, ns...)
		default:
			vs := make([]any, len(vals))
			for i, v := range vals {
				vs[i] = v
			}
			ds.Set(a.tag, a.vr, vs...)
		}
	}
	ds.Set(0x00080005, "CS", "ISO_IR 192")
	ds.Set(0x00080056, "CS", "ONLINE")
	u := q.BaseURL + "/studies/" + r.study.Attrs.UID
	if lvl >= SeriesLevel {
		u += "/series/" + r.series.UID
	}
	if lvl == InstanceLevel {
		u += "/instances/" + r.inst.UID
	}
	ds.Set(0x00081190, "UR", u)
	return ds
}
