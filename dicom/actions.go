package dicom

import (
	"fmt"

	"github.com/consilium/consilium/deid"
)

//go:generate go run ./internal/gen -out tables_gen.go

// Action is a PS3.15 Table E.1-1 action code.
type Action uint8

// Action codes. The compound codes are resolved to one of the simple ones
// before they are applied (see [Deidentifier]).
const (
	ActionNone Action = iota // not in the table: keep
	ActionD                  // replace with a non-empty dummy value
	ActionZ                  // replace with an empty value
	ActionX                  // remove
	ActionK                  // keep (sequences: apply the profile to the items)
	ActionC                  // clean
	ActionU                  // replace the UID, consistently
	ActionZD                 // Z or D by attribute Type
	ActionXZ                 // X or Z
	ActionXD                 // X or D
	ActionXZD                // X, Z or D
	ActionXZU                // X, Z, or keep the sequence with its UIDs replaced
)

var actionNames = [...]string{"keep", "D", "Z", "X", "K", "C", "U", "Z/D", "X/Z", "X/D", "X/Z/D", "X/Z/U*"}

// String returns the code as printed in Table E.1-1 ("keep" for
// ActionNone).
func (a Action) String() string {
	if int(a) < len(actionNames) {
		return actionNames[a]
	}
	return "?"
}

// MarshalText writes the code as String does, for reports.
func (a Action) MarshalText() ([]byte, error) { return []byte(a.String()), nil }

// UnmarshalText reads what MarshalText writes, so that reports read back.
func (a *Action) UnmarshalText(b []byte) error {
	for i, n := range actionNames {
		if n == string(b) {
			*a = Action(i)
			return nil
		}
	}
	return fmt.Errorf("dicom: unknown action %q", b)
}

// Option columns of Table E.1-1, in the order of the generated rules.
const (
	colSafePrivate = iota
	colUIDs
	colDevice
	colInstitution
	colPatientChars
	colFullDates
	colModifiedDates
	colCleanDescriptors
	colCleanStructured
	colCleanGraphics
	numCols
)

// optionColumn maps a profile option to its Table E.1-1 column.
var optionColumn = map[deid.Option]int{
	deid.RetainSafePrivate:       colSafePrivate,
	deid.RetainUIDs:              colUIDs,
	deid.RetainDeviceID:          colDevice,
	deid.RetainInstitutionID:     colInstitution,
	deid.RetainPatientChars:      colPatientChars,
	deid.RetainLongFullDates:     colFullDates,
	deid.RetainLongModifiedDates: colModifiedDates,
	deid.CleanDescriptors:        colCleanDescriptors,
	deid.CleanStructuredContent:  colCleanStructured,
}

// rule is one row of Table E.1-1.
type rule struct {
	keyword string
	vr      string
	basic   Action
	opts    [numCols]Action
}

// privateKey identifies a private attribute independently of the block
// its creator was given (Table E.3.10-1).
type privateKey struct {
	group   uint16
	creator string
	elem    uint8
}

// ruleFor returns the Table E.1-1 row that applies to t, if any: the
// single-tag rows, then the curve, overlay and private patterns.
func ruleFor(t Tag) (rule, bool) {
	if r, ok := profileRule(t); ok {
		return r, true
	}
	g := t.Group()
	switch {
	case t.IsPrivate():
		return privateRule, true
	case g >= 0x5000 && g <= 0x501E && g&1 == 0:
		return curveRule, true
	case g >= 0x6000 && g <= 0x601E && g&1 == 0 && t.Element() == 0x3000:
		return overlayDataRule, true
	case g >= 0x6000 && g <= 0x601E && g&1 == 0 && t.Element() == 0x4000:
		return overlayCommentsRule, true
	}
	return rule{}, false
}

// resolve returns the action of a row under the enabled option columns.
// An option's action replaces the Basic Profile's (PS3.15 E.3). When two
// enabled options disagree on one attribute, keeping beats cleaning.
func (r rule) resolve(cols []int) Action {
	a := r.basic
	best := ActionNone
	for _, c := range cols {
		switch o := r.opts[c]; {
		case o == ActionK:
			best = ActionK
		case o == ActionC && best != ActionK:
			best = ActionC
		case o != ActionNone && best == ActionNone:
			best = o
		}
	}
	if best != ActionNone {
		a = best
	}
	return a
}
