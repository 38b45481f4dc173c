package dicom

import (
	"bytes"
	"cmp"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"

	"github.com/consilium/consilium/deid"
	"github.com/consilium/consilium/dicom/internal/wire"
)

// MediaStorageDirectoryStorage is the SOP Class UID of a DICOMDIR (PS3.4
// Media Storage Directory Storage).
const MediaStorageDirectoryStorage = "1.2.840.10008.1.3.10"

// Errors returned by [Directory.Add].
var (
	// ErrDuplicateInstance is returned for a SOP Instance UID that is
	// already in the directory.
	ErrDuplicateInstance = errors.New("dicom: instance already in the directory")
	// ErrNotPlaceable is returned for an instance that cannot be placed in
	// the patient/study/series hierarchy (no SOP Class, SOP Instance,
	// Study Instance or Series Instance UID), or when the file ID scheme
	// runs out of numbers.
	ErrNotPlaceable = errors.New("dicom: instance cannot be placed in a DICOMDIR")
)

// DirectoryOptions configure a [Directory].
type DirectoryOptions struct {
	// FileSetID is the File-set ID (0004,1130): up to 16 characters of
	// A-Z, 0-9, space and underscore. Empty is allowed (Type 2).
	FileSetID string
	// Root is the first component of every file ID (default "DICOM").
	Root string
}

// Directory builds the DICOMDIR of a file-set (PS3.10 media, PS3.3 Annex F
// Basic Directory IOD): one PATIENT record per Patient ID, then STUDY,
// SERIES and an instance-level record (IMAGE, SR DOCUMENT, RT DOSE, ...,
// chosen by SOP class) per instance, with the keys each record type
// requires copied from the instance. It also names the files: [Directory.Add]
// returns the file ID under which the instance must be stored,
// ROOT/Pnnnnnnn/Snnnnnnn/SEnnnnnn/Innnnnnn (1-based numbers, in the order
// patients, studies, series and instances are added), which satisfies PS3.10
// 8.2 (at most 8 components of at most 8 characters, A-Z 0-9 _).
//
// Only the keys are kept, a few hundred bytes per instance. A Directory is
// not safe for concurrent use.
type Directory struct {
	opts     DirectoryOptions
	patients []*dirRecord
	byID     map[string]*dirRecord
	seen     map[string]bool
}

// dirRecord is one directory record with its lower-level records.
type dirRecord struct {
	typ      string
	keys     []*Element // sorted by tag, structural elements excluded
	children []*dirRecord
	byUID    map[string]*dirRecord
}

// Directory record attributes (PS3.3 F.3 and F.5).
const (
	tagFileSetID                 Tag = 0x00041130
	tagFirstRootRecordOffset     Tag = 0x00041200
	tagLastRootRecordOffset      Tag = 0x00041202
	tagFileSetConsistencyFlag    Tag = 0x00041212
	tagDirectoryRecordSequence   Tag = 0x00041220
	tagNextRecordOffset          Tag = 0x00041400
	tagRecordInUseFlag           Tag = 0x00041410
	tagLowerLevelRecordOffset    Tag = 0x00041420
	tagDirectoryRecordType       Tag = 0x00041430
	tagReferencedFileID          Tag = 0x00041500
	tagReferencedSOPClassInFile  Tag = 0x00041510
	tagReferencedSOPInstInFile   Tag = 0x00041511
	tagReferencedTSInFile        Tag = 0x00041512
	tagContentDate               Tag = 0x00080023
	tagContentTime               Tag = 0x00080033
	tagConceptNameCodeSequence   Tag = 0x0040A043
	tagCompletionFlag            Tag = 0x0040A491
	tagVerificationFlag          Tag = 0x0040A493
	tagVerificationDateTime      Tag = 0x0040A030
	tagVerifyingObserverSequence Tag = 0x0040A073
	tagDoseSummationType         Tag = 0x3004000A
	tagStructureSetLabel         Tag = 0x30060002
	tagStructureSetDate          Tag = 0x30060008
	tagStructureSetTime          Tag = 0x30060009
	tagRTPlanLabel               Tag = 0x300A0002
	tagRTPlanDate                Tag = 0x300A0006
	tagRTPlanTime                Tag = 0x300A0007
	tagTreatmentDate             Tag = 0x30080250
	tagTreatmentTime             Tag = 0x30080251
	tagPresentationCreationDate  Tag = 0x00700082
	tagPresentationCreationTime  Tag = 0x00700083
	tagContentLabel              Tag = 0x00700080
	tagContentDescription        Tag = 0x00700081
	tagContentCreatorName        Tag = 0x00700084
	tagDocumentTitle             Tag = 0x00420010
	tagMIMETypeOfEncapsulatedDoc Tag = 0x00420012
)

