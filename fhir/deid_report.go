package fhir

import (
	"cmp"
	"slices"

	"github.com/consilium/consilium/deid"
)

// DeidReport says what de-identification changed, removed and excluded.
// It holds no value from the input (paths and counts only), so it can go
// into a packet's de-identification receipt; [DeidReport.Merge] adds
// reports up.
type DeidReport struct {
	// Profile is the profile applied, in its CLI form.
	Profile string `json:"profile"`
	// Resources is the number of resources kept (and de-identified).
	Resources int `json:"resources"`
	// Changes counts, per element path (resource type and element names,
	// no indices) and action, what was done. Actions: drop, pseudonymize,
	// shift, year, zip3, age90, reference, remap-uid, generic-label.
	Changes []DeidChange `json:"changes"`
	// Excluded counts the resources left out, per type and reason
	// (a sensitive security label, a type never exported, ...).
	Excluded []DeidExclusion `json:"excluded"`

	changeIdx, excludedIdx map[changeKey]int
}

// DeidChange is how often one action was applied at one path.
type DeidChange struct {
	Path   string `json:"path"`
	Action string `json:"action"`
	Count  int    `json:"count"`
}

// DeidExclusion is how many resources of a type were left out, and why.
type DeidExclusion struct {
	ResourceType string `json:"resourceType"`
	Reason       string `json:"reason"`
	Count        int    `json:"count"`
}

func newDeidReport(p deid.Profile) *DeidReport { return &DeidReport{Profile: p.String()} }

type changeKey struct{ path, action string }

func (r *DeidReport) change(path, action string) { r.addChange(path, action, 1) }

func (r *DeidReport) addChange(path, action string, n int) {
	if r.changeIdx == nil {
		r.changeIdx = map[changeKey]int{}
		for i, c := range r.Changes {
			r.changeIdx[changeKey{c.Path, c.Action}] = i
		}
	}
	k := changeKey{path, action}
	if i, ok := r.changeIdx[k]; ok {
		r.Changes[i].Count += n
		return
	}
	r.changeIdx[k] = len(r.Changes)
	r.Changes = append(r.Changes, DeidChange{Path: path, Action: action, Count: n})
}

func (r *DeidReport) excluded(typ, reason string) { r.addExcluded(typ, reason, 1) }

func (r *DeidReport) addExcluded(typ, reason string, n int) {
	if r.excludedIdx == nil {
		r.excludedIdx = map[changeKey]int{}
		for i, e := range r.Excluded {
			r.excludedIdx[changeKey{e.ResourceType, e.Reason}] = i
		}
	}
	k := changeKey{typ, reason}
	if i, ok := r.excludedIdx[k]; ok {
		r.Excluded[i].Count += n
		return
	}
	r.excludedIdx[k] = len(r.Excluded)
	r.Excluded = append(r.Excluded, DeidExclusion{ResourceType: typ, Reason: reason, Count: n})
}

// Merge adds o's counts to r, and sorts both lists.
func (r *DeidReport) Merge(o *DeidReport) {
	r.Resources += o.Resources
	for _, c := range o.Changes {
		r.addChange(c.Path, c.Action, c.Count)
	}
	for _, e := range o.Excluded {
		r.addExcluded(e.ResourceType, e.Reason, e.Count)
	}
	r.sort()
}

func (r *DeidReport) sort() {
	r.changeIdx, r.excludedIdx = nil, nil
	slices.SortFunc(r.Changes, func(a, b DeidChange) int { return cmp.Or(cmp.Compare(a.Path, b.Path), cmp.Compare(a.Action, b.Action)) })
	slices.SortFunc(r.Excluded, func(a, b DeidExclusion) int {
		return cmp.Or(cmp.Compare(a.ResourceType, b.ResourceType), cmp.Compare(a.Reason, b.Reason))
	})
}

// Removed returns the number of elements dropped.
func (r *DeidReport) Removed() int {
	n := 0
	for _, c := range r.Changes {
		if c.Action == actDrop {
			n += c.Count
		}
	}
	return n
}

// ExcludedCount returns the number of resources left out.
func (r *DeidReport) ExcludedCount() int {
	n := 0
	for _, e := range r.Excluded {
		n += e.Count
	}
	return n
}
