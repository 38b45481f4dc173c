package dicom

import (
	"bytes"
	"cmp"
	"slices"
	"strconv"
	"strings"
	"time"
)

// How the compound codes of Table E.1-1 are resolved. The right choice
// depends on the attribute's Type in the IOD of the instance (PS3.15
// E.1.1), which would need the module tables of PS3.3. For the attributes
// in knownTypes, whose Type is the same in every module that has them, the
// code resolves exactly. For the others every choice below satisfies all
// the Types the code allows, so it is valid whatever the IOD, and none of
// them keeps the original value:
//
//   - Z/D, X/D, X/Z/D become D: a dummy value satisfies Type 1, 2 and 3;
//   - X/Z becomes Z: an empty value satisfies Type 2 and 3;
//   - X/Z/U* on a sequence becomes "keep the sequence and apply the
//     profile to its items", which replaces the UIDs inside (U*) and
//     removes or blanks everything identifying there; the references
//     between instances survive.
func resolveCompound(a Action, t Tag, seq bool) Action {
	if a == ActionXZU {
		if seq {
			return ActionK
		}
		return ActionX
	}
	if typ, ok := knownTypes[t]; ok {
		switch a {
		case ActionZD, ActionXD, ActionXZD, ActionXZ:
			switch typ {
			case 3:
				if a != ActionZD {
					return ActionX
				}
			case 2:
				if a != ActionXD {
					return ActionZ
				}
			}
		}
	}
	switch a {
	case ActionZD, ActionXD, ActionXZD:
		return ActionD
	case ActionXZ:
		return ActionZ
	}
	return a
}

// knownTypes gives the PS3.3 Type of attributes with compound codes whose
// Type does not depend on the IOD (they appear only in modules that give
// them this Type). Keep it short: a wrong entry makes outputs invalid (the
// dciodvfy test catches some; Series Date, for one, is Type 3 in General
// Series but Type 1 in PET Series).
var knownTypes = map[Tag]int{
	0x00080012: 3, // Instance Creation Date (SOP Common)
	0x00080013: 3, // Instance Creation Time (SOP Common)
	0x00081110: 3, // Referenced Study Sequence (General Study)
	0x00180010: 2, // Contrast/Bolus Agent (Contrast/Bolus)
	0x00400555: 2, // Acquisition Context Sequence (Acquisition Context)
}

// countKey groups the report's counts.
type countKey struct {
	tag           Tag
	keyword       string
	rule, applied Action
	private       bool
}

// count records one action; closeReport adds them up.
func (rw *rewrite) count(t Tag, keyword string, rule, applied Action) {
	rw.counts = append(rw.counts, countKey{tag: t, keyword: keyword, rule: rule, applied: applied})
}

// countPrivate records one action on a private attribute; closeReport
// names the group.
func (rw *rewrite) countPrivate(group uint16, applied Action) {
	rw.counts = append(rw.counts, countKey{tag: NewTag(group, 0), rule: ActionX, applied: applied, private: true})
}

// compareCounts orders count keys as the report lists them (see
// sortActions), ties broken by the other fields.
func compareCounts(a, b countKey) int {
	switch {
	case a.tag != b.tag:
		return cmp.Compare(a.tag, b.tag)
	case a.applied != b.applied:
		return cmp.Compare(a.applied, b.applied)
	case a.keyword != b.keyword:
		return strings.Compare(a.keyword, b.keyword)
	case a.rule != b.rule:
		return cmp.Compare(a.rule, b.rule)
	case a.private != b.private:
		if a.private {
			return 1
		}
		return -1
	}
	return 0
}

// list de-identifies the elements of a dataset or item.
func (rw *rewrite) list(elems []*Element, depth int) []*Element {
	var creators map[uint32]string
	if rw.d.safePrivate {
		for _, e := range elems {
			if e.Tag.IsPrivateCreator() {
				if creators == nil {
					creators = map[uint32]string{}
				}
				creators[blockOf(e.Tag.Group(), uint8(e.Tag.Element()))] = strings.TrimSpace(e.String())
			}
		}
	}
	kept := map[uint32]bool{}
	out := rw.mem.pointers(len(elems))
	for _, e := range elems {
		if ne := rw.element(e, depth, creators, kept); ne != nil {
			out = append(out, ne)
		}
	}
	if len(kept) > 0 {
		// Keep the Private Creator of every block something was kept from.
		for _, e := range elems {
			if e.Tag.IsPrivateCreator() && kept[blockOf(e.Tag.Group(), uint8(e.Tag.Element()))] {
				out = append(out, e)
				rw.countPrivate(e.Tag.Group(), ActionK)
			}
		}
		slices.SortStableFunc(out, func(a, b *Element) int { return cmp.Compare(a.Tag, b.Tag) })
	}
	return out
}

