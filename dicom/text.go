package dicom

import (
	"strings"
	"unicode/utf8"

	"golang.org/x/text/encoding"
	"golang.org/x/text/encoding/charmap"
	"golang.org/x/text/encoding/japanese"
	"golang.org/x/text/encoding/korean"
	"golang.org/x/text/encoding/simplifiedchinese"
)

// TextDecoder converts text values from an instance's Specific Character
// Set (0008,0005) to UTF-8, following PS3.5 6.1 and PS3.3 C.12.1.1.2:
// single-byte sets (ISO_IR 100 ... ISO_IR 203), UTF-8 (ISO_IR 192), GB18030
// and GBK, and ISO 2022 code extensions, where escape sequences switch the
// G0 and G1 sets within a value (Japanese JIS X 0201/0208/0212, Korean KS
// X 1001, Simplified Chinese GB 2312, and the single-byte sets) and the
// initial sets are restored after each delimiter.
//
// Bytes that do not decode become U+FFFD; an unknown term is read as
// ISO_IR 100 (Latin-1), which every byte decodes in.
type TextDecoder struct {
	// fixed decodes the whole value when no code extensions are used.
	fixed *encoding.Decoder
	// iso2022 is set when the value may contain escape sequences.
	iso2022 bool
	initG0  charsetID
	initG1  charsetID
}

// charsetID names a graphic character set of PS3.3 Table C.12-3/C.12-4.
type charsetID int

const (
	csASCII charsetID = iota
	csRomaji
	csLatin1
	csLatin2
	csLatin3
	csLatin4
	csCyrillic
	csArabic
	csGreek
	csHebrew
	csLatin5
	csLatin9
	csThai
	csKatakana
	csJISX0208
	csJISX0212
	csKSX1001
	csGB2312
	csNone
)

// singleByteSets maps the single-byte terms to their G1 set.
var singleByteSets = map[string]charsetID{
	"ISO_IR 100": csLatin1, "ISO_IR 101": csLatin2, "ISO_IR 109": csLatin3, "ISO_IR 110": csLatin4,
	"ISO_IR 144": csCyrillic, "ISO_IR 127": csArabic, "ISO_IR 126": csGreek, "ISO_IR 138": csHebrew,
	"ISO_IR 148": csLatin5, "ISO_IR 203": csLatin9, "ISO_IR 166": csThai, "ISO_IR 13": csKatakana,
}