// recordKey is one key attribute of a record type; typ is its Type in
// PS3.3 F.5 (1: a value is required, 2: present, possibly empty, 3:
// optional, copied when the instance has it).
type recordKey struct {
	tag Tag
	vr  string
	typ int
}

var (
	patientKeys = []recordKey{{tagPatientName, "PN", 2}, {tagPatientID, "LO", 1}}
	studyKeys   = []recordKey{
		{tagStudyDate, "DA", 1}, {tagStudyTime, "TM", 1}, {tagAccessionNumber, "SH", 2},
		{tagStudyDescription, "LO", 2}, {tagStudyInstanceUID, "UI", 1}, {tagStudyID, "SH", 1},
	}
	seriesKeys = []recordKey{
		{tagModality, "CS", 1}, {tagSeriesDescription, "LO", 3}, {tagSeriesInstanceUID, "UI", 1}, {tagSeriesNumber, "IS", 1},
	}
	// instanceKeys lists the keys of each instance-level record type.
	instanceKeys = map[string][]recordKey{
		"IMAGE": {{tagInstanceNumber, "IS", 1}},
		"SR DOCUMENT": {
			{tagContentDate, "DA", 1}, {tagContentTime, "TM", 1}, {tagInstanceNumber, "IS", 1},
			{tagVerificationDateTime, "DT", 3}, {tagConceptNameCodeSequence, "SQ", 1},
			{tagCompletionFlag, "CS", 1}, {tagVerificationFlag, "CS", 1},
		},
		"KEY OBJECT DOC": {
			{tagContentDate, "DA", 1}, {tagContentTime, "TM", 1}, {tagInstanceNumber, "IS", 1},
			{tagConceptNameCodeSequence, "SQ", 1},
		},
		"RT DOSE":          {{tagInstanceNumber, "IS", 1}, {tagDoseSummationType, "CS", 1}},
		"RT STRUCTURE SET": {{tagInstanceNumber, "IS", 1}, {tagStructureSetLabel, "SH", 1}, {tagStructureSetDate, "DA", 2}, {tagStructureSetTime, "TM", 2}},
		"RT PLAN":          {{tagInstanceNumber, "IS", 1}, {tagRTPlanLabel, "SH", 1}, {tagRTPlanDate, "DA", 2}, {tagRTPlanTime, "TM", 2}},
		"RT TREAT RECORD":  {{tagInstanceNumber, "IS", 1}, {tagTreatmentDate, "DA", 2}, {tagTreatmentTime, "TM", 2}},
		"PRESENTATION": {
			{tagInstanceNumber, "IS", 1}, {tagContentLabel, "CS", 1}, {tagContentDescription, "LO", 2},
			{tagPresentationCreationDate, "DA", 1}, {tagPresentationCreationTime, "TM", 1}, {tagContentCreatorName, "PN", 2},
		},
		"WAVEFORM": {{tagContentDate, "DA", 1}, {tagContentTime, "TM", 1}, {tagInstanceNumber, "IS", 1}},
		"ENCAP DOC": {
			{tagContentDate, "DA", 2}, {tagContentTime, "TM", 2}, {tagInstanceNumber, "IS", 1},
			{tagDocumentTitle, "ST", 2}, {tagConceptNameCodeSequence, "SQ", 2}, {tagMIMETypeOfEncapsulatedDoc, "LO", 1},
		},
		"RAW DATA":     {{tagContentDate, "DA", 1}, {tagContentTime, "TM", 1}, {tagInstanceNumber, "IS", 1}},
		"REGISTRATION": contentKeys,
		"FIDUCIAL":     contentKeys,
		"SURFACE":      contentKeys,
	}
	// contentKeys are the keys of records for instances with a Content
	// Identification module.
	contentKeys = []recordKey{
		{tagContentDate, "DA", 1}, {tagContentTime, "TM", 1}, {tagInstanceNumber, "IS", 1},
		{tagContentLabel, "CS", 1}, {tagContentDescription, "LO", 2}, {tagContentCreatorName, "PN", 2},
	}
)