func blockOf(group uint16, block uint8) uint32 { return uint32(group)<<8 | uint32(block) }

func isOverlayGroup(g uint16) bool { return g >= 0x6000 && g <= 0x601E && g&1 == 0 }

// element de-identifies one element; nil means removed.
func (rw *rewrite) element(e *Element, depth int, creators map[uint32]string, kept map[uint32]bool) *Element {
	t := e.Tag
	switch {
	case t.IsPrivate():
		return rw.private(e, creators, kept)
	case t.Element() == 0x0000 || t.Group() == 0x0002:
		// Group lengths go stale when values change (they are retired
		// outside group 0002); File Meta elements do not belong in the
		// dataset. The File Meta itself is written afresh.
		return nil
	case isOverlayGroup(t.Group()):
		// Table E.1-1 removes Overlay Data and Overlay Comments. An
		// Overlay Plane without its data is invalid, so the whole
		// repeating group goes.
		rw.count(NewTag(t.Group(), 0x3000), "OverlayData (whole overlay group)", ActionX, ActionX)
		return nil
	case depth == 0 && (t == tagPatientIdentityRemoved || t == tagDeidentificationMethod ||
		t == tagDeidentificationMethodCodeSeq || t == tagLongitudinalTemporalInfoModif):
		return nil // written afresh by header
	case depth == 0 && (t == tagPatientName || t == tagPatientID):
		r, _ := ruleFor(t)
		rw.count(t, r.keyword, r.resolve(rw.d.cols), ActionD)
		return nil // set to the pseudonym by header
	}
	r, listed := ruleFor(t)
	if !listed {
		return rw.unlisted(e, depth)
	}
	a := r.resolve(rw.d.cols)
	applied := resolveCompound(a, t, e.IsSequence())
	keyword := r.keyword
	if keyword == "" {
		keyword = t.Keyword()
	}
	rw.count(t, keyword, a, applied)
	return rw.apply(e, applied, depth)
}

// unlisted handles an attribute that Table E.1-1 does not list: the Basic
// Profile keeps it. Beyond the profile, sequences are still searched, a
// person's name is blanked wherever it is, and text that can hold free
// prose (LT, ST, UT, UC: SR TEXT items, comments) or short strings (LO,
// SH) has the identifying values of the instance masked, since PS3.15
// warns that the table alone may not be enough.
func (rw *rewrite) unlisted(e *Element, depth int) *Element {
	vr := effectiveVR(e)
	switch {
	case e.IsSequence():
		return rw.recurse(e, depth)
	case len(e.Value) == 0:
		return e
	case vr == "PN":
		rw.count(e.Tag, e.Tag.Keyword()+" (unlisted person name)", ActionNone, ActionZ)
		return rw.withValue(e, nil)
	case vr == "LT" || vr == "ST" || vr == "UT" || vr == "UC" || vr == "LO" || vr == "SH":
		free := vr != "LO" && vr != "SH"
		v := rw.scrub(e.Value, free)
		if bytes.Equal(v, e.Value) {
			return e
		}
		rw.count(e.Tag, e.Tag.Keyword()+" (unlisted text, cleaned)", ActionNone, ActionC)
		return rw.withValue(e, v)
	}
	return e
}

// private handles an odd-group element: removed, unless Retain Safe
// Private is on and Table E.3.10-1 lists it under its Private Creator.
func (rw *rewrite) private(e *Element, creators map[uint32]string, kept map[uint32]bool) *Element {
	t := e.Tag
	if rw.d.safePrivate && t.IsPrivateCreator() {
		return nil // put back by list when its block keeps something
	}
	if !rw.d.safePrivate || t.Element() < 0x1000 {
		rw.countPrivate(t.Group(), ActionX)
		return nil
	}
	block := blockOf(t.Group(), uint8(t.Element()>>8))
	creator, ok := creators[block]
	if ok {
		if _, safe := safePrivateTag(privateKey{group: t.Group(), creator: creator, elem: uint8(t.Element())}); safe {
			kept[block] = true
			rw.countPrivate(t.Group(), ActionK)
			return e
		}
	}
	rw.countPrivate(t.Group(), ActionX)
	return nil
}

