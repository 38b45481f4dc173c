package dicom

import "fmt"

// Tag is a data element tag, group in the high 16 bits.
type Tag uint32

// NewTag returns the tag (group,element).
func NewTag(group, element uint16) Tag { return Tag(uint32(group)<<16 | uint32(element)) }

// Group returns the group number.
func (t Tag) Group() uint16 { return uint16(t >> 16) }

// Element returns the element number.
func (t Tag) Element() uint16 { return uint16(t) }

// IsPrivate reports whether the tag is in an odd (private) group.
func (t Tag) IsPrivate() bool { return t.Group()&1 == 1 }

// IsPrivateCreator reports whether t is a Private Creator element
// (gggg,0010-00FF) of an odd group.
func (t Tag) IsPrivateCreator() bool {
	return t.IsPrivate() && t.Element() >= 0x0010 && t.Element() <= 0x00FF
}

// String formats the tag as "(gggg,eeee)".
func (t Tag) String() string { return fmt.Sprintf("(%04X,%04X)", t.Group(), t.Element()) }

// MarshalText formats the tag as "(gggg,eeee)", for reports.
func (t Tag) MarshalText() ([]byte, error) { return []byte(t.String()), nil }

// UnmarshalText reads "(gggg,eeee)", so that reports read back.
func (t *Tag) UnmarshalText(b []byte) error {
	var g, e uint16
	if n, err := fmt.Sscanf(string(b), "(%04X,%04X)", &g, &e); err != nil || n != 2 || len(b) != 11 {
		return fmt.Errorf("dicom: invalid tag %q", b)
	}
	*t = NewTag(g, e)
	return nil
}

// Keyword returns the PS3.6 keyword of the tag, or "" when unknown.
func (t Tag) Keyword() string {
	if r, ok := profileRule(t); ok && r.keyword != "" {
		return r.keyword
	}
	if d, ok := lookupDict(t); ok {
		return d.keyword
	}
	if t.Element() == 0 && !t.IsPrivate() {
		return "GenericGroupLength"
	}
	return ""
}

// Tags this package reads or writes.
const (
	tagMetaGroupLength            Tag = 0x00020000
	tagMetaVersion                Tag = 0x00020001
	tagMediaStorageSOPClassUID    Tag = 0x00020002
	tagMediaStorageSOPInstanceUID Tag = 0x00020003
	tagTransferSyntaxUID          Tag = 0x00020010
	tagImplementationClassUID     Tag = 0x00020012
	tagImplementationVersionName  Tag = 0x00020013
	tagSourceApplicationEntity    Tag = 0x00020016

	tagSpecificCharacterSet          Tag = 0x00080005
	tagImageType                     Tag = 0x00080008
	tagSOPClassUID                   Tag = 0x00080016
	tagSOPInstanceUID                Tag = 0x00080018
	tagStudyDate                     Tag = 0x00080020
	tagStudyTime                     Tag = 0x00080030
	tagAccessionNumber               Tag = 0x00080050
	tagModality                      Tag = 0x00080060
	tagReferringPhysicianName        Tag = 0x00080090
	tagCodeValue                     Tag = 0x00080100
	tagCodingSchemeDesignator        Tag = 0x00080102
	tagCodeMeaning                   Tag = 0x00080104
	tagStudyDescription              Tag = 0x00081030
	tagSeriesDescription             Tag = 0x0008103E
	tagPatientName                   Tag = 0x00100010
	tagPatientID                     Tag = 0x00100020
	tagPatientBirthDate              Tag = 0x00100030
	tagPatientSex                    Tag = 0x00100040
	tagPatientAge                    Tag = 0x00101010
	tagPatientIdentityRemoved        Tag = 0x00120062
	tagDeidentificationMethod        Tag = 0x00120063
	tagDeidentificationMethodCodeSeq Tag = 0x00120064
	tagStudyInstanceUID              Tag = 0x0020000D
	tagSeriesInstanceUID             Tag = 0x0020000E
	tagStudyID                       Tag = 0x00200010
	tagSeriesNumber                  Tag = 0x00200011
	tagInstanceNumber                Tag = 0x00200013
	tagSamplesPerPixel               Tag = 0x00280002
	tagNumberOfFrames                Tag = 0x00280008
	tagRows                          Tag = 0x00280010
	tagColumns                       Tag = 0x00280011
	tagBitsAllocated                 Tag = 0x00280100
	tagBurnedInAnnotation            Tag = 0x00280301
	tagLongitudinalTemporalInfoModif Tag = 0x00280303
	tagPersonIdentificationCodeSeq   Tag = 0x00401101
	tagFloatPixelData                Tag = 0x7FE00008
	tagDoubleFloatPixelData          Tag = 0x7FE00009
	tagPixelData                     Tag = 0x7FE00010
	tagItem                          Tag = 0xFFFEE000
)

// isPixelData reports whether t is one of the top-level bulk pixel data
// elements that a Reader streams instead of holding.
func isPixelData(t Tag) bool {
	return t == tagPixelData || t == tagFloatPixelData || t == tagDoubleFloatPixelData
}

// dictEntry is one attribute of the PS3.6 dictionary (dict_gen.go).
type dictEntry struct {
	tag     Tag
	vr      string // for Implicit VR data
	keyword string
}

// lookupDict finds t in the dictionary; repeating groups (curves 50xx,
// overlays 60xx) are listed under their first group.
func lookupDict(t Tag) (dictEntry, bool) {
	g := t.Group()
	if g >= 0x5000 && g <= 0x501E && g&1 == 0 {
		g = 0x5000
	}
	if g >= 0x6000 && g <= 0x601E && g&1 == 0 {
		g = 0x6000
	}
	t = NewTag(g, t.Element())
	lo, hi := 0, len(dictionary)
	for lo < hi {
		m := int(uint(lo+hi) >> 1)
		if dictionary[m].tag < t {
			lo = m + 1
		} else {
			hi = m
		}
	}
	if lo < len(dictionary) && dictionary[lo].tag == t {
		return dictionary[lo], true
	}
	return dictEntry{}, false
}

// lookupVR gives the VR of a tag for implicit VR data: the PS3.6
// dictionary of github.com/suyashkumar/dicom (dict_gen.go), the VRs of
// Table E.1-1 for newer attributes, LO for Private Creators and UN
// otherwise. Where PS3.6 allows two VRs (US or SS, OB or OW) it picks the
// one implicit VR encoding uses (US, OW).
func lookupVR(u uint32) string {
	t := Tag(u)
	if t.Element() == 0 {
		return "UL" // group length
	}
	if t.IsPrivate() {
		if t.IsPrivateCreator() {
			return "LO"
		}
		return "UN"
	}
	if r, ok := profileRule(t); ok && r.vr != "" {
		return r.vr
	}
	if d, ok := lookupDict(t); ok {
		return d.vr
	}
	return "UN"
}