// recordTypes maps SOP Class UID prefixes to instance-level record types
// (PS3.3 Table F.4-1); a class matches an entry equal to it or starting
// with it followed by a dot. Image storage classes and anything not listed
// get IMAGE.
var recordTypes = []struct{ prefix, typ string }{
	{"1.2.840.10008.5.1.4.1.1.88.59", "KEY OBJECT DOC"},
	{"1.2.840.10008.5.1.4.1.1.88", "SR DOCUMENT"},
	{"1.2.840.10008.5.1.4.1.1.481.2", "RT DOSE"},
	{"1.2.840.10008.5.1.4.1.1.481.3", "RT STRUCTURE SET"},
	{"1.2.840.10008.5.1.4.1.1.481.4", "RT TREAT RECORD"},
	{"1.2.840.10008.5.1.4.1.1.481.5", "RT PLAN"},
	{"1.2.840.10008.5.1.4.1.1.481.6", "RT TREAT RECORD"},
	{"1.2.840.10008.5.1.4.1.1.481.7", "RT TREAT RECORD"},
	{"1.2.840.10008.5.1.4.1.1.481.8", "RT PLAN"}, // RT Ion Plan
	{"1.2.840.10008.5.1.4.1.1.481.9", "RT TREAT RECORD"},
	{"1.2.840.10008.5.1.4.1.1.11", "PRESENTATION"},
	{"1.2.840.10008.5.1.4.1.1.9", "WAVEFORM"},
	{"1.2.840.10008.5.1.4.1.1.104", "ENCAP DOC"},
	{"1.2.840.10008.5.1.4.1.1.66.1", "REGISTRATION"},
	{"1.2.840.10008.5.1.4.1.1.66.3", "REGISTRATION"},
	{"1.2.840.10008.5.1.4.1.1.66.2", "FIDUCIAL"},
	{"1.2.840.10008.5.1.4.1.1.66.5", "SURFACE"},
	{"1.2.840.10008.5.1.4.1.1.66", "RAW DATA"},
}

// RecordType returns the instance-level directory record type for a SOP
// class: "IMAGE" unless the class is one of the non-image classes of PS3.3
// Table F.4-1 this package knows.
func RecordType(sopClassUID string) string {
	for _, r := range recordTypes {
		if sopClassUID == r.prefix || strings.HasPrefix(sopClassUID, r.prefix+".") {
			// 1.2.840.10008.5.1.4.1.1.66.4 (Segmentation) is an image.
			if r.prefix == "1.2.840.10008.5.1.4.1.1.66" && sopClassUID != r.prefix {
				return "IMAGE"
			}
			return r.typ
		}
	}
	return "IMAGE"
}

// NewDirectory returns an empty Directory. It fails for a File-set ID or
// root component that PS3.10 does not allow.
func NewDirectory(opts DirectoryOptions) (*Directory, error) {
	if opts.Root == "" {
		opts.Root = "DICOM"
	}
	if len(opts.FileSetID) > 16 || strings.Trim(opts.FileSetID, "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_ ") != "" {
		return nil, fmt.Errorf("dicom: invalid File-set ID %q: up to 16 of A-Z 0-9 _ and space", opts.FileSetID)
	}
	if err := ValidFileID([]string{opts.Root}); err != nil {
		return nil, err
	}
	return &Directory{opts: opts, byID: map[string]*dirRecord{}, seen: map[string]bool{}}, nil
}

// ValidFileID reports whether components form a PS3.10 File ID: 1 to 8
// components of 1 to 8 characters of A-Z, 0-9 and underscore.
func ValidFileID(components []string) error {
	if len(components) == 0 || len(components) > 8 {
		return fmt.Errorf("dicom: file ID of %d components (want 1 to 8)", len(components))
	}
	for _, c := range components {
		if c == "" || len(c) > 8 || strings.Trim(c, "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_") != "" {
			return fmt.Errorf("dicom: invalid file ID component %q", c)
		}
	}
	return nil
}

// Len returns the number of instances added.
func (d *Directory) Len() int { return len(d.seen) }