// apply carries out a resolved action.
func (rw *rewrite) apply(e *Element, a Action, depth int) *Element {
	vr := effectiveVR(e)
	switch a {
	case ActionX:
		return nil
	case ActionZ:
		if e.IsSequence() {
			ne := rw.mem.copyOf(e)
			ne.Items = nil
			return ne
		}
		return rw.withValue(e, nil)
	case ActionK, ActionNone:
		if e.IsSequence() {
			return rw.recurse(e, depth)
		}
		if e.Tag == tagPatientAge {
			return rw.withValue(e, []byte(capAge(e.String())))
		}
		return e
	case ActionD:
		switch {
		case e.IsSequence() && strings.HasSuffix(e.Tag.Keyword(), "CodeSequence"):
			// The code itself identifies (a person, an institution).
			return dummyCodeSequence(e)
		case e.IsSequence():
			return rw.recurse(e, depth)
		case vr == "UI":
			return rw.remap(e)
		}
		return rw.withValue(e, dummy(vr))
	case ActionU:
		if e.IsSequence() {
			return rw.recurse(e, depth)
		}
		return rw.remap(e)
	case ActionC:
		return rw.clean(e, vr, depth)
	}
	return nil
}

// recurse applies the profile to the items of a sequence.
func (rw *rewrite) recurse(e *Element, depth int) *Element {
	ne := rw.mem.copyOf(e)
	ne.Items = make([]*Item, len(e.Items))
	for i, it := range e.Items {
		ne.Items[i] = &Item{Elements: rw.list(it.Elements, depth+1), Offset: it.Offset}
	}
	return ne
}

// remap queues a UI element for new UIDs (filled in by resolveUIDs).
func (rw *rewrite) remap(e *Element) *Element {
	ne := rw.mem.copyOf(e)
	rw.fixups = append(rw.fixups, fixup{e: ne, originals: splitValues(e.Value)})
	return ne
}

// withValue returns a copy of e with value v (padded to even length).
func (rw *rewrite) withValue(e *Element, v []byte) *Element {
	ne := rw.mem.copyOf(e)
	vr := effectiveVR(e)
	if len(v)%2 == 1 {
		if vr == "UI" || isBinaryVR(vr) {
			v = append(v, 0)
		} else {
			v = append(v, ' ')
		}
	}
	ne.Value = v
	ne.Length = uint32(len(v))
	ne.Items = nil
	return ne
}

// effectiveVR is the VR to interpret a value by: for UN, what the
// dictionary says.
func effectiveVR(e *Element) string {
	if e.VR == "UN" {
		if vr := lookupVR(uint32(e.Tag)); vr != "UN" {
			return vr
		}
	}
	return e.VR
}

func isBinaryVR(vr string) bool {
	switch vr {
	case "OB", "OD", "OF", "OL", "OV", "OW", "SL", "SS", "SV", "UL", "US", "UV", "FL", "FD", "AT", "UN":
		return true
	}
	return false
}

// dummy returns a value for action D: not empty, valid for the VR, and
// saying nothing about anyone.
func dummy(vr string) []byte {
	switch vr {
	case "AE":
		return []byte("ANONYMOUS")
	case "AS":
		return []byte("000Y")
	case "DA":
		return []byte("19000101")
	case "DT":
		return []byte("19000101000000")
	case "TM":
		return []byte("000000")
	case "DS", "IS":
		return []byte("0")
	case "UR":
		return []byte("urn:x-anonymized")
	case "US", "SS", "OW", "OB", "UN":
		return []byte{0, 0}
	case "UL", "SL", "FL", "OL", "OF", "AT":
		return []byte{0, 0, 0, 0}
	case "FD", "OD", "SV", "UV", "OV":
		return make([]byte, 8)
	}
	return []byte("ANONYMIZED")
}

// dummyCodeSequence replaces codes that identify someone with one dummy
// code (D on a code sequence, such as Person Identification Code Sequence,
// which is Type 1).
func dummyCodeSequence(e *Element) *Element {
	ne := *e
	ne.Items = []*Item{{Elements: []*Element{
		textElement(tagCodeValue, "SH", "ANONYMIZED"),
		textElement(tagCodingSchemeDesignator, "SH", "99CONSILIUM"),
		textElement(tagCodeMeaning, "LO", "Anonymized"),
	}}}
	return &ne
}