// NewTextDecoder returns a decoder for a Specific Character Set value as
// found in the instance (for example `ISO 2022 IR 13\ISO 2022 IR 87`); ""
// is the default repertoire.
func NewTextDecoder(specificCharacterSet string) *TextDecoder {
	terms := strings.Split(specificCharacterSet, `\`)
	for i, t := range terms {
		t = strings.ToUpper(strings.TrimSpace(t))
		// Seen in the wild: "ISO-IR 100" for "ISO_IR 100".
		t = strings.Replace(t, "ISO-IR", "ISO_IR", 1)
		terms[i] = t
	}
	first := terms[0]
	if len(terms) == 1 && !strings.HasPrefix(first, "ISO 2022") {
		switch first {
		case "", "ISO_IR 6":
			return &TextDecoder{fixed: charmap.ISO8859_1.NewDecoder()}
		case "ISO_IR 192":
			return &TextDecoder{} // UTF-8
		case "GB18030":
			return &TextDecoder{fixed: simplifiedchinese.GB18030.NewDecoder()}
		case "GBK":
			return &TextDecoder{fixed: simplifiedchinese.GBK.NewDecoder()}
		case "ISO_IR 13":
			return &TextDecoder{iso2022: true, initG0: csRomaji, initG1: csKatakana}
		}
		if cs, ok := singleByteSets[first]; ok {
			return &TextDecoder{iso2022: true, initG0: csASCII, initG1: cs}
		}
		return &TextDecoder{fixed: charmap.ISO8859_1.NewDecoder()}
	}
	// Code extensions: the first value gives the initial sets.
	d := &TextDecoder{iso2022: true, initG0: csASCII, initG1: csNone}
	switch first {
	case "ISO 2022 IR 13":
		d.initG0, d.initG1 = csRomaji, csKatakana
	case "ISO 2022 IR 87":
		d.initG0 = csJISX0208
	case "ISO 2022 IR 159":
		d.initG0 = csJISX0212
	case "ISO 2022 IR 149":
		d.initG1 = csKSX1001
	case "ISO 2022 IR 58":
		d.initG1 = csGB2312
	default:
		if cs, ok := singleByteSets[strings.Replace(first, "ISO 2022 IR", "ISO_IR", 1)]; ok {
			d.initG1 = cs
		}
	}
	return d
}

// Decode converts one value (or a whole multi-valued text; delimiters
// reset the character sets) to UTF-8.
func (d *TextDecoder) Decode(b []byte) string {
	switch {
	case d == nil:
		return strings.ToValidUTF8(string(b), "\uFFFD")
	case d.iso2022:
		return d.decode2022(b)
	case d.fixed != nil:
		s, err := d.fixed.String(string(b))
		if err != nil {
			return strings.ToValidUTF8(string(b), "\uFFFD")
		}
		return s
	default:
		return strings.ToValidUTF8(string(b), "\uFFFD")
	}
}

// escapes maps the escape sequences of PS3.3 Table C.12-3 and C.12-4 (the
// bytes after ESC) to the set they designate and whether it goes to G1.
var escapes = []struct {
	seq string
	cs  charsetID
	g1  bool
}{
	{"(B", csASCII, false}, {"(J", csRomaji, false}, {")I", csKatakana, true},
	{"$B", csJISX0208, false}, {"$(D", csJISX0212, false},
	{"$)C", csKSX1001, true}, {"$)A", csGB2312, true},
	{"-A", csLatin1, true}, {"-B", csLatin2, true}, {"-C", csLatin3, true}, {"-D", csLatin4, true},
	{"-L", csCyrillic, true}, {"-G", csArabic, true}, {"-F", csGreek, true}, {"-H", csHebrew, true},
	{"-M", csLatin5, true}, {"-b", csLatin9, true}, {"-T", csThai, true},
}

func (d *TextDecoder) decode2022(b []byte) string {
	var out strings.Builder
	g0, g1 := d.initG0, d.initG1
	var run []byte
	runCS := csNone
	flush := func() {
		if len(run) > 0 {
			out.WriteString(decodeRun(runCS, run))
			run = run[:0]
		}
	}
	for i := 0; i < len(b); {
		c := b[i]
		if c == 0x1B {
			matched := false
			for _, e := range escapes {
				if strings.HasPrefix(string(b[i+1:]), e.seq) {
					flush()
					if e.g1 {
						g1 = e.cs
					} else {
						g0 = e.cs
					}
					i += 1 + len(e.seq)
					matched = true
					break
				}
			}
			if !matched {
				flush()
				out.WriteRune(utf8.RuneError)
				i++
			}
			continue
		}
		cs := g0
		if c >= 0x80 {
			cs = g1
		}
		// Delimiters reset to the initial sets (PS3.5 6.1.2.5.3); they
		// are ASCII in every G0 set a value may be in.
		if c < 0x80 && (cs == csASCII || cs == csRomaji) && isDelimiter(c) {
			flush()
			out.WriteByte(c)
			g0, g1 = d.initG0, d.initG1
			i++
			continue
		}
		if cs != runCS {
			flush()
			runCS = cs
		}
		n := 1
		if cs == csJISX0208 || cs == csJISX0212 || cs == csKSX1001 || cs == csGB2312 {
			n = 2
		}
		end := min(i+n, len(b))
		run = append(run, b[i:end]...)
		i = end
	}
	flush()
	return out.String()
}

func isDelimiter(c byte) bool {
	switch c {
	case '^', '=', '\\', '\r', '\n', '\f', '\t':
		return true
	}
	return false
}

// decodeRun decodes bytes that all belong to one set.
func decodeRun(cs charsetID, b []byte) string {
	var dec *encoding.Decoder
	in := string(b)
	switch cs {
	case csASCII, csRomaji:
		// JIS X 0201 Romaji differs from ASCII only in the yen sign and
		// overline, which DICOM text never needs; keep them as ASCII.
		return strings.ToValidUTF8(in, "\uFFFD")
	case csLatin1:
		dec = charmap.ISO8859_1.NewDecoder()
	case csLatin2:
		dec = charmap.ISO8859_2.NewDecoder()
	case csLatin3:
		dec = charmap.ISO8859_3.NewDecoder()
	case csLatin4:
		dec = charmap.ISO8859_4.NewDecoder()
	case csCyrillic:
		dec = charmap.ISO8859_5.NewDecoder()
	case csArabic:
		dec = charmap.ISO8859_6.NewDecoder()
	case csGreek:
		dec = charmap.ISO8859_7.NewDecoder()
	case csHebrew:
		dec = charmap.ISO8859_8.NewDecoder()
	case csLatin5:
		dec = charmap.ISO8859_9.NewDecoder()
	case csLatin9:
		dec = charmap.ISO8859_15.NewDecoder()
	case csThai:
		dec = charmap.Windows874.NewDecoder()
	case csKatakana:
		// JIS X 0201 Katakana in G1 is the single-byte half-width range
		// of Shift JIS.
		dec = japanese.ShiftJIS.NewDecoder()
	case csJISX0208:
		dec, in = japanese.ISO2022JP.NewDecoder(), "\x1b$B"+in+"\x1b(B"
	case csJISX0212:
		dec, in = japanese.ISO2022JP.NewDecoder(), "\x1b$(D"+in+"\x1b(B"
	case csKSX1001:
		dec = korean.EUCKR.NewDecoder()
	case csGB2312:
		dec = simplifiedchinese.GBK.NewDecoder()
	default:
		return strings.Repeat("\uFFFD", utf8.RuneCount(b))
	}
	s, err := dec.String(in)
	if err != nil {
		return strings.Repeat("\uFFFD", len(b))
	}
	return strings.ToValidUTF8(s, "\uFFFD")
}
