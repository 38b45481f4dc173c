package dicom

import (
	"bytes"
	"encoding/binary"
	"io"
	"strings"
)

// Summary holds the key attributes of an instance, as a DICOMweb store or
// index needs them. Text values are as in the instance (padding trimmed,
// in its Specific Character Set); several identify the patient, so never
// log them.
type Summary struct {
	TransferSyntaxUID string
	SOPClassUID       string
	SOPInstanceUID    string
	StudyInstanceUID  string
	SeriesInstanceUID string

	SpecificCharacterSet string
	PatientID            string
	PatientName          string
	PatientBirthDate     string
	PatientSex           string
	StudyDate            string
	StudyTime            string
	StudyID              string
	AccessionNumber      string
	ReferringPhysician   string
	StudyDescription     string
	SeriesDescription    string
	Modality             string
	SeriesNumber         string
	InstanceNumber       string

	// Image Pixel module; 0 when absent. NumberOfFrames is 1 when absent.
	Rows, Columns, BitsAllocated, SamplesPerPixel int
	NumberOfFrames                                int
	// BurnedInAnnotation is the value of (0028,0301): "YES", "NO" or "".
	BurnedInAnnotation string

	// HasPixelData reports whether the instance has (7FE0,0010) or float
	// pixel data; PixelDataLength is its encoded length (UndefinedLength
	// when encapsulated).
	HasPixelData    bool
	PixelDataLength uint32

	meta *FileMeta
	// seen records which pixel module attributes were present, and with
	// a value (bits from pixelAttr).
	seen uint8
}

// pixelAttr gives the bit of Summary.seen that records t, or 0.
func pixelAttr(t Tag) uint8 {
	switch t {
	case tagRows:
		return 1
	case tagColumns:
		return 2
	case tagBitsAllocated:
		return 4
	case tagSamplesPerPixel:
		return 8
	case tagNumberOfFrames:
		return 16
	}
	return 0
}

func (s *Summary) observe(e *Element) {
	if bit := pixelAttr(e.Tag); bit != 0 {
		if len(e.Value) > 0 || len(e.Items) > 0 {
			s.seen |= bit
		} else {
			s.seen &^= bit
		}
	}
	str := func() string { return e.String() }
	num := func() int {
		n, ok := e.Int()
		if !ok || n < 0 || n > 1<<31 {
			return 0
		}
		return int(n)
	}
	switch e.Tag {
	case tagSOPClassUID:
		s.SOPClassUID = str()
	case tagSOPInstanceUID:
		s.SOPInstanceUID = str()
	case tagStudyInstanceUID:
		s.StudyInstanceUID = str()
	case tagSeriesInstanceUID:
		s.SeriesInstanceUID = str()
	case tagSpecificCharacterSet:
		s.SpecificCharacterSet = strings.TrimRight(string(e.Value), " \x00")
	case tagPatientID:
		s.PatientID = str()
	case tagPatientName:
		s.PatientName = str()
	case tagPatientBirthDate:
		s.PatientBirthDate = str()
	case tagPatientSex:
		s.PatientSex = str()
	case tagStudyDate:
		s.StudyDate = str()
	case tagStudyTime:
		s.StudyTime = str()
	case tagStudyID:
		s.StudyID = str()
	case tagAccessionNumber:
		s.AccessionNumber = str()
	case tagReferringPhysicianName:
		s.ReferringPhysician = str()
	case tagStudyDescription:
		s.StudyDescription = str()
	case tagSeriesDescription:
		s.SeriesDescription = str()
	case tagModality:
		s.Modality = str()
	case tagSeriesNumber:
		s.SeriesNumber = str()
	case tagInstanceNumber:
		s.InstanceNumber = str()
	case tagRows:
		s.Rows = num()
	case tagColumns:
		s.Columns = num()
	case tagBitsAllocated:
		s.BitsAllocated = num()
	case tagSamplesPerPixel:
		s.SamplesPerPixel = num()
	case tagNumberOfFrames:
		s.NumberOfFrames = num()
	case tagBurnedInAnnotation:
		s.BurnedInAnnotation = strings.ToUpper(str())
	case tagPixelData, tagFloatPixelData, tagDoubleFloatPixelData:
		s.HasPixelData = true
		s.PixelDataLength = e.Length
	}
}