// capAge groups ages of 90 and over as "090Y" (HIPAA 164.514(b)(2)(i)(C)).
func capAge(s string) string {
	if len(s) != 4 {
		return s
	}
	n, err := strconv.Atoi(s[:3])
	if err != nil {
		return ""
	}
	switch s[3] {
	case 'Y':
		if n >= 90 {
			return "090Y"
		}
	case 'M':
		if n >= 90*12 {
			return "090Y"
		}
	}
	return s
}

// clean carries out action C: for dates, the patient's shift; for times,
// AE titles and coded strings, keep; for text, remove every identifying
// value found in the instance; for sequences, apply the profile to the
// items. Binary values cannot be cleaned and are removed.
func (rw *rewrite) clean(e *Element, vr string, depth int) *Element {
	switch vr {
	case "SQ":
		return rw.recurse(e, depth)
	case "DA", "DT":
		v, ok := shiftDates(e.Value, vr, rw.patient.OffsetDays)
		if !ok {
			return rw.withValue(e, nil)
		}
		return rw.withValue(e, v)
	case "TM", "AE", "CS", "AS":
		return e
	case "LO", "SH", "ST", "LT", "UT", "UC", "PN":
		return rw.withValue(e, rw.scrub(e.Value, true))
	}
	return nil
}