// Add adds one instance and returns the file ID (its components) under
// which the file-set must store it. meta is the instance's File Meta and
// header its top-level elements as [Reader.Next] returned them (Pixel
// Data is ignored; only key attributes are kept). The instance must already
// be in its final form: keys are copied as they are.
//
// Type 1 keys that the instance lacks or leaves empty (a de-identified
// instance has no Study Date under the Basic Profile, for example) get the
// number of the record for Series Number, Instance Number and Study ID, and
// otherwise the dummy value de-identification uses for the VR (19000101,
// 000000, "ANONYMIZED"), so that the DICOMDIR stays valid.
//
// It returns ErrDuplicateInstance or ErrNotPlaceable.
func (d *Directory) Add(meta *FileMeta, header []*Element) ([]string, error) {
	str := func(t Tag) string {
		if e := Find(header, t); e != nil {
			return e.String()
		}
		return ""
	}
	sopClass, sopInstance, ts := str(tagSOPClassUID), str(tagSOPInstanceUID), ""
	if meta != nil {
		sopClass = cmp.Or(meta.MediaStorageSOPClassUID, sopClass)
		sopInstance = cmp.Or(meta.MediaStorageSOPInstanceUID, sopInstance)
		ts = meta.TransferSyntaxUID
	}
	study, series := str(tagStudyInstanceUID), str(tagSeriesInstanceUID)
	for _, u := range []struct{ name, v string }{
		{"SOP Class UID", sopClass}, {"SOP Instance UID", sopInstance}, {"Study Instance UID", study},
		{"Series Instance UID", series}, {"Transfer Syntax UID", ts},
	} {
		if !ValidUID(u.v) {
			return nil, fmt.Errorf("%w: no valid %s", ErrNotPlaceable, u.name)
		}
	}
	if d.seen[sopInstance] {
		return nil, ErrDuplicateInstance
	}
	charset := Find(header, tagSpecificCharacterSet)

	pid := str(tagPatientID)
	pat := d.byID[pid]
	newPatient := pat == nil
	if newPatient {
		pat = &dirRecord{typ: "PATIENT", byUID: map[string]*dirRecord{}}
	}
	st := pat.byUID[study]
	newStudy := st == nil
	if newStudy {
		st = &dirRecord{typ: "STUDY", byUID: map[string]*dirRecord{}}
	}
	se := st.byUID[series]
	newSeries := se == nil
	if newSeries {
		se = &dirRecord{typ: "SERIES"}
	}
	pn, sn, sen, in := len(d.patients)+1, len(pat.children)+1, len(st.children)+1, len(se.children)+1
	if !newPatient {
		pn = slices.Index(d.patients, pat) + 1
	}
	if !newStudy {
		sn = slices.Index(pat.children, st) + 1
	}
	if !newSeries {
		sen = slices.Index(st.children, se) + 1
	}
	if pn > 9999999 || sn > 9999999 || sen > 999999 || in > 9999999 {
		return nil, fmt.Errorf("%w: too many records for the file ID scheme", ErrNotPlaceable)
	}
	fileID := []string{d.opts.Root, fmt.Sprintf("P%07d", pn), fmt.Sprintf("S%07d", sn), fmt.Sprintf("SE%06d", sen), fmt.Sprintf("I%07d", in)}

	typ := RecordType(sopClass)
	img := &dirRecord{typ: typ, keys: recordKeys(header, instanceKeys[typ], charset, in)}
	if typ == "SR DOCUMENT" {
		if e := verificationDateTime(header); e != nil && Find(img.keys, tagVerificationDateTime) == nil {
			c := *e
			img.keys = append(img.keys, &c)
		}
	}
	img.keys = append(img.keys,
		textElement(tagReferencedFileID, "CS", strings.Join(fileID, `\`)),
		textElement(tagReferencedSOPClassInFile, "UI", sopClass),
		textElement(tagReferencedSOPInstInFile, "UI", sopInstance),
		textElement(tagReferencedTSInFile, "UI", ts),
	)
	sortElements(img.keys)

	// Commit only once nothing can fail.
	if newPatient {
		pat.keys = recordKeys(header, patientKeys, charset, pn)
		d.patients = append(d.patients, pat)
		d.byID[pid] = pat
	}
	if newStudy {
		st.keys = recordKeys(header, studyKeys, charset, sn)
		pat.children = append(pat.children, st)
		pat.byUID[study] = st
	}
	if newSeries {
		se.keys = recordKeys(header, seriesKeys, charset, sen)
		st.children = append(st.children, se)
		st.byUID[series] = se
	}
	se.children = append(se.children, img)
	d.seen[sopInstance] = true
	return fileID, nil
}

// recordKeys copies the keys of a record from an instance's header,
// inventing Type 1 values that are missing (n is the record's number), and
// adds the Specific Character Set when a key holds text in it.
func recordKeys(header []*Element, keys []recordKey, charset *Element, n int) []*Element {
	var out []*Element
	text := false
	for _, k := range keys {
		e := Find(header, k.tag)
		if e != nil && (len(e.Value) > 0 || len(e.Items) > 0) {
			c := *e
			out = append(out, &c)
			switch k.vr {
			case "PN", "LO", "SH", "ST", "LT", "UT", "UC":
				text = true
			}
			continue
		}
		switch k.typ {
		case 1:
			if k.vr == "SQ" {
				// A code cannot be made up; the record lacks it, as the
				// instance does.
				continue
			}
			v := string(dummy(k.vr))
			switch k.tag {
			case tagSeriesNumber, tagInstanceNumber, tagStudyID:
				v = strconv.Itoa(n)
			case tagCompletionFlag:
				v = "PARTIAL"
			case tagVerificationFlag:
				v = "UNVERIFIED"
			}
			out = append(out, textElement(k.tag, k.vr, v))
		case 2:
			if k.vr == "SQ" {
				out = append(out, &Element{Tag: k.tag, VR: "SQ"})
			} else {
				out = append(out, &Element{Tag: k.tag, VR: k.vr})
			}
		}
	}
	if text && charset != nil {
		if cs := recordCharset(charset); cs != nil {
			out = append(out, cs)
		}
	}
	sortElements(out)
	return out
}

// recordCharset returns the Specific Character Set for a record, or nil
// when the instance's is empty or not a valid CS value. The common
// misspelling "ISO-IR nnn" is corrected.
func recordCharset(e *Element) *Element {
	vals := e.Strings()
	if len(vals) == 0 || (len(vals) == 1 && vals[0] == "") {
		return nil
	}
	for i, v := range vals {
		if strings.HasPrefix(v, "ISO-IR ") {
			v = "ISO_IR " + v[len("ISO-IR "):]
		}
		if len(v) > 16 || strings.Trim(v, "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_ ") != "" {
			return nil
		}
		vals[i] = v
	}
	return textElement(tagSpecificCharacterSet, "CS", strings.Join(vals, `\`))
}

// verificationDateTime returns the Verification DateTime of an SR for its
// directory record: the record needs it at the top level when the
// document is VERIFIED, while the instance has it in the last item of the
// Verifying Observer Sequence.
func verificationDateTime(header []*Element) *Element {
	if f := Find(header, tagVerificationFlag); f == nil || f.String() != "VERIFIED" {
		return nil
	}
	if e := Find(header, tagVerificationDateTime); e != nil && len(e.Value) > 0 {
		return e
	}
	if seq := Find(header, tagVerifyingObserverSequence); seq != nil && len(seq.Items) > 0 {
		if e := Find(seq.Items[len(seq.Items)-1].Elements, tagVerificationDateTime); e != nil && len(e.Value) > 0 {
			return e
		}
	}
	return textElement(tagVerificationDateTime, "DT", string(dummy("DT")))
}

func sortElements(elems []*Element) {
	slices.SortStableFunc(elems, func(a, b *Element) int { return cmp.Compare(a.Tag, b.Tag) })
}

// encoded is one record encoded as a sequence item, with where its
// offsets go.
type encoded struct {
	rec        *dirRecord
	item       []byte // item header and elements
	next, down *encoded
}

// Offsets of the values of the two offset elements inside an encoded
// item: item header (8), (0004,1400) header (8) and value (4), (0004,1410)
// header (8) and value (2), (0004,1420) header (8).
const (
	nextValueAt  = 8 + 8
	lowerValueAt = 8 + 8 + 4 + 8 + 2 + 8
)

// WriteTo writes the DICOMDIR, a Part 10 file in Explicit VR Little Endian
// with explicit lengths, records depth first. It implements io.WriterTo.
func (d *Directory) WriteTo(w io.Writer) (int64, error) {
	uid, err := deid.NewUID()
	if err != nil {
		return 0, err
	}
	var meta bytes.Buffer
	if err := writeMeta(&meta, MediaStorageDirectoryStorage, uid, ExplicitVRLittleEndian); err != nil {
		return 0, err
	}

	// Encode every record, depth first, with zero offsets.
	var order []*encoded
	var encode func(recs []*dirRecord) (*encoded, error)
	encode = func(recs []*dirRecord) (*encoded, error) {
		var first, prev *encoded
		for _, r := range recs {
			e := &encoded{rec: r}
			item, err := encodeRecord(r)
			if err != nil {
				return nil, err
			}
			e.item = item
			order = append(order, e)
			if e.down, err = encode(r.children); err != nil {
				return nil, err
			}
			if prev != nil {
				prev.next = e
			} else {
				first = e
			}
			prev = e
		}
		return first, nil
	}
	root, err := encode(d.patients)
	if err != nil {
		return 0, err
	}

	// Lay them out: the dataset starts after the meta, with File-set ID,
	// two offsets (UL), the consistency flag and the sequence header.
	fsID := padValue("CS", d.opts.FileSetID)
	head := int64(meta.Len()) + int64(8+len(fsID)) + (8 + 4) + (8 + 4) + (8 + 2) + 12
	offsets := map[*encoded]uint32{}
	pos, seqLen := head, int64(0)
	for _, e := range order {
		if pos > 0xFFFFFFFF {
			return 0, errors.New("dicom: DICOMDIR larger than 4 GiB")
		}
		offsets[e] = uint32(pos)
		pos += int64(len(e.item))
		seqLen += int64(len(e.item))
	}
	if seqLen >= 0xFFFFFFFF {
		return 0, errors.New("dicom: DICOMDIR larger than 4 GiB")
	}
	off := func(e *encoded) uint32 {
		if e == nil {
			return 0
		}
		return offsets[e]
	}
	for _, e := range order {
		binary.LittleEndian.PutUint32(e.item[nextValueAt:], off(e.next))
		binary.LittleEndian.PutUint32(e.item[lowerValueAt:], off(e.down))
	}
	last := root
	for last != nil && last.next != nil {
		last = last.next
	}

	var ds bytes.Buffer
	enc := wire.NewEncoder(&ds, wire.ExplicitLE)
	put := func(t Tag, vr string, v []byte) {
		_ = enc.WriteHeader(uint32(t), vr, uint32(len(v)))
		ds.Write(v)
	}
	put(tagFileSetID, "CS", fsID)
	put(tagFirstRootRecordOffset, "UL", binary.LittleEndian.AppendUint32(nil, off(root)))
	put(tagLastRootRecordOffset, "UL", binary.LittleEndian.AppendUint32(nil, off(last)))
	put(tagFileSetConsistencyFlag, "US", []byte{0, 0})
	_ = enc.WriteHeader(uint32(tagDirectoryRecordSequence), "SQ", uint32(seqLen))
	if int64(meta.Len()+ds.Len()) != head {
		return 0, fmt.Errorf("dicom: DICOMDIR layout error (%d != %d)", meta.Len()+ds.Len(), head)
	}

	cw := &countWriter{w: w}
	if _, err := cw.Write(meta.Bytes()); err != nil {
		return cw.n, err
	}
	if _, err := cw.Write(ds.Bytes()); err != nil {
		return cw.n, err
	}
	for _, e := range order {
		if _, err := cw.Write(e.item); err != nil {
			return cw.n, err
		}
	}
	return cw.n, nil
}

// encodeRecord encodes a record as an item with an explicit length; the
// offset values are zero, to be patched at nextValueAt and lowerValueAt.
func encodeRecord(r *dirRecord) ([]byte, error) {
	var body bytes.Buffer
	enc := wire.NewEncoder(&body, wire.ExplicitLE)
	put := func(t Tag, vr string, v []byte) {
		_ = enc.WriteHeader(uint32(t), vr, uint32(len(v)))
		body.Write(v)
	}
	put(tagNextRecordOffset, "UL", make([]byte, 4))
	put(tagRecordInUseFlag, "US", []byte{0xFF, 0xFF})
	put(tagLowerLevelRecordOffset, "UL", make([]byte, 4))
	put(tagDirectoryRecordType, "CS", padValue("CS", r.typ))
	if err := writeElements(enc, r.keys); err != nil {
		return nil, err
	}
	item := make([]byte, 8, 8+body.Len())
	binary.LittleEndian.PutUint16(item[0:], 0xFFFE)
	binary.LittleEndian.PutUint16(item[2:], 0xE000)
	binary.LittleEndian.PutUint32(item[4:], uint32(body.Len()))
	return append(item, body.Bytes()...), nil
}

type countWriter struct {
	w io.Writer
	n int64
}

func (c *countWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}
