package dicom

import (
	"io"
	"strconv"
	"strings"
)

// CheckOptions modify [Check].
type CheckOptions struct {
	// Reader limits the Reader that Check uses.
	Reader ReaderOptions
	// Header, when set, is called once the elements before Pixel Data
	// have been read and checked (all elements, for an instance without
	// Pixel Data), with the Summary so far: it is complete but for
	// trailing elements, and the key UIDs are present and valid. An error
	// it returns ends Check with that error, before Pixel Data is read.
	// A store uses it to decide where the instance goes, and whether it
	// may go there, before the bulk of its bytes arrives.
	Header func(Summary) error
	// MaxWarnings bounds the warnings returned (0: 16); further ones are
	// dropped.
	MaxWarnings int
}

// CheckResult is what [Check] learns about an instance.
type CheckResult struct {
	// Summary holds the key attributes; when Check fails, those read
	// before the failure (so that a refusal can name the instance).
	Summary Summary
	// Warnings are the defects accepted (see Check).
	Warnings []*ParseError
	// PixelData is the byte offset of the top-level Pixel Data value (after
	// its element header) and PixelDataEnd the offset just after it; both
	// 0 without Pixel Data. Trailing reports elements after Pixel Data.
	// Offsets count inflated bytes for a deflated dataset (see
	// [TransferSyntax.Deflated]), where they are not offsets in the file.
	PixelData, PixelDataEnd int64
	Trailing                bool
}

// Check reads a whole instance from r and checks it as a DICOM store
// (DICOMweb STOW-RS, a C-STORE SCP) receives it: it refuses what [Inspect]
// refuses, except for two defects that leave the instance usable and that
// PS3.4 lets a storage SCP accept with a warning (status B007, "Data Set
// does not match SOP Class"), which Check returns as warnings instead:
//
//   - an invalid UI or IS value in any attribute but the key ones (SOP
//     Class, SOP Instance, Study Instance and Series Instance UID at the
//     top level) and Number of Frames, which Pixel Data depends on; for
//     example a UID component with a leading zero in a reference;
//   - File Meta SOP Class or Instance UIDs that disagree with the dataset
//     (the dataset's are the ones a store indexes).
//
// Everything else Inspect refuses stays an error (a [*ParseError]): no
// preamble or File Meta, no or an unsupported transfer syntax, malformed
// or truncated data, a missing or invalid key UID, and Pixel Data that
// disagrees with the Image Pixel module. Pixel Data is streamed and
// checked, never held.
func Check(r io.Reader, opts CheckOptions) (CheckResult, error) {
	maxWarn := opts.MaxWarnings
	if maxWarn <= 0 {
		maxWarn = 16
	}
	rd, err := NewReader(r, opts.Reader)
	if err != nil {
		return CheckResult{}, err
	}
	var warnings []*ParseError
	warn := func(w *ParseError) {
		if len(warnings) < maxWarn {
			warnings = append(warnings, w)
		}
	}
	var res CheckResult
	headerDone := false
	header := func() error {
		headerDone = true
		s := rd.Summary()
		if err := checkKeys(&s, rd.Offset(), warn); err != nil {
			return err
		}
		if opts.Header != nil {
			return opts.Header(s)
		}
		return nil
	}
	for {
		e, err := rd.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return CheckResult{Summary: rd.Summary(), Warnings: warnings}, err
		}
		if res.PixelDataEnd > 0 {
			res.Trailing = true
		}
		if err := checkValuesLenient(e, true, warn); err != nil {
			return CheckResult{Summary: rd.Summary(), Warnings: warnings}, err
		}
		if !isPixelData(e.Tag) {
			continue
		}
		if !headerDone {
			if err := header(); err != nil {
				return CheckResult{Summary: rd.Summary(), Warnings: warnings}, err
			}
		}
		valueStart := rd.Offset()
		s := rd.Summary()
		if err := checkPixelModule(&s, e, rd.Offset()); err != nil {
			return CheckResult{Summary: rd.Summary(), Warnings: warnings}, err
		}
		chk := newPixelChecker(&s, e)
		if _, err := io.Copy(chk, rd.PixelData()); err != nil {
			return CheckResult{Summary: rd.Summary(), Warnings: warnings}, err
		}
		if err := chk.err; err != nil {
			return CheckResult{Summary: rd.Summary(), Warnings: warnings}, err
		}
		if e.Tag == tagPixelData && res.PixelDataEnd == 0 {
			res.PixelData, res.PixelDataEnd = valueStart, rd.Offset()
		}
	}
	if !headerDone {
		if err := header(); err != nil {
			return CheckResult{Summary: rd.Summary(), Warnings: warnings}, err
		}
	}
	res.Summary, res.Warnings = rd.Summary(), warnings
	return res, nil
}

// checkKeys checks the attributes every stored instance needs; File Meta
// UIDs that disagree with the dataset are warnings.
func checkKeys(s *Summary, off int64, warn func(*ParseError)) error {
	switch {
	case s.SOPClassUID == "":
		return parseErr(ReasonMissingSOPClass, off, tagSOPClassUID, "no SOP Class UID")
	case s.SOPInstanceUID == "":
		return parseErr(ReasonMissingSOPInstance, off, tagSOPInstanceUID, "no SOP Instance UID")
	case s.StudyInstanceUID == "":
		return parseErr(ReasonMissingStudy, off, tagStudyInstanceUID, "no Study Instance UID")
	case s.SeriesInstanceUID == "":
		return parseErr(ReasonMissingSeries, off, tagSeriesInstanceUID, "no Series Instance UID")
	}
	if m := s.meta; m != nil && len(m.Elements) > 0 {
		if m.MediaStorageSOPInstanceUID != s.SOPInstanceUID {
			warn(parseErr(ReasonMetaMismatch, off, tagMediaStorageSOPInstanceUID, "Media Storage SOP Instance UID differs from SOP Instance UID"))
		}
		if m.MediaStorageSOPClassUID != s.SOPClassUID {
			warn(parseErr(ReasonMetaMismatch, off, tagMediaStorageSOPClassUID, "Media Storage SOP Class UID differs from SOP Class UID"))
		}
	}
	return nil
}

// strictTag reports whether an invalid value of top-level element t must
// refuse the instance rather than warn.
func strictTag(t Tag) bool {
	switch t {
	case tagSOPClassUID, tagSOPInstanceUID, tagStudyInstanceUID, tagSeriesInstanceUID, tagNumberOfFrames:
		return true
	}
	return false
}

// checkValuesLenient checks UI and IS values at every depth of e, as
// checkValues does, but only an invalid key value is an error; the others
// are passed to warn.
func checkValuesLenient(e *Element, top bool, warn func(*ParseError)) error {
	var bad *ParseError
	switch e.VR {
	case "UI":
		for _, u := range splitValues(e.Value) {
			if u != "" && !ValidUID(u) {
				bad = parseErr(ReasonInvalidValue, e.Offset, e.Tag, "invalid UID")
				break
			}
		}
	case "IS":
		for _, v := range splitValues(e.Value) {
			if v == "" {
				continue
			}
			if _, err := strconv.ParseInt(strings.TrimPrefix(v, "+"), 10, 64); err != nil || len(v) > 12 {
				bad = parseErr(ReasonInvalidValue, e.Offset, e.Tag, "invalid IS value")
				break
			}
		}
	}
	if bad != nil {
		if top && strictTag(e.Tag) {
			return bad
		}
		warn(bad)
	}
	for _, it := range e.Items {
		for _, c := range it.Elements {
			if err := checkValuesLenient(c, false, warn); err != nil {
				return err
			}
		}
	}
	return nil
}