// shiftDates shifts each DA or DT value (multi-valued, or a range) by
// days. A DT keeps its time and offset; a DT of only a year or year and
// month is shifted from its first day and keeps its precision. ok is false
// when a value is not a date.
func shiftDates(v []byte, vr string, days int) ([]byte, bool) {
	s := strings.TrimRight(string(v), " \x00")
	if strings.TrimSpace(s) == "" {
		return nil, true
	}
	vals := strings.Split(s, `\`)
	for i, val := range vals {
		parts := strings.Split(strings.TrimSpace(val), "-")
		if vr == "DT" && len(parts) > 2 {
			return nil, false // "-" is also a UTC offset sign: too ambiguous
		}
		for j, p := range parts {
			if p == "" {
				continue
			}
			var ok bool
			if vr == "DA" {
				parts[j], ok = shiftDA(p, days)
			} else {
				parts[j], ok = shiftDT(p, days)
			}
			if !ok {
				return nil, false
			}
		}
		vals[i] = strings.Join(parts, "-")
	}
	return []byte(strings.Join(vals, `\`)), true
}

func shiftDA(s string, days int) (string, bool) {
	layout := "20060102"
	if len(s) == 10 && s[4] == '.' && s[7] == '.' {
		layout = "2006.01.02" // ACR-NEMA form
	}
	t, err := time.Parse(layout, s)
	if err != nil {
		return "", false
	}
	return t.AddDate(0, 0, days).Format(layout), true
}

func shiftDT(s string, days int) (string, bool) {
	var date, rest, layout string
	switch {
	case len(s) >= 8:
		date, rest, layout = s[:8], s[8:], "20060102"
	case len(s) == 6:
		date, layout = s+"01", "200601"
	case len(s) == 4:
		date, layout = s+"0101", "2006"
	default:
		return "", false
	}
	if strings.ContainsAny(rest, "+") && len(s) < 8 {
		return "", false
	}
	t, err := time.Parse("20060102", date)
	if err != nil {
		return "", false
	}
	return t.AddDate(0, 0, days).Format(layout) + rest, true
}

// scrub removes identifying values from text: the values of attributes
// the profile removes or replaces (whole values, name components, dates
// in common spellings), found anywhere in the text (ASCII
// case-insensitively), are overwritten with '*', keeping the length. For
// free text (free is true) the words of those values and every run of
// five or more digits (IDs, phone numbers, dates) go too. Text in a
// multi-byte ISO 2022 character set cannot be searched safely byte by byte
// and is emptied instead, if it has any non-ASCII byte.
func (rw *rewrite) scrub(v []byte, free bool) []byte {
	if strings.Contains(rw.sum.SpecificCharacterSet, "2022") && bytes.ContainsFunc(v, func(r rune) bool { return r >= 0x80 || r == 0x1B }) {
		return nil
	}
	if rw.tokens == nil {
		rw.tokens = identifyingTokens(rw.hdr, rw.d.cols, rw.mem)
	}
	rw.low = asciiLowerTo(rw.low[:0], v)
	low := rw.low
	var out []byte // allocated on the first match
	mask := func(from, to int) {
		if out == nil {
			out = bytes.Clone(v)
		}
		for k := from; k < to; k++ {
			out[k] = '*'
		}
	}
	find := func(toks [][]byte) {
		for _, tok := range toks {
			if len(tok) > len(low) {
				continue
			}
			for i := 0; ; {
				j := bytes.Index(low[i:], tok)
				if j < 0 {
					break
				}
				mask(i+j, i+j+len(tok))
				i += j + len(tok)
			}
		}
	}
	find(rw.tokens.strong)
	if free {
		find(rw.tokens.weak)
		run := 0
		for i := 0; i <= len(v); i++ {
			if i < len(v) && v[i] >= '0' && v[i] <= '9' {
				run++
				continue
			}
			if run >= 5 {
				mask(i-run, i)
			}
			run = 0
		}
	}
	if out == nil {
		return v
	}
	return out
}

func asciiLower(b []byte) []byte { return asciiLowerTo(make([]byte, 0, len(b)), b) }

// asciiLowerTo appends b, ASCII letters in lower case, to dst.
func asciiLowerTo(dst, b []byte) []byte {
	for _, c := range b {
		if c >= 'A' && c <= 'Z' {
			c += 'a' - 'A'
		}
		dst = append(dst, c)
	}
	return dst
}

// tokens are identifying values of one instance, ASCII lower case,
// longest first (so a name is masked whole before its parts).
type tokens struct {
	strong [][]byte // whole values, name components, dates
	weak   [][]byte // words of longer values
}

// identifyingTokens collects, from every depth of the header, the values
// of standard attributes the profile does not keep. Private attributes are
// left out: they go anyway, and vendor strings in them ("SIEMENS") would
// mask harmless text. It runs once per instance that has text to clean,
// so it works on the value bytes without allocating per token.
func identifyingTokens(elems []*Element, cols []int, mem *scratch) *tokens {
	strong, weak := new(tokenSet), new(tokenSet)
	if mem != nil {
		strong, weak = &mem.strong, &mem.weak
	}
	// The same date usually fills several attributes (study, series,
	// acquisition, content): its spellings are added once.
	var dates [16][8]byte
	nDates := 0
	newDate := func(d []byte) bool {
		for _, x := range dates[:nDates] {
			if string(x[:]) == string(d) {
				return false
			}
		}
		if nDates < len(dates) {
			copy(dates[nDates][:], d)
			nDates++
		}
		return true
	}
	var walk func([]*Element)
	walk = func(elems []*Element) {
		for _, e := range elems {
			for _, it := range e.Items {
				walk(it.Elements)
			}
			if e.Tag.IsPrivate() {
				continue
			}
			r, listed := ruleFor(e.Tag)
			vr := effectiveVR(e)
			if !listed && vr != "PN" {
				continue
			}
			if listed {
				switch r.resolve(cols) {
				case ActionK, ActionC, ActionNone:
					if e.Tag != tagPatientName && e.Tag != tagPatientID {
						continue
					}
				}
			}
			switch vr {
			case "PN":
				// The components and their parts, as in e.String().
				v := bytes.TrimLeft(bytes.TrimRight(e.Value, " \x00"), " ")
				fields(v, "^= ,.", func(part []byte) { strong.add(part) })
			case "LO", "SH", "ST", "LT", "UT", "UC", "AE":
				values(e.Value, func(v []byte) {
					strong.add(v)
					fields(v, ` ,;:/()-_"'`, func(w []byte) {
						if len(w) >= 4 {
							weak.add(w)
						}
					})
				})
			case "DA":
				values(e.Value, func(d []byte) {
					if !isDate(d) || !newDate(d) {
						return
					}
					ymd := [3][]byte{d[0:4], d[4:6], d[6:8]}
					for _, f := range dateSpellings {
						strong.addJoined([3][]byte{ymd[f.order[0]], ymd[f.order[1]], ymd[f.order[2]]}, f.sep)
					}
				})
			}
		}
	}
	walk(elems)
	var lists [][]byte
	if mem != nil {
		lists = mem.list[:0]
	}
	lists = strong.list(lists)
	n := len(lists)
	lists = weak.list(lists)
	if mem != nil {
		mem.list = lists // keep the capacity for the next instance
	}
	return &tokens{strong: lists[:n:n], weak: lists[n:]}
}

