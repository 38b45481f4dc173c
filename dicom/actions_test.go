package dicom_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/consilium/consilium/deid"
	"github.com/consilium/consilium/dicom"
)

// el is an element to encode in a synthetic test instance.
type el struct {
	tag   uint32
	vr    string
	val   string
	items [][]el
}

func s(tag uint32, vr, val string) el { return el{tag: tag, vr: vr, val: val} }
func sq(tag uint32, items ...[]el) el { return el{tag: tag, vr: "SQ", items: items} }
func us(tag uint32, v uint16) el {
	return el{tag: tag, vr: "US", val: string(binary.LittleEndian.AppendUint16(nil, v))}
}
func item(elems ...el) []el    { return elems }
func tagOf(g, e uint16) uint32 { return uint32(g)<<16 | uint32(e) }
func longVR(vr string) bool    { return strings.Contains("OB OD OF OL OV OW SQ SV UC UN UR UT UV", vr) }
func pad(vr, v string) []byte {
	b := []byte(v)
	if len(b)%2 == 1 {
		if vr == "UI" || vr == "OB" || vr == "UN" {
			return append(b, 0)
		}
		return append(b, ' ')
	}
	return b
}

// encode writes elements in Explicit VR (Little or Big Endian) or
// Implicit VR Little Endian, independently of the package's encoder.
func encode(w *bytes.Buffer, elems []el, o binary.AppendByteOrder, implicit bool) {
	for _, e := range elems {
		w.Write(o.AppendUint16(nil, uint16(e.tag>>16)))
		w.Write(o.AppendUint16(nil, uint16(e.tag)))
		var v []byte
		if e.vr == "SQ" {
			var b bytes.Buffer
			for _, it := range e.items {
				var ib bytes.Buffer
				encode(&ib, it, o, implicit)
				b.Write(o.AppendUint16(nil, 0xFFFE))
				b.Write(o.AppendUint16(nil, 0xE000))
				b.Write(o.AppendUint32(nil, uint32(ib.Len())))
				b.Write(ib.Bytes())
			}
			v = b.Bytes()
		} else {
			v = pad(e.vr, e.val)
			if e.vr == "US" && o == binary.AppendByteOrder(binary.BigEndian) {
				v = []byte{v[1], v[0]}
			}
		}
		switch {
		case implicit:
			w.Write(o.AppendUint32(nil, uint32(len(v))))
		case longVR(e.vr):
			w.WriteString(e.vr)
			w.Write([]byte{0, 0})
			w.Write(o.AppendUint32(nil, uint32(len(v))))
		default:
			w.WriteString(e.vr)
			w.Write(o.AppendUint16(nil, uint16(len(v))))
		}
		w.Write(v)
	}
}

// instance builds a Part 10 file around the elements.
func instance(ts string, elems []el) []byte {
	var b bytes.Buffer
	b.Write(make([]byte, 128))
	b.WriteString("DICM")
	var meta bytes.Buffer
	encode(&meta, []el{
		{tag: 0x00020001, vr: "OB", val: "\x00\x01"},
		s(0x00020002, "UI", "1.2.840.10008.5.1.4.1.1.2"),
		s(0x00020003, "UI", "1.2.3.4.5.6.7.8.9"),
		s(0x00020010, "UI", ts),
	}, binary.LittleEndian, false)
	encode(&b, []el{{tag: 0x00020000, vr: "UL", val: string(binary.LittleEndian.AppendUint32(nil, uint32(meta.Len())))}}, binary.LittleEndian, false)
	b.Write(meta.Bytes())
	o := binary.AppendByteOrder(binary.LittleEndian)
	if ts == dicom.ExplicitVRBigEndian {
		o = binary.BigEndian
	}
	encode(&b, elems, o, ts == dicom.ImplicitVRLittleEndian)
	return b.Bytes()
}

// base is a minimal CT header with the patient's identifiers.
func base(extra ...el) []el {
	return append([]el{
		s(0x00080016, "UI", "1.2.840.10008.5.1.4.1.1.2"),
		s(0x00080018, "UI", "1.2.3.4.5.6.7.8.9"),
		s(0x00080060, "CS", "CT"),
		s(0x00100010, "PN", "Doe^Johnathan"),
		s(0x00100020, "LO", "MRN-4242"),
		s(0x0020000D, "UI", "1.2.3.4.100"),
		s(0x0020000E, "UI", "1.2.3.4.100.1"),
	}, extra...)
}

