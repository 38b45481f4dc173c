package deid

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"math/bits"
	"strconv"
	"strings"
	"time"
)

// Errors that callers branch on.
var (
	// ErrUnknown is returned by [Reverser] methods when the pseudonym or UID
	// was never issued (or not recorded).
	ErrUnknown = errors.New("deid: unknown pseudonym or UID")
	// ErrNoPatientKey is returned when a patient key is empty.
	ErrNoPatientKey = errors.New("deid: empty patient key")
)

// Patient is what a [Source] gives for one patient.
type Patient struct {
	// Pseudonym replaces the patient's identifiers: DICOM Patient ID and
	// Patient's Name, FHIR Patient.id and its one identifier. 32 lower-case
	// hex digits (a valid FHIR id, DICOM LO and PN).
	Pseudonym string
	// OffsetDays is the patient's date shift in days, the same in every file
	// and every packet. Always negative (dates move into the past) and never
	// zero.
	OffsetDays int
}

// Shift moves t by the patient's offset.
func (p Patient) Shift(t time.Time) time.Time { return t.AddDate(0, 0, p.OffsetDays) }

// Source gives pseudonyms, date offsets and new UIDs. The same patient key
// always gets the same Patient, and the same original UID (under the same
// patient key) always gets the same new UID, for the life of the source's
// secret or mapping. Implementations are safe for concurrent use.
type Source interface {
	// Patient returns the pseudonym and date offset of the patient named by
	// key. It returns ErrNoPatientKey for an empty key.
	Patient(ctx context.Context, key string) (Patient, error)
	// UIDs returns the new UID, of the form "2.25.<decimal>", for each
	// original UID of the patient's record, in order. Callers pass all the
	// UIDs of a file (or a study) at once: a recording source writes each
	// batch of new mappings in one store write.
	UIDs(ctx context.Context, key string, originals []string) ([]string, error)
}

// Reverser is the optional ability of a [Source] to map back, used by the
// gateway to re-identify returned opinions.
type Reverser interface {
	// PatientKey returns the patient key behind a pseudonym, or ErrUnknown.
	PatientKey(ctx context.Context, pseudonym string) (string, error)
	// OriginalUIDs returns, for each new UID issued for the patient with
	// this pseudonym, the original UID, in order. It returns ErrUnknown if
	// the pseudonym or any of the UIDs is unknown.
	OriginalUIDs(ctx context.Context, pseudonym string, uids []string) ([]string, error)
}

// Date offsets lie in [-maxOffsetDays, -1]: up to three years into the past,
// never zero, so no date survives unchanged.
const maxOffsetDays = 3 * 365

// uidFromBytes turns 16 bytes into a "2.25.<decimal>" UID (PS3.5 B.2). The
// bytes are first made a version 8 (or 4, for random) RFC 9562 UUID so that
// the UID is a well-formed UUID-derived UID.
func uidFromBytes(b [16]byte, version byte) string {
	b[6] = b[6]&0x0f | version<<4
	b[8] = b[8]&0x3f | 0x80
	return "2.25." + decimal128(binary.BigEndian.Uint64(b[:8]), binary.BigEndian.Uint64(b[8:]))
}

// decimal128 formats the 128-bit number hi<<64 | lo in decimal (as
// math/big would, with a few allocations fewer: it runs for every UID of
// every instance).
func decimal128(hi, lo uint64) string {
	const e19 = 10_000_000_000_000_000_000 // the largest power of 10 below 2^64
	var chunks [3]uint64                   // 19 digits each, least significant first
	n := 0
	for {
		var rem uint64
		hi, rem = hi/e19, hi%e19
		lo, rem = bits.Div64(rem, lo, e19)
		chunks[n] = rem
		n++
		if hi == 0 && lo == 0 {
			break
		}
	}
	buf := strconv.AppendUint(make([]byte, 0, 40), chunks[n-1], 10)
	for i := n - 2; i >= 0; i-- {
		digits := strconv.AppendUint(make([]byte, 0, 19), chunks[i], 10)
		buf = append(buf, "0000000000000000000"[len(digits):]...)
		buf = append(buf, digits...)
	}
	return string(buf)
}

func randomUID() (string, error) {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", err
	}
	return uidFromBytes(b, 4), nil
}

// NewUID returns a fresh random "2.25." UID, for objects that have no
// original (for example a new Implementation Class UID or a packet).
func NewUID() (string, error) { return randomUID() }

// IsPseudonym reports whether s has the form of a pseudonym issued by this
// package (32 lower-case hex digits).
func IsPseudonym(s string) bool {
	if len(s) != 32 {
		return false
	}
	return strings.Trim(s, "0123456789abcdef") == ""
}
