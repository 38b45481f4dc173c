package dicom

import (
	"errors"
	"fmt"

	"github.com/consilium/consilium/dicom/internal/wire"
)

// ErrInvalid matches (errors.Is) every [*ParseError]: the input is not a
// DICOM instance this package accepts.
var ErrInvalid = errors.New("dicom: invalid instance")

// Reason says why an instance was refused. The values are stable and safe
// to show to a sender (they carry no data from the instance).
type Reason string

// Reasons for refusing an instance.
const (
	ReasonNoPreamble         Reason = "no-preamble"             // no 128-byte preamble and "DICM" prefix
	ReasonNoMeta             Reason = "no-file-meta"            // no File Meta Information group (0002)
	ReasonNoTransferSyntax   Reason = "missing-transfer-syntax" // File Meta has no Transfer Syntax UID
	ReasonUnsupportedSyntax  Reason = "unsupported-transfer-syntax"
	ReasonMissingSOPClass    Reason = "missing-sop-class-uid"
	ReasonMissingSOPInstance Reason = "missing-sop-instance-uid"
	ReasonMissingStudy       Reason = "missing-study-instance-uid"
	ReasonMissingSeries      Reason = "missing-series-instance-uid"
	ReasonMetaMismatch       Reason = "meta-mismatch" // File Meta disagrees with the dataset
	ReasonInvalidValue       Reason = "invalid-value" // a value that its VR does not allow (UID, IS)
	ReasonPixelData          Reason = "pixel-data"    // Pixel Data inconsistent with the Image Pixel module
	ReasonMalformed          Reason = "malformed"     // bytes that cannot be a data element
	ReasonTruncated          Reason = "truncated"     // the input ends inside an element
	ReasonTooLarge           Reason = "too-large"     // beyond the reader's limits
)

// ParseError is why an instance was refused: the reason, the byte offset
// in the stream (after inflation, for a deflated dataset) and the tag
// concerned, when there is one. Its message never holds a value from the
// instance. errors.Is(err, ErrInvalid) holds for every ParseError.
type ParseError struct {
	Reason Reason
	Offset int64
	Tag    Tag // 0 when no element is concerned
	Detail string
	Err    error
}

func (e *ParseError) Error() string {
	s := fmt.Sprintf("dicom: %s at byte %d", e.Reason, e.Offset)
	if e.Tag != 0 {
		s += " " + e.Tag.String()
	}
	if e.Detail != "" {
		s += ": " + e.Detail
	}
	return s
}

// Unwrap returns the underlying error, if any.
func (e *ParseError) Unwrap() error { return e.Err }

// Is makes errors.Is(err, ErrInvalid) true.
func (e *ParseError) Is(target error) bool { return target == ErrInvalid }

func parseErr(r Reason, off int64, t Tag, format string, a ...any) *ParseError {
	return &ParseError{Reason: r, Offset: off, Tag: t, Detail: fmt.Sprintf(format, a...)}
}

// fromWire turns a tokenizer error into a ParseError.
func fromWire(err error, t Tag) error {
	var we *wire.Error
	if !errors.As(err, &we) {
		return err
	}
	r := ReasonMalformed
	switch we.Kind {
	case wire.Truncated:
		r = ReasonTruncated
	case wire.TooLarge:
		r = ReasonTooLarge
	}
	return &ParseError{Reason: r, Offset: we.Offset, Tag: t, Detail: we.Msg}
}