// doc is a de-identified output, read back.
type doc struct {
	top  []*dicom.Element
	meta *dicom.FileMeta
	rep  *dicom.Report
	raw  []byte
}

// at returns the element at a path of tags (first item of each sequence),
// or nil.
func (d *doc) at(path ...uint32) *dicom.Element {
	elems := d.top
	var e *dicom.Element
	for i, p := range path {
		e = dicom.Find(elems, dicom.Tag(p))
		if e == nil {
			return nil
		}
		if i < len(path)-1 {
			if len(e.Items) == 0 {
				return nil
			}
			elems = e.Items[0].Elements
		}
	}
	return e
}

func (d *doc) str(path ...uint32) string {
	if e := d.at(path...); e != nil {
		return e.String()
	}
	return "<absent>"
}

func rewriteDoc(t *testing.T, profile string, src deid.Source, in []byte) *doc {
	t.Helper()
	d := newDeidentifier(t, profile, src)
	var out bytes.Buffer
	rep, err := d.Rewrite(context.Background(), &out, bytes.NewReader(in), dicom.PatientIDKey)
	if err != nil {
		t.Fatalf("Rewrite: %v", err)
	}
	rd, err := dicom.NewReader(bytes.NewReader(out.Bytes()), dicom.ReaderOptions{})
	if err != nil {
		t.Fatalf("reading output: %v", err)
	}
	dd := &doc{meta: rd.Meta(), rep: rep, raw: out.Bytes()}
	for {
		e, err := rd.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("reading output: %v", err)
		}
		dd.top = append(dd.top, e)
	}
	return dd
}

