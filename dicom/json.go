package dicom

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"math"
	"strconv"
	"strings"
)

// JSONDataset is a dataset in the DICOM JSON Model (PS3.18 F.2): the
// attributes keyed by their tag as eight upper-case hexadecimal digits.
// encoding/json writes the keys in ascending tag order, as F.2 asks.
type JSONDataset map[string]*JSONAttribute

// JSONAttribute is one attribute of a [JSONDataset]. At most one of
// Value, InlineBinary and BulkDataURI is set; none for an empty value.
type JSONAttribute struct {
	VR string `json:"vr"`
	// Value holds strings, json.Number values, JSONPersonName values,
	// JSONDataset items (for SQ) and nil for empty values among several.
	Value        []any  `json:"Value,omitempty"`
	InlineBinary string `json:"InlineBinary,omitempty"`
	BulkDataURI  string `json:"BulkDataURI,omitempty"`
}

// JSONPersonName is a PN value in the DICOM JSON Model: its three
// component groups, each in UTF-8.
type JSONPersonName struct {
	Alphabetic  string `json:"Alphabetic,omitempty"`
	Ideographic string `json:"Ideographic,omitempty"`
	Phonetic    string `json:"Phonetic,omitempty"`
}

// JSONKey returns t as a DICOM JSON attribute key ("0020000D").
func JSONKey(t Tag) string { return fmt.Sprintf("%08X", uint32(t)) }

// Set sets attribute t with the given VR and values: strings, numbers
// (json.Number or Go integers), JSONPersonName or JSONDataset values. A
// call without values (or with only empty strings) records the attribute
// as empty, which is how a QIDO-RS answer says it has no value.
func (d JSONDataset) Set(t Tag, vr string, values ...any) {
	a := &JSONAttribute{VR: vr}
	for _, v := range values {
		switch v := v.(type) {
		case string:
			if v == "" {
				continue
			}
			if vr == "PN" {
				a.Value = append(a.Value, JSONPersonName{Alphabetic: v})
				continue
			}
			a.Value = append(a.Value, v)
		case int:
			a.Value = append(a.Value, json.Number(strconv.Itoa(v)))
		case int64:
			a.Value = append(a.Value, json.Number(strconv.FormatInt(v, 10)))
		default:
			a.Value = append(a.Value, v)
		}
	}
	d[JSONKey(t)] = a
}

// JSONOptions modify [EncodeJSON].
type JSONOptions struct {
	// CharacterSet is the instance's Specific Character Set
	// ([Summary.SpecificCharacterSet]); text is converted from it to
	// UTF-8. An item with its own (0008,0005) uses that one.
	CharacterSet string
	// BulkDataURI returns the URI that serves the value of top-level
	// element t when the value is not given inline: Pixel Data streamed
	// by a [Reader] (and so absent from its Element), and binary values
	// longer than InlineBinaryMax. When nil, such attributes carry only
	// their VR.
	BulkDataURI func(t Tag) string
	// InlineBinaryMax is the longest top-level binary value (OB, OD, OF,
	// OL, OV, OW, UN) given inline as base64; 0 means no limit. Binary
	// values inside sequences are always inline.
	InlineBinaryMax int
}

// EncodeJSON encodes elements as read by a [Reader] in the DICOM JSON
// Model (PS3.18 F.2). Text is converted to UTF-8; DS and IS values become
// JSON numbers (an unparsable one null); binary values are base64 in
// little-endian byte order; group lengths and dataset trailing padding
// are left out. Values carry patient data: never log the result.
func EncodeJSON(elems []*Element, opts JSONOptions) JSONDataset {
	return encodeJSON(elems, NewTextDecoder(opts.CharacterSet), opts, true)
}

func encodeJSON(elems []*Element, dec *TextDecoder, opts JSONOptions, top bool) JSONDataset {
	if cs := Find(elems, tagSpecificCharacterSet); cs != nil && !top {
		dec = NewTextDecoder(strings.TrimRight(string(cs.Value), " \x00"))
	}
	ds := make(JSONDataset, len(elems))
	for _, e := range elems {
		if e.Tag.Element() == 0 || e.Tag == tagDataSetTrailingPadding || e.Tag.Group() == 0x0002 {
			continue
		}
		ds[JSONKey(e.Tag)] = encodeAttribute(e, dec, opts, top)
	}
	return ds
}

const tagDataSetTrailingPadding Tag = 0xFFFCFFFC