// dateSpellings are the common spellings of a date looked for in text:
// the order of year, month and day (0, 1, 2) and the separator (0 for
// none): 20060102, 2006-01-02, 2006/01/02, 2006.01.02, 02/01/2006,
// 01/02/2006, 02.01.2006, 02-01-2006.
var dateSpellings = [...]struct {
	order [3]int
	sep   byte
}{
	{[3]int{0, 1, 2}, 0}, {[3]int{0, 1, 2}, '-'}, {[3]int{0, 1, 2}, '/'}, {[3]int{0, 1, 2}, '.'},
	{[3]int{2, 1, 0}, '/'}, {[3]int{1, 2, 0}, '/'}, {[3]int{2, 1, 0}, '.'}, {[3]int{2, 1, 0}, '-'},
}

// tokenSet gathers tokens, ASCII lower case, in one buffer.
type tokenSet struct {
	buf   []byte
	spans [][2]int
}

// add adds b without surrounding white space, if 3 bytes or longer.
func (ts *tokenSet) add(b []byte) {
	b = bytes.TrimSpace(b)
	if len(b) < 3 {
		return
	}
	start := len(ts.buf)
	ts.buf = asciiLowerTo(ts.buf, b)
	ts.spans = append(ts.spans, [2]int{start, len(ts.buf)})
}

// addJoined adds the parts joined by sep (none when sep is 0).
func (ts *tokenSet) addJoined(parts [3][]byte, sep byte) {
	start := len(ts.buf)
	for i, p := range parts {
		if i > 0 && sep != 0 {
			ts.buf = append(ts.buf, sep)
		}
		ts.buf = append(ts.buf, p...)
	}
	ts.spans = append(ts.spans, [2]int{start, len(ts.buf)})
}

// list appends the distinct tokens to dst, longest first, then in byte
// order.
func (ts *tokenSet) list(dst [][]byte) [][]byte {
	start := len(dst)
	for _, s := range ts.spans {
		dst = append(dst, ts.buf[s[0]:s[1]:s[1]])
	}
	out := dst[start:]
	slices.SortFunc(out, func(a, b []byte) int {
		if len(a) != len(b) {
			return len(b) - len(a)
		}
		return bytes.Compare(a, b)
	})
	return dst[:start+len(slices.CompactFunc(out, bytes.Equal))]
}

// reset empties ts, keeping its memory.
func (ts *tokenSet) reset() {
	clear(ts.buf)
	ts.buf = ts.buf[:0]
	ts.spans = ts.spans[:0]
}

// values calls f with each value of a multi-valued text element, trimmed
// of spaces and NULs (as Element.Strings).
func values(v []byte, f func([]byte)) {
	for rest, more := v, len(v) > 0; more; {
		var part []byte
		part, rest, more = bytes.Cut(rest, []byte{'\\'})
		f(bytes.Trim(part, " \x00"))
	}
}

// fields calls f with each non-empty run of b between bytes of seps (all
// ASCII, so this is strings.FieldsFunc on the runes of b).
func fields(b []byte, seps string, f func([]byte)) {
	start := -1
	for i := 0; i <= len(b); i++ {
		if i == len(b) || strings.IndexByte(seps, b[i]) >= 0 {
			if start >= 0 {
				f(b[start:i])
				start = -1
			}
			continue
		}
		if start < 0 {
			start = i
		}
	}
}

// isDate reports whether d is a valid date as time.Parse("20060102", d)
// would accept it.
func isDate(d []byte) bool {
	if len(d) != 8 {
		return false
	}
	for _, c := range d {
		if c < '0' || c > '9' {
			return false
		}
	}
	num := func(b []byte) int {
		n := 0
		for _, c := range b {
			n = n*10 + int(c-'0')
		}
		return n
	}
	y, m, day := num(d[0:4]), num(d[4:6]), num(d[6:8])
	if m < 1 || m > 12 || day < 1 {
		return false
	}
	return day <= time.Date(y, time.Month(m)+1, 0, 0, 0, 0, 0, time.UTC).Day()
}