// Inspect reads a whole instance from r, checks it, and returns its key
// attributes. Pixel Data is streamed and checked, never held. It returns a
// [*ParseError] for anything a Part 10 receiver should refuse:
//
//   - no preamble/"DICM", no File Meta, no or an unsupported transfer
//     syntax (from [NewReader]);
//   - malformed or truncated elements, sequences or pixel data;
//   - a missing SOP Class, SOP Instance, Study Instance or Series Instance
//     UID, or File Meta UIDs that disagree with the dataset;
//   - an invalid UID (at any depth) or an invalid IS value;
//   - Pixel Data inconsistent with the Image Pixel module (missing Rows,
//     Columns, Bits Allocated or Samples per Pixel; native pixel data of
//     the wrong length; a JPEG or JPEG 2000 frame whose header disagrees
//     with Rows and Columns).
func Inspect(r io.Reader, opts ReaderOptions) (Summary, error) {
	rd, err := NewReader(r, opts)
	if err != nil {
		return Summary{}, err
	}
	for {
		e, err := rd.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return Summary{}, err
		}
		if err := checkValues(e); err != nil {
			return Summary{}, err
		}
		if !isPixelData(e.Tag) {
			continue
		}
		s := rd.Summary()
		if err := checkPixelModule(&s, e, rd.Offset()); err != nil {
			return Summary{}, err
		}
		chk := newPixelChecker(&s, e)
		if _, err := io.Copy(chk, rd.PixelData()); err != nil {
			return Summary{}, err
		}
		if err := chk.err; err != nil {
			return Summary{}, err
		}
	}
	s := rd.Summary()
	if err := checkRequired(&s, rd.Offset()); err != nil {
		return Summary{}, err
	}
	return s, nil
}

// checkRequired checks the attributes every stored instance needs.
func checkRequired(s *Summary, off int64) error {
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
			return parseErr(ReasonMetaMismatch, off, tagMediaStorageSOPInstanceUID, "Media Storage SOP Instance UID differs from SOP Instance UID")
		}
		if m.MediaStorageSOPClassUID != s.SOPClassUID {
			return parseErr(ReasonMetaMismatch, off, tagMediaStorageSOPClassUID, "Media Storage SOP Class UID differs from SOP Class UID")
		}
	}
	return nil
}

// checkValues checks UI and IS values at every depth of e. It runs on
// every element of every instance, so it does not allocate.
func checkValues(e *Element) error {
	switch e.VR {
	case "UI":
		for rest, more := e.Value, len(e.Value) > 0; more; {
			var u []byte
			u, rest, more = bytes.Cut(rest, []byte{'\\'})
			if u = bytes.Trim(u, " \x00"); len(u) > 0 && !validUID(u) {
				return parseErr(ReasonInvalidValue, e.Offset, e.Tag, "invalid UID")
			}
		}
	case "IS":
		for rest, more := e.Value, len(e.Value) > 0; more; {
			var v []byte
			v, rest, more = bytes.Cut(rest, []byte{'\\'})
			if v = bytes.Trim(v, " \x00"); len(v) > 0 && !validIS(v) {
				return parseErr(ReasonInvalidValue, e.Offset, e.Tag, "invalid IS value")
			}
		}
	}
	for _, it := range e.Items {
		for _, c := range it.Elements {
			if err := checkValues(c); err != nil {
				return err
			}
		}
	}
	return nil
}

