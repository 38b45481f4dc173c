package imaging

import (
	"errors"
	"fmt"

	"github.com/consilium/consilium/dicom"
)

// Status is a DICOM status code, as the Failure Reason (0008,1197) and
// Warning Reason (0008,1196) of a STOW-RS answer carry it.
type Status uint16

// Failure reasons. The first six are PS3.18 Table I.2-2 (and PS3.4
// Table B.2-1); Duplicate and Not Authorized are PS3.7 Annex C codes,
// which Table I.2-2 lets an origin server add.
const (
	// StatusOutOfResources (A700): the instance exceeds the archive's
	// limits (MaxInstanceBytes, MaxHeaderBytes, or a reader limit).
	StatusOutOfResources Status = 0xA700
	// StatusDataSetMismatch (A900): the instance is not a valid instance
	// of its SOP Class: a missing or invalid SOP Class, SOP Instance,
	// Study or Series Instance UID; Pixel Data that disagrees with the
	// Image Pixel module; a Patient ID other than the study's; or a study
	// other than the one the request is addressed to.
	StatusDataSetMismatch Status = 0xA900
	// StatusCannotUnderstand (C000): not a DICOM Part 10 file (no
	// preamble or File Meta, no Transfer Syntax UID), malformed or
	// truncated data, or a part that is not application/dicom.
	StatusCannotUnderstand Status = 0xC000
	// StatusTransferSyntaxNotSupported (C122): a transfer syntax this
	// archive cannot read (a private one).
	StatusTransferSyntaxNotSupported Status = 0xC122
	// StatusProcessingFailure (0110): the store failed; retry.
	StatusProcessingFailure Status = 0x0110
	// StatusDuplicateInstance (0111): different bytes are already stored
	// under this SOP Instance UID (resend with IngestOptions.Replace).
	StatusDuplicateInstance Status = 0x0111
	// StatusSOPClassNotSupported (0122): not a composite instance (a
	// DICOMDIR).
	StatusSOPClassNotSupported Status = 0x0122
	// StatusNotAuthorized (0124): the policy refused storing into this
	// study.
	StatusNotAuthorized Status = 0x0124
)

// WarningDataSetMismatch (B007) is the Warning Reason of an instance
// stored with defects [dicom.Check] accepts: an invalid UID or IS value
// outside the key attributes, or File Meta UIDs that disagree with the
// dataset.
const WarningDataSetMismatch Status = 0xB007

// String returns the code in hexadecimal, as PS3.18 writes it.
func (s Status) String() string { return fmt.Sprintf("%04X", uint16(s)) }

// ErrNotAuthorized is what an [IngestOptions.Authorize] callback returns
// (wrapped) for a policy refusal; other errors count as processing
// failures.
var ErrNotAuthorized = errors.New("imaging: not authorized")

// refusal is an instance refused for a reason the archive decided.
type refusal struct {
	status Status
	msg    string
}

func (r *refusal) Error() string { return r.msg }

func refuse(s Status, format string, a ...any) error {
	return &refusal{status: s, msg: fmt.Sprintf(format, a...)}
}

// errTooLarge is returned when an instance exceeds MaxInstanceBytes, and
// errHeaderTooLarge when its header exceeds MaxHeaderBytes.
var (
	errTooLarge       = errors.New("imaging: instance too large")
	errHeaderTooLarge = errors.New("imaging: header too large")
)

// classify turns why an instance was refused into a status and a
// message that is safe to show the sender.
func (a *Archive) classify(err error) (Status, string) {
	var r *refusal
	var pe *dicom.ParseError
	switch {
	case errors.As(err, &r):
		return r.status, r.msg
	case errors.Is(err, errTooLarge):
		return StatusOutOfResources, fmt.Sprintf("the instance exceeds the archive's limit of %d bytes", a.maxBytes)
	case errors.Is(err, errHeaderTooLarge):
		return StatusOutOfResources, fmt.Sprintf("the header (before Pixel Data) exceeds the archive's limit of %d bytes", a.maxHeader)
	case errors.As(err, &pe):
		msg := pe.Error() // ParseError messages carry no value from the instance
		switch pe.Reason {
		case dicom.ReasonUnsupportedSyntax:
			return StatusTransferSyntaxNotSupported, msg
		case dicom.ReasonTooLarge:
			return StatusOutOfResources, msg
		case dicom.ReasonMissingSOPClass, dicom.ReasonMissingSOPInstance, dicom.ReasonMissingStudy,
			dicom.ReasonMissingSeries, dicom.ReasonMetaMismatch, dicom.ReasonInvalidValue, dicom.ReasonPixelData:
			return StatusDataSetMismatch, msg
		default: // no preamble or meta, no transfer syntax, malformed, truncated
			return StatusCannotUnderstand, msg
		}
	default:
		return StatusProcessingFailure, "the instance could not be stored; try again"
	}
}
