package cases

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"time"
)

// Status is where a case is in its workflow.
type Status string

// The statuses of a case (the same strings as policy.Case*).
const (
	Draft           Status = "draft"
	Assigned        Status = "assigned"
	Released        Status = "released"
	OpinionReceived Status = "opinion-received"
	Closed          Status = "closed"
	Cancelled       Status = "cancelled"
)

// Event is something that moves a case on.
type Event string

// The events of the workflow.
const (
	EventAssign  Event = "assign"
	EventRelease Event = "release"
	EventOpinion Event = "opinion"
	EventClose   Event = "close"
	EventCancel  Event = "cancel"
)

// Errors callers branch on.
var (
	// ErrIllegalTransition is returned for an event the case's status does
	// not allow.
	ErrIllegalTransition = errors.New("cases: not allowed in this state")
	// ErrNotFound is returned for an unknown case, specialist or opinion.
	ErrNotFound = errors.New("cases: not found")
	// ErrInvalid is returned for a case or registration that is not valid.
	ErrInvalid = errors.New("cases: invalid")
	// ErrConflict is returned when other writers kept changing a case.
	ErrConflict = errors.New("cases: concurrent updates; retry")
)

// transitions lists, per event, the statuses it may start from and the
// status it leads to. Assigning again after a release keeps the case
// released (removed specialists lose access, added ones wait for the next
// release); releasing again releases to newly assigned specialists.
var transitions = map[Event]struct {
	from []Status
	to   func(Status) Status
}{
	EventAssign:  {[]Status{Draft, Assigned, Released, OpinionReceived}, func(s Status) Status { return later(s, Assigned) }},
	EventRelease: {[]Status{Assigned, Released, OpinionReceived}, func(s Status) Status { return later(s, Released) }},
	EventOpinion: {[]Status{Released, OpinionReceived}, func(Status) Status { return OpinionReceived }},
	EventClose:   {[]Status{Released, OpinionReceived}, func(Status) Status { return Closed }},
	EventCancel:  {[]Status{Draft, Assigned, Released, OpinionReceived}, func(Status) Status { return Cancelled }},
}

// statusOrder orders the active statuses along the workflow; later
// returns the further along of two.
var statusOrder = []Status{Draft, Assigned, Released, OpinionReceived}

func later(a, b Status) Status {
	if slices.Index(statusOrder, a) >= slices.Index(statusOrder, b) {
		return a
	}
	return b
}

// Transition returns the status that event leads to from s, or
// ErrIllegalTransition.
func Transition(s Status, e Event) (Status, error) {
	t, ok := transitions[e]
	if !ok || !slices.Contains(t.from, s) {
		return s, fmt.Errorf("%w: cannot %s a case that is %s", ErrIllegalTransition, e, s)
	}
	return t.to(s), nil
}

// Case is one second-opinion case, as stored.
type Case struct {
	ID string `json:"id"`
	// Org is the hospital that opened the case; SourceCountry its
	// country (the origin of any transfer).
	Org           string `json:"org"`
	SourceCountry string `json:"source_country"`
	// Patient is the id of the hospital's FHIR Patient.
	Patient string `json:"patient"`
	// Studies are Study Instance UIDs of the hospital's studies to share.
	Studies []string `json:"studies,omitempty"`
	// Resources are the FHIR resource types to share; empty: all.
	Resources []string  `json:"resources,omitempty"`
	Question  string    `json:"question"`
	Specialty string    `json:"specialty"`
	Languages []string  `json:"languages,omitempty"`
	Deadline  time.Time `json:"deadline,omitzero"`
	Status    Status    `json:"status"`
	// Assigned are the specialists assigned, sorted.
	Assigned []string `json:"assigned"`
	// Releases are the releases to each specialist, by id.
	Releases map[string]Release `json:"releases,omitempty"`
	// Opinions are the specialists that sent an opinion, sorted.
	Opinions []string  `json:"opinions,omitempty"`
	Created  time.Time `json:"created"`
	Updated  time.Time `json:"updated"`
	Timeline []Entry   `json:"timeline"`
}

// Release is what a release decided for one specialist: the packet must
// be built under these obligations. Seq tells releases apart: a packet
// built for an earlier release is not served for a later one.
type Release struct {
	Seq           int       `json:"seq"`
	At            time.Time `json:"at"`
	DeidProfile   string    `json:"deid_profile"`
	DeidOptions   []string  `json:"deid_options,omitempty"`
	ExcludeLabels []string  `json:"exclude_labels,omitempty"`
	// WithholdBurnedIn leaves out instances that may show burned-in text.
	WithholdBurnedIn bool   `json:"withhold_burned_in"`
	PolicyVersion    string `json:"policy_version,omitempty"`
}

// Entry is one step of a case's timeline. Notes never hold patient data.
type Entry struct {
	At     time.Time `json:"at"`
	Status Status    `json:"status"`
	By     string    `json:"by"`
	Note   string    `json:"note"`
}

// NewID returns a new random case id.
func NewID() string {
	var b [8]byte
	_, _ = rand.Read(b[:]) // never fails (crypto/rand)
	return "c-" + hex.EncodeToString(b[:])
}

// ValidID reports whether id has the form NewID gives.
func ValidID(id string) bool {
	if len(id) != 18 || id[:2] != "c-" {
		return false
	}
	_, err := hex.DecodeString(id[2:])
	return err == nil
}

// Apply moves the case on by event, done by principal by at time at, and
// records it in the timeline.
func (c *Case) Apply(e Event, by string, at time.Time, note string) error {
	next, err := Transition(c.Status, e)
	if err != nil {
		return err
	}
	c.Status = next
	c.Updated = at
	c.Timeline = append(c.Timeline, Entry{At: at, Status: next, By: by, Note: note})
	return nil
}

// IsAssigned reports whether specialist is assigned to the case.
func (c *Case) IsAssigned(specialist string) bool {
	_, ok := slices.BinarySearch(c.Assigned, specialist)
	return ok
}

// Overdue reports whether the deadline has passed at now while the case
// is still open.
func (c *Case) Overdue(now time.Time) bool {
	return !c.Deadline.IsZero() && now.After(c.Deadline) && c.Status != Closed && c.Status != Cancelled
}

// Open reports whether the case has not ended.
func (c *Case) Open() bool { return c.Status != Closed && c.Status != Cancelled }