func splitValues(v []byte) []string {
	if len(v) == 0 {
		return nil
	}
	parts := strings.Split(string(v), `\`)
	for i, p := range parts {
		parts[i] = strings.Trim(p, " \x00")
	}
	return parts
}

// ValidUID reports whether s is a valid UID (PS3.5 9.1): at most 64
// characters, dot-separated components of digits without leading zeros.
func ValidUID(s string) bool { return validUID(s) }

func validUID[T string | []byte](s T) bool {
	if len(s) == 0 || len(s) > 64 {
		return false
	}
	start := 0 // of the current component
	for i := 0; i <= len(s); i++ {
		if i == len(s) || s[i] == '.' {
			if i == start || (i-start > 1 && s[start] == '0') {
				return false
			}
			start = i + 1
			continue
		}
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

// validIS reports whether v (trimmed) is an IS value: an optional sign
// (a "+" may come before it, as strconv.ParseInt of the value without
// its first "+" would accept) and digits, 12 characters at most.
func validIS(v []byte) bool {
	if len(v) > 12 {
		return false
	}
	v = bytes.TrimPrefix(v, []byte{'+'})
	if len(v) > 0 && (v[0] == '+' || v[0] == '-') {
		v = v[1:]
	}
	if len(v) == 0 {
		return false
	}
	for _, c := range v {
		if c < '0' || c > '9' {
			return false
		}
	}
	return true
}

// checkPixelModule checks the Image Pixel module against the Pixel Data
// element header.
func checkPixelModule(s *Summary, e *Element, off int64) error {
	if e.Tag != tagPixelData {
		return nil
	}
	for _, t := range []Tag{tagRows, tagColumns, tagBitsAllocated, tagSamplesPerPixel} {
		if s.seen&pixelAttr(t) == 0 {
			return parseErr(ReasonPixelData, off, t, "Pixel Data without %s", t.Keyword())
		}
	}
	if s.Rows == 0 || s.Columns == 0 || s.BitsAllocated == 0 || s.SamplesPerPixel == 0 {
		return parseErr(ReasonPixelData, off, tagPixelData, "zero Rows, Columns, Bits Allocated or Samples per Pixel")
	}
	if s.seen&pixelAttr(tagNumberOfFrames) != 0 && s.NumberOfFrames == 0 {
		return parseErr(ReasonPixelData, off, tagNumberOfFrames, "Number of Frames is zero or not a number")
	}
	if e.Length == UndefinedLength {
		return nil
	}
	frames := max(s.NumberOfFrames, 1)
	bits := int64(s.Rows) * int64(s.Columns) * int64(s.SamplesPerPixel) * int64(s.BitsAllocated) * int64(frames)
	want := (bits + 7) / 8
	// YBR_FULL_422 and similar subsampled native data is smaller; accept
	// any length between two thirds of the full size and one padding byte
	// over it.
	got := int64(e.Length)
	if got > want+1 || got < want*2/3 {
		return parseErr(ReasonPixelData, off, tagPixelData, "native pixel data is %d bytes, the Image Pixel module implies %d", got, want)
	}
	return nil
}

// pixelChecker checks an encapsulated pixel data item stream as it is
// written: that each fragment starting a JPEG or JPEG 2000 codestream has
// a frame header agreeing with Rows and Columns. It needs only the first
// bytes of each fragment.
type pixelChecker struct {
	rows, cols   int
	encapsulated bool
	off          int64 // stream position, for errors
	base         int64
	hdr          []byte
	left         int64
	prefix       []byte
	index        int // fragment number (0 is the Basic Offset Table)
	err          error
}

const pixelPrefix = 64 << 10

func newPixelChecker(s *Summary, e *Element) *pixelChecker {
	return &pixelChecker{rows: s.Rows, cols: s.Columns, encapsulated: e.Length == UndefinedLength, base: e.Offset}
}

func (c *pixelChecker) Write(p []byte) (int, error) {
	n := len(p)
	if !c.encapsulated || c.err != nil {
		return n, nil
	}
	for len(p) > 0 {
		if c.left == 0 {
			if len(c.prefix) > 0 {
				c.checkFragment()
			}
			k := min(8-len(c.hdr), len(p))
			c.hdr = append(c.hdr, p[:k]...)
			p = p[k:]
			if len(c.hdr) < 8 {
				break
			}
			c.left = int64(binary.LittleEndian.Uint32(c.hdr[4:8]))
			c.hdr = c.hdr[:0]
			c.prefix = c.prefix[:0]
			c.index++
			continue
		}
		k := int(min(int64(len(p)), c.left))
		if c.index > 1 && len(c.prefix) < pixelPrefix {
			c.prefix = append(c.prefix, p[:min(k, pixelPrefix-len(c.prefix))]...)
		}
		c.left -= int64(k)
		p = p[k:]
		if c.left == 0 {
			c.checkFragment()
		}
	}
	return n, nil
}

func (c *pixelChecker) checkFragment() {
	b := c.prefix
	c.prefix = c.prefix[:0]
	c.checkPrefix(c.index-1, b)
}

// checkPrefix checks the first bytes (up to pixelPrefix) of fragment n
// (1 is the first after the Basic Offset Table).
func (c *pixelChecker) checkPrefix(n int, b []byte) {
	if c.err != nil || len(b) < 4 {
		return
	}
	var w, h int
	var ok bool
	switch {
	case b[0] == 0xFF && b[1] == 0x4F && b[2] == 0xFF && b[3] == 0x51:
		w, h, ok = j2kSize(b)
		if !ok {
			c.err = parseErr(ReasonPixelData, c.base, tagPixelData, "fragment %d: broken JPEG 2000 SIZ marker", n)
			return
		}
	case b[0] == 0xFF && b[1] == 0xD8:
		w, h, ok = jpegSize(b)
		if !ok {
			return // no frame header in the first bytes: nothing to compare
		}
	default:
		return
	}
	if w != c.cols || (h != c.rows && h != 0) {
		c.err = parseErr(ReasonPixelData, c.base, tagPixelData, "fragment %d: codestream is %dx%d, Rows/Columns say %dx%d", n, w, h, c.cols, c.rows)
	}
}

// j2kSize reads the image size from a JPEG 2000 codestream's SIZ marker
// segment (ISO/IEC 15444-1 A.5.1), which directly follows SOC.
func j2kSize(b []byte) (w, h int, ok bool) {
	if len(b) < 4+2+2+8*4 {
		return 0, 0, false
	}
	lsiz := binary.BigEndian.Uint16(b[4:])
	if lsiz < 41 {
		return 0, 0, false
	}
	be := binary.BigEndian
	xsiz, ysiz := be.Uint32(b[8:]), be.Uint32(b[12:])
	xo, yo := be.Uint32(b[16:]), be.Uint32(b[20:])
	if xo >= xsiz || yo >= ysiz {
		return 0, 0, false
	}
	return int(xsiz - xo), int(ysiz - yo), true
}

// jpegSize finds the first start-of-frame marker (SOF0-SOF15 but DHT, JPG
// and DAC; and JPEG-LS SOF55) and returns its width and height.
func jpegSize(b []byte) (w, h int, ok bool) {
	i := 2
	for i+4 <= len(b) {
		if b[i] != 0xFF {
			return 0, 0, false
		}
		m := b[i+1]
		if m == 0xFF {
			i++
			continue
		}
		if m == 0xD8 || (m >= 0xD0 && m <= 0xD7) || m == 0x01 {
			i += 2
			continue
		}
		l := int(binary.BigEndian.Uint16(b[i+2:]))
		isSOF := (m >= 0xC0 && m <= 0xCF && m != 0xC4 && m != 0xC8 && m != 0xCC) || m == 0xF7
		if isSOF {
			if i+9 > len(b) {
				return 0, 0, false
			}
			return int(binary.BigEndian.Uint16(b[i+7:])), int(binary.BigEndian.Uint16(b[i+5:])), true
		}
		if m == 0xDA || l < 2 {
			return 0, 0, false
		}
		i += 2 + l
	}
	return 0, 0, false
}