func TestActions(t *testing.T) {
	src := keyedSource(t)
	ctx := context.Background()
	patient, _ := src.Patient(ctx, "MRN-4242")
	shift := func(d string) string {
		tm, _ := time.Parse("20060102", d)
		return tm.AddDate(0, 0, patient.OffsetDays).Format("20060102")
	}
	uid := src.UID
	const (
		evaluatorName = 0x00142006 // a PN that Table E.1-1 does not list
	)
	tests := []struct {
		name    string
		profile string
		ts      string
		elems   []el
		check   func(t *testing.T, d *doc)
	}{
		{
			name: "X removes", profile: "basic",
			elems: base(s(0x00101000, "LO", "OPID-1"), s(0x00102154, "SH", "555-0100"), s(0x00081048, "PN", "House^Gregory")),
			check: func(t *testing.T, d *doc) {
				for _, tag := range []uint32{0x00101000, 0x00102154, 0x00081048} {
					if e := d.at(tag); e != nil {
						t.Errorf("%v still present", e.Tag)
					}
				}
			},
		},
		{
			name: "Z empties", profile: "basic",
			elems: base(s(0x00080050, "SH", "ACC-778899"), s(0x00100030, "DA", "19610423"), s(0x00200010, "SH", "STUDY7")),
			check: func(t *testing.T, d *doc) {
				for _, tag := range []uint32{0x00080050, 0x00100030, 0x00200010} {
					if e := d.at(tag); e == nil || len(e.Value) != 0 {
						t.Errorf("%08X not present and empty: %v", tag, e)
					}
				}
			},
		},
		{
			name: "D replaces with a dummy of the VR", profile: "basic",
			elems: base(s(0x0040A123, "PN", "Watson^John"), s(0x0040A121, "DA", "20200101"), s(0x0040A122, "TM", "101010"),
				s(0x0040A120, "DT", "20200101101010"), s(0x00400551, "LO", "SPEC-9"), s(0x2100_0140, "AE", "DEST_AE")),
			check: func(t *testing.T, d *doc) {
				want := map[uint32]string{0x0040A123: "ANONYMIZED", 0x0040A121: "19000101", 0x0040A122: "000000",
					0x0040A120: "19000101000000", 0x00400551: "ANONYMIZED", 0x21000140: "ANONYMOUS"}
				for tag, w := range want {
					if got := d.str(tag); got != w {
						t.Errorf("%08X = %q, want %q", tag, got, w)
					}
				}
			},
		},
		{
			name: "D on a code sequence replaces the code; on another sequence recurses", profile: "basic",
			elems: base(
				sq(0x00401101, item(s(0x00080100, "SH", "EMP-123"), s(0x00080102, "SH", "HOSP"), s(0x00080104, "LO", "Dr Who"))),
				sq(0x0040A073, item(s(0x0040A075, "PN", "Verifier^Vera"), s(0x0040A030, "DT", "20200101"))),
			),
			check: func(t *testing.T, d *doc) {
				if got := d.str(0x00401101, 0x00080100); got != "ANONYMIZED" {
					t.Errorf("code value = %q", got)
				}
				if got := d.str(0x0040A073, 0x0040A075); got != "ANONYMIZED" {
					t.Errorf("verifying observer = %q", got)
				}
			},
		},
		{
			name: "U replaces UIDs consistently, also in the file meta", profile: "basic",
			elems: base(s(0x00200052, "UI", "1.2.3.4.100.9"), s(0x00081155, "UI", `1.2.3.4.100.1\1.2.3.4.100`)),
			check: func(t *testing.T, d *doc) {
				if got := d.str(0x0020000D); got != uid("1.2.3.4.100") {
					t.Errorf("study UID = %q", got)
				}
				if got := d.str(0x00200052); got != uid("1.2.3.4.100.9") {
					t.Errorf("frame of reference UID = %q", got)
				}
				if got, want := d.str(0x00081155), uid("1.2.3.4.100.1")+`\`+uid("1.2.3.4.100"); got != want {
					t.Errorf("multi-valued UID = %q, want %q", got, want)
				}
				if d.meta.MediaStorageSOPInstanceUID != uid("1.2.3.4.5.6.7.8.9") || d.str(0x00080018) != d.meta.MediaStorageSOPInstanceUID {
					t.Errorf("SOP instance UIDs: meta %q, dataset %q", d.meta.MediaStorageSOPInstanceUID, d.str(0x00080018))
				}
				if d.str(0x00080016) != "1.2.840.10008.5.1.4.1.1.2" {
					t.Error("SOP Class UID changed")
				}
			},
		},
		{
			name: "Z/D: Patient ID and Name become the pseudonym; Content Date a dummy", profile: "basic",
			elems: base(s(0x00080023, "DA", "20200101")),
			check: func(t *testing.T, d *doc) {
				if d.str(0x00100020) != patient.Pseudonym || d.str(0x00100010) != patient.Pseudonym {
					t.Errorf("patient: %q %q", d.str(0x00100020), d.str(0x00100010))
				}
				if got := d.str(0x00080023); got != "19000101" {
					t.Errorf("content date = %q", got)
				}
			},
		},
		{
			name: "X/Z empties, or removes a Type 3 sequence", profile: "basic",
			elems: base(s(0x00080022, "DA", "20200101"), sq(0x00081110, item(s(0x00081155, "UI", "1.2.3.7")))),
			check: func(t *testing.T, d *doc) {
				if e := d.at(0x00080022); e == nil || len(e.Value) != 0 {
					t.Errorf("acquisition date: %v", e)
				}
				if d.at(0x00081110) != nil {
					t.Error("referenced study sequence kept")
				}
			},
		},
		{
			name: "X/D and X/Z/D: dummy, or removed when known Type 3", profile: "basic",
			elems: base(s(0x00080021, "DA", "20200101"), s(0x00080012, "DA", "20200101"), s(0x00080080, "LO", "St Elsewhere"), s(0x00181000, "LO", "SN-42")),
			check: func(t *testing.T, d *doc) {
				if got := d.str(0x00080021); got != "19000101" {
					t.Errorf("series date = %q", got)
				}
				if d.at(0x00080012) != nil {
					t.Error("instance creation date kept")
				}
				if d.str(0x00080080) != "ANONYMIZED" || d.str(0x00181000) != "ANONYMIZED" {
					t.Errorf("institution %q, serial %q", d.str(0x00080080), d.str(0x00181000))
				}
			},
		},
		{
			name: "X/Z/U*: reference sequences kept with new UIDs", profile: "basic",
			elems: base(sq(0x00081140, item(s(0x00081150, "UI", "1.2.840.10008.5.1.4.1.1.2"), s(0x00081155, "UI", "1.2.3.4.100.2")))),
			check: func(t *testing.T, d *doc) {
				if got := d.str(0x00081140, 0x00081155); got != uid("1.2.3.4.100.2") {
					t.Errorf("referenced instance = %q", got)
				}
				if got := d.str(0x00081140, 0x00081150); got != "1.2.840.10008.5.1.4.1.1.2" {
					t.Errorf("referenced class = %q", got)
				}
			},
		},
		{
			name: "K under options: device, institution, patient characteristics", profile: "basic,retain-device-id,retain-institution-id,retain-patient-chars",
			elems: base(s(0x00080080, "LO", "St Elsewhere"), s(0x00181000, "LO", "SN-42"), s(0x00100040, "CS", "F"),
				s(0x00101010, "AS", "095Y"), s(0x00101030, "DS", "71.5")),
			check: func(t *testing.T, d *doc) {
				want := map[uint32]string{0x00080080: "St Elsewhere", 0x00181000: "SN-42", 0x00100040: "F", 0x00101010: "090Y", 0x00101030: "71.5"}
				for tag, w := range want {
					if got := d.str(tag); got != w {
						t.Errorf("%08X = %q, want %q", tag, got, w)
					}
				}
			},
		},
		{
			name: "without patient characteristics they go", profile: "basic",
			elems: base(s(0x00100040, "CS", "F"), s(0x00101010, "AS", "095Y")),
			check: func(t *testing.T, d *doc) {
				if d.at(0x00101010) != nil || d.str(0x00100040) != "" {
					t.Errorf("age %v, sex %q", d.at(0x00101010), d.str(0x00100040))
				}
			},
		},
		{
			name: "C shifts dates by the patient's offset and keeps times", profile: "basic,retain-long-modified-dates",
			elems: base(s(0x00080020, "DA", "20200115"), s(0x00080030, "TM", "101500"), s(0x00100030, "DA", "19610423"),
				s(0x0008002A, "DT", "20200115101500.123+0100"), s(0x00080021, "DA", `20200115\20200116`), s(0x00181012, "DA", "2020.01.15")),
			check: func(t *testing.T, d *doc) {
				want := map[uint32]string{
					0x00080020: shift("20200115"), 0x00080030: "101500", 0x00100030: "", // Table E.1-1 gives Birth Date no C
					0x0008002A: shift("20200115") + "101500.123+0100", 0x00080021: shift("20200115") + `\` + shift("20200116"),
				}
				for tag, w := range want {
					if got := d.str(tag); got != w {
						t.Errorf("%08X = %q, want %q", tag, got, w)
					}
				}
				if got, w := d.str(0x00181012), strings.ReplaceAll(shift("20200115"), "", ""); got != w[:4]+"."+w[4:6]+"."+w[6:] {
					t.Errorf("ACR-NEMA date = %q", got)
				}
				if d.str(0x00280303) != "MODIFIED" {
					t.Errorf("LongitudinalTemporalInformationModified = %q", d.str(0x00280303))
				}
			},
		},
		{
			name: "full dates are kept", profile: "basic,retain-long-full-dates",
			elems: base(s(0x00080020, "DA", "20200115")),
			check: func(t *testing.T, d *doc) {
				if d.str(0x00080020) != "20200115" || d.str(0x00280303) != "UNMODIFIED" {
					t.Errorf("%q %q", d.str(0x00080020), d.str(0x00280303))
				}
			},
		},
		{
			name: "C cleans descriptors of identifying values", profile: "basic,clean-descriptors",
			elems: base(s(0x00081030, "LO", "CT chest JOHNATHAN doe 12345678 follow-up"), s(0x0008103E, "LO", "AXIAL 5mm")),
			check: func(t *testing.T, d *doc) {
				if got := d.str(0x00081030); got != "CT chest ********* *** ******** follow-up" {
					t.Errorf("study description = %q", got)
				}
				if got := d.str(0x0008103E); got != "AXIAL 5mm" {
					t.Errorf("series description = %q", got)
				}
			},
		},
		{
			name: "descriptors go without the option", profile: "basic",
			elems: base(s(0x00081030, "LO", "CT chest")),
			check: func(t *testing.T, d *doc) {
				if d.at(0x00081030) != nil {
					t.Error("study description kept")
				}
			},
		},
		{
			name: "text in an ISO 2022 character set is emptied, not cut", profile: "basic,clean-descriptors",
			elems: append([]el{s(0x00080005, "CS", `ISO 2022 IR 87`)}, base(s(0x00081030, "LO", "\x1b$B;3ED\x1b(B CT"))...),
			check: func(t *testing.T, d *doc) {
				if e := d.at(0x00081030); e == nil || len(e.Value) != 0 {
					t.Errorf("study description = %v", e)
				}
			},
		},
		{
			name: "U becomes K with retain-uids", profile: "basic,retain-uids",
			elems: base(),
			check: func(t *testing.T, d *doc) {
				if d.str(0x0020000D) != "1.2.3.4.100" || d.meta.MediaStorageSOPInstanceUID != "1.2.3.4.5.6.7.8.9" {
					t.Errorf("UIDs changed: %q %q", d.str(0x0020000D), d.meta.MediaStorageSOPInstanceUID)
				}
			},
		},
		{
			name: "private attributes go", profile: "basic",
			elems: base(s(0x00090010, "LO", "GEMS_IDEN_01"), s(0x00091001, "LO", "Doe"), s(0x70530010, "LO", "Philips PET Private Group"), s(0x70531000, "DS", "1.5")),
			check: func(t *testing.T, d *doc) {
				for _, e := range d.top {
					if e.Tag.IsPrivate() {
						t.Errorf("private %v kept", e.Tag)
					}
				}
			},
		},
		{
			name: "retain-safe-private keeps listed attributes and their creator", profile: "basic,retain-safe-private",
			elems: base(s(0x00090010, "LO", "GEMS_IDEN_01"), s(0x00091001, "LO", "Doe"),
				s(0x70530010, "LO", "Philips PET Private Group"), s(0x70531000, "DS", "1.5"), s(0x70531001, "LO", "secret")),
			check: func(t *testing.T, d *doc) {
				if d.str(0x70530010) != "Philips PET Private Group" || d.str(0x70531000) != "1.5" {
					t.Errorf("safe private not kept: %q %q", d.str(0x70530010), d.str(0x70531000))
				}
				for _, tag := range []uint32{0x00090010, 0x00091001, 0x70531001} {
					if d.at(tag) != nil {
						t.Errorf("%08X kept", tag)
					}
				}
			},
		},
		{
			name: "overlay groups and curves go whole; group lengths go", profile: "basic",
			elems: base(s(0x00080000, "UL", "\x10\x00\x00\x00"), us(0x60000010, 4), us(0x60000011, 4), el{tag: 0x60003000, vr: "OW", val: "\xff\xff"},
				s(0x60004000, "LT", "Dr Doe"), s(0x50000022, "LO", "curve")),
			check: func(t *testing.T, d *doc) {
				for _, e := range d.top {
					if g := e.Tag.Group(); g == 0x6000 || g == 0x5000 || e.Tag.Element() == 0 {
						t.Errorf("%v kept", e.Tag)
					}
				}
			},
		},
		{
			name: "every nesting depth", profile: "basic",
			elems: base(sq(0x00400275, item(s(0x00401001, "SH", "RP-1"))), // X sequence
				sq(0x00540016, item(sq(0x00540300, item(sq(0x00080100+0x0, item()), s(0x00100010, "PN", "Deep^Name"), s(evaluatorName, "PN", "Eva^Luator"), s(0x00080020, "DA", "20200101"))))),
			),
			check: func(t *testing.T, d *doc) {
				if d.at(0x00400275) != nil {
					t.Error("request attributes kept")
				}
				if got := d.str(0x00540016, 0x00540300, 0x00100010); got != "" {
					t.Errorf("nested name = %q", got)
				}
				if got := d.str(0x00540016, 0x00540300, evaluatorName); got != "" {
					t.Errorf("unlisted nested person name = %q", got)
				}
				if got := d.str(0x00540016, 0x00540300, 0x00080020); got != "" {
					t.Errorf("nested study date = %q", got)
				}
			},
		},
		{
			name: "structured content: the report stays, names in its text go", profile: "basic,clean-structured-content",
			elems: base(sq(0x0040A730, item(s(0x0040A040, "CS", "TEXT"), sq(0x0040A043, item(s(0x00080100, "SH", "121071"), s(0x00080102, "SH", "DCM"), s(0x00080104, "LO", "Finding"))),
				s(0x0040A160, "UT", "Mr Doe (MRN-4242, tel 5550100) has a cough"), s(0x0040A123, "PN", "Doc^Tor")))),
			check: func(t *testing.T, d *doc) {
				if d.str(0x0040A730, 0x0040A043, 0x00080100) != "121071" {
					t.Error("concept name lost")
				}
				// Text Value is not in Table E.1-1; it is cleaned anyway.
				if got := d.str(0x0040A730, 0x0040A160); got != "Mr *** (********, tel *******) has a cough" {
					t.Errorf("text value = %q", got)
				}
				if d.str(0x0040A730, 0x0040A123) != "ANONYMIZED" {
					t.Errorf("person name = %q", d.str(0x0040A730, 0x0040A123))
				}
			},
		},
		{
			name: "a known sequence sent as UN is read and cleaned", profile: "basic",
			elems: base(el{tag: 0x00081140, vr: "UN", val: unSequence()}),
			check: func(t *testing.T, d *doc) {
				e := d.at(0x00081140)
				if e == nil || e.VR != "SQ" {
					t.Fatalf("got %v", e)
				}
				if got := d.str(0x00081140, 0x00081155); got != uid("1.2.3.4.100.3") {
					t.Errorf("UID inside = %q", got)
				}
			},
		},
		{
			name: "implicit VR", profile: "basic,retain-long-modified-dates", ts: dicom.ImplicitVRLittleEndian,
			elems: base(s(0x00080020, "DA", "20200115"), s(0x00080090, "PN", "Ref^Doc"), sq(0x00081140, item(s(0x00081155, "UI", "1.2.3.4.100.3")))),
			check: func(t *testing.T, d *doc) {
				if d.str(0x00080020) != shift("20200115") || d.str(0x00080090) != "" || d.str(0x00081140, 0x00081155) != uid("1.2.3.4.100.3") {
					t.Errorf("%q %q %q", d.str(0x00080020), d.str(0x00080090), d.str(0x00081140, 0x00081155))
				}
			},
		},
		{
			name: "explicit big endian", profile: "basic", ts: dicom.ExplicitVRBigEndian,
			elems: base(us(0x00280010, 0x0102), s(0x00080090, "PN", "Ref^Doc")),
			check: func(t *testing.T, d *doc) {
				e := d.at(0x00280010)
				if e == nil || !bytes.Equal(e.Value, []byte{0x01, 0x02}) {
					t.Errorf("rows = %v", e)
				}
				if n, _ := e.Int(); n != 0x0102 {
					t.Errorf("rows = %d", n)
				}
			},
		},
		{
			name: "the method is recorded", profile: "basic,retain-uids",
			elems: base(s(0x00120062, "CS", "NO")),
			check: func(t *testing.T, d *doc) {
				if d.str(0x00120062) != "YES" || d.str(0x00280303) != "REMOVED" {
					t.Errorf("%q %q", d.str(0x00120062), d.str(0x00280303))
				}
				if got := d.str(0x00120063); got != `Consilium PS3.15 Annex E\basic\retain-uids` {
					t.Errorf("method = %q", got)
				}
				seq := d.at(0x00120064)
				if seq == nil || len(seq.Items) != 2 || dicom.Find(seq.Items[1].Elements, 0x00080100).String() != "113110" {
					t.Errorf("method codes: %v", seq)
				}
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ts := tt.ts
			if ts == "" {
				ts = dicom.ExplicitVRLittleEndian
			}
			in := instance(ts, tt.elems)
			d := rewriteDoc(t, tt.profile, src, in)
			tt.check(t, d)
			// Nothing of the patient's own identifiers survives, anywhere.
			for _, v := range []string{"Johnathan", "MRN-4242", "Doe^"} {
				if bytes.Contains(d.raw, []byte(v)) {
					t.Errorf("%q survives", v)
				}
			}
			if len(d.rep.Actions) == 0 {
				t.Error("empty report")
			}
		})
	}
}

// unSequence is Referenced Image Sequence content in Implicit VR Little
// Endian, as a UN value holds it.
func unSequence() string {
	var it bytes.Buffer
	encode(&it, []el{s(0x00081150, "UI", "1.2.840.10008.5.1.4.1.1.2"), s(0x00081155, "UI", "1.2.3.4.100.3")}, binary.LittleEndian, true)
	var b bytes.Buffer
	b.Write([]byte{0xFE, 0xFF, 0x00, 0xE0})
	b.Write(binary.LittleEndian.AppendUint32(nil, uint32(it.Len())))
	b.Write(it.Bytes())
	return b.String()
}

func TestReportCounts(t *testing.T) {
	in := instance(dicom.ExplicitVRLittleEndian, base(s(0x00101000, "LO", "OPID-1"), s(0x00090010, "LO", "X"), s(0x00091001, "LO", "Y"), s(0x00080050, "SH", "ACC")))
	d := rewriteDoc(t, "basic", keyedSource(t), in)
	got := map[string]int{}
	for _, a := range d.rep.Actions {
		got[fmt.Sprintf("%v %s %s", a.Tag, a.Rule, a.Applied)] += a.Count
	}
	want := map[string]int{
		"(0010,1000) X X":   1,
		"(0009,0000) X X":   2, // creator and element, counted per private group
		"(0008,0050) Z Z":   1,
		"(0010,0020) Z/D D": 1,
		"(0010,0010) Z D":   1,
		"(0020,000D) U U":   1,
		"(0008,0018) U U":   1,
		"(0020,000E) U U":   1,
	}
	for k, n := range want {
		if got[k] != n {
			t.Errorf("%s: %d, want %d (all: %v)", k, got[k], n, got)
		}
	}
	merged := dicom.MergeActions(d.rep, d.rep)
	for _, a := range merged {
		if a.Tag == 0x00101000 && a.Count != 2 {
			t.Errorf("merged count %d", a.Count)
		}
	}
	if d.rep.Removed() < 3 {
		t.Errorf("Removed() = %d", d.rep.Removed())
	}
}

// recordingSource remembers which originals each UIDs call asked for.
type recordingSource struct {
	deid.Source
	calls [][]string
}

func (r *recordingSource) UIDs(ctx context.Context, key string, o []string) ([]string, error) {
	r.calls = append(r.calls, append([]string(nil), o...))
	return r.Source.UIDs(ctx, key, o)
}

// TestPrefetchUIDs checks that Deidentifier.UIDs lists every UID Rewrite
// asks the source for, so a caller can batch a whole study in one call,
// and that Rewrite asks in one call per instance.
func TestPrefetchUIDs(t *testing.T) {
	valid, _ := corpus(t)
	for _, p := range valid {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		rec := &recordingSource{Source: keyedSource(t)}
		d := newDeidentifier(t, "basic", rec)
		want, err := d.UIDs(bytes.NewReader(b))
		if err != nil {
			t.Fatalf("%s: %v", rel(t, p), err)
		}
		if _, err := d.Rewrite(context.Background(), io.Discard, bytes.NewReader(b), testKey); err != nil {
			t.Fatal(err)
		}
		if len(rec.calls) > 1 {
			t.Errorf("%s: %d UIDs calls, want at most 1", rel(t, p), len(rec.calls))
		}
		for _, c := range rec.calls {
			for _, u := range c {
				if !slices.Contains(want, u) {
					t.Errorf("%s: Rewrite asked for a UID that UIDs did not list", rel(t, p))
				}
			}
		}
	}
}