func encodeAttribute(e *Element, dec *TextDecoder, opts JSONOptions, top bool) *JSONAttribute {
	a := &JSONAttribute{VR: e.VR}
	switch e.VR {
	case "SQ":
		for _, it := range e.Items {
			a.Value = append(a.Value, encodeJSON(it.Elements, dec, opts, false))
		}
	case "OB", "OD", "OF", "OL", "OV", "OW", "UN":
		if e.Value == nil && isPixelData(e.Tag) && e.Length != 0 || top && opts.InlineBinaryMax > 0 && len(e.Value) > opts.InlineBinaryMax {
			if top && opts.BulkDataURI != nil {
				a.BulkDataURI = opts.BulkDataURI(e.Tag)
			}
			break
		}
		if len(e.Value) > 0 {
			v := e.Value
			if e.bigEndian {
				v = swapBytes(e.VR, v)
			}
			a.InlineBinary = base64.StdEncoding.EncodeToString(v)
		}
	case "PN":
		for _, v := range splitRaw(e.Value) {
			groups := strings.SplitN(v, "=", 3)
			var pn JSONPersonName
			for i, g := range groups {
				g = strings.TrimRight(g, " \x00")
				if g == "" {
					continue
				}
				s := dec.Decode([]byte(g))
				switch i {
				case 0:
					pn.Alphabetic = s
				case 1:
					pn.Ideographic = s
				case 2:
					pn.Phonetic = s
				}
			}
			if pn == (JSONPersonName{}) {
				a.Value = append(a.Value, nil)
				continue
			}
			a.Value = append(a.Value, pn)
		}
	case "LT", "ST", "UT", "UR":
		if s := strings.TrimRight(string(e.Value), " \x00"); s != "" {
			a.Value = []any{dec.Decode([]byte(s))}
		}
	case "DS", "IS":
		for _, v := range splitValues(e.Value) {
			a.Value = append(a.Value, number(e.VR, v))
		}
	case "US", "SS", "UL", "SL", "FL", "FD", "SV", "UV":
		a.Value = binaryNumbers(e)
	case "AT":
		o := e.order()
		for i := 0; i+4 <= len(e.Value); i += 4 {
			a.Value = append(a.Value, fmt.Sprintf("%04X%04X", o.Uint16(e.Value[i:]), o.Uint16(e.Value[i+2:])))
		}
	default: // AE AS CS DA DT LO SH TM UC UI and unknown text VRs
		for _, v := range splitRaw(e.Value) {
			v = strings.Trim(v, " \x00")
			if v == "" {
				a.Value = append(a.Value, nil)
				continue
			}
			a.Value = append(a.Value, dec.Decode([]byte(v)))
		}
	}
	if allNil(a.Value) {
		a.Value = nil
	}
	return a
}

// splitRaw splits a multi-valued text value at backslashes (which no
// character set of PS3.5 uses as a byte of a multi-byte character in a
// value that may be multi-valued).
func splitRaw(v []byte) []string {
	s := strings.TrimRight(string(v), " \x00")
	if s == "" {
		return nil
	}
	return strings.Split(s, `\`)
}

func allNil(v []any) bool {
	for _, x := range v {
		if x != nil {
			return false
		}
	}
	return true
}

// number converts a DS or IS string to a JSON number, or nil.
func number(vr, s string) any {
	if s == "" {
		return nil
	}
	if vr == "IS" {
		n, err := strconv.ParseInt(strings.TrimPrefix(s, "+"), 10, 64)
		if err != nil {
			return nil
		}
		return json.Number(strconv.FormatInt(n, 10))
	}
	f, err := strconv.ParseFloat(s, 64)
	if err != nil || math.IsInf(f, 0) || math.IsNaN(f) {
		return nil
	}
	return json.Number(strconv.FormatFloat(f, 'g', -1, 64))
}

// binaryNumbers decodes the values of a binary numeric element.
func binaryNumbers(e *Element) []any {
	o := e.order()
	v := e.Value
	var out []any
	float := func(f float64, bits int) any {
		switch {
		case math.IsNaN(f):
			return "NaN"
		case math.IsInf(f, 1):
			return "Infinity"
		case math.IsInf(f, -1):
			return "-Infinity"
		}
		return json.Number(strconv.FormatFloat(f, 'g', -1, bits))
	}
	switch e.VR {
	case "US":
		for i := 0; i+2 <= len(v); i += 2 {
			out = append(out, json.Number(strconv.FormatUint(uint64(o.Uint16(v[i:])), 10)))
		}
	case "SS":
		for i := 0; i+2 <= len(v); i += 2 {
			out = append(out, json.Number(strconv.FormatInt(int64(int16(o.Uint16(v[i:]))), 10)))
		}
	case "UL":
		for i := 0; i+4 <= len(v); i += 4 {
			out = append(out, json.Number(strconv.FormatUint(uint64(o.Uint32(v[i:])), 10)))
		}
	case "SL":
		for i := 0; i+4 <= len(v); i += 4 {
			out = append(out, json.Number(strconv.FormatInt(int64(int32(o.Uint32(v[i:]))), 10)))
		}
	case "SV":
		for i := 0; i+8 <= len(v); i += 8 {
			out = append(out, json.Number(strconv.FormatInt(int64(o.Uint64(v[i:])), 10)))
		}
	case "UV":
		for i := 0; i+8 <= len(v); i += 8 {
			out = append(out, json.Number(strconv.FormatUint(o.Uint64(v[i:]), 10)))
		}
	case "FL":
		for i := 0; i+4 <= len(v); i += 4 {
			out = append(out, float(float64(math.Float32frombits(o.Uint32(v[i:]))), 32))
		}
	case "FD":
		for i := 0; i+8 <= len(v); i += 8 {
			out = append(out, float(math.Float64frombits(o.Uint64(v[i:])), 64))
		}
	}
	return out
}

// LookupKeyword returns the tag of a PS3.6 keyword ("PatientID") or of
// eight hexadecimal digits ("00100020"), as DICOMweb query parameters
// name attributes.
func LookupKeyword(s string) (Tag, bool) {
	if len(s) == 8 {
		if n, err := strconv.ParseUint(s, 16, 32); err == nil {
			return Tag(n), true
		}
	}
	// A scan of the static dictionary: queries name few attributes, and a
	// keyword index would cost every start of the binary.
	for _, e := range dictionary {
		if e.keyword == s {
			return e.tag, true
		}
	}
	return 0, false
}
