package packet

import (
	"bufio"
	"bytes"
	"cmp"
	"encoding/json"
	"fmt"
	"html"
	"io"
	"slices"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/consilium/consilium/dicom"
)

// Identifiers are the patient's original identifying values. The builder
// scans every file of a packet for them (the residual scan) and reports
// each hit in the receipt, without the value. Values are matched without
// regard to ASCII case, also in their HTML- and JSON-escaped and ISO 8859-1
// forms; values shorter than three characters are not searched (they
// would match everywhere) and are counted as skipped.
type Identifiers struct {
	// Names are person names in any form ("Buster217 Hoeger845",
	// "HOEGER^BUSTER"): each word of three letters or more is searched
	// on its own, titles (Mr, Dr, Jr, ...) excepted.
	Names []string
	// IDs are identifier values: MRN, SSN, passport, driver's licence,
	// FHIR Patient.id, DICOM Patient ID, Other Patient IDs, accession
	// numbers. An ID with separators is also searched as its digits.
	IDs []string
	// Phones are telephone numbers, also searched as their digits.
	Phones []string
	// Emails are e-mail addresses.
	Emails []string
	// Addresses are address lines ("123 Main St").
	Addresses []string
	// BirthDates are exact birth dates, "YYYY-MM-DD" or "YYYYMMDD";
	// each is searched in ISO, DICOM (YYYYMMDD), MM/DD/YYYY, DD/MM/YYYY and
	// DD.MM.YYYY forms.
	BirthDates []string
	// Other values, searched as they are.
	Other []string
}

// Kinds of identifier, as reported in a [Hit].
const (
	KindName      = "name"
	KindID        = "identifier"
	KindPhone     = "phone"
	KindEmail     = "email"
	KindAddress   = "address"
	KindBirthDate = "birth-date"
	KindOther     = "other"
)

// Merge adds o's values to ids.
func (ids *Identifiers) Merge(o Identifiers) {
	ids.Names = append(ids.Names, o.Names...)
	ids.IDs = append(ids.IDs, o.IDs...)
	ids.Phones = append(ids.Phones, o.Phones...)
	ids.Emails = append(ids.Emails, o.Emails...)
	ids.Addresses = append(ids.Addresses, o.Addresses...)
	ids.BirthDates = append(ids.BirthDates, o.BirthDates...)
	ids.Other = append(ids.Other, o.Other...)
}

// AddDICOM adds the identifying attributes of an original DICOM instance:
// Patient's Name, Patient ID, Patient's Birth Date and Accession Number.
func (ids *Identifiers) AddDICOM(s dicom.Summary) {
	if s.PatientName != "" {
		ids.Names = append(ids.Names, s.PatientName)
	}
	if s.PatientID != "" {
		ids.IDs = append(ids.IDs, s.PatientID)
	}
	if s.AccessionNumber != "" {
		ids.IDs = append(ids.IDs, s.AccessionNumber)
	}
	if s.PatientBirthDate != "" {
		ids.BirthDates = append(ids.BirthDates, s.PatientBirthDate)
	}
}

// Hit is one kind of identifier found in one place of one file, and how
// often. It never holds the value found.
type Hit struct {
	// Path is the packet file.
	Path string `json:"path"`
	// Kind is KindName, KindID, ...
	Kind string `json:"kind"`
	// Where is the DICOM attribute ("(0010,0010)", or a path into
	// sequences such as "(0040,A730)[1].(0040,A160)") or, in other files,
	// the byte offset of the first occurrence ("byte 1234").
	Where string `json:"where"`
	Count int    `json:"count"`
}

// titles are name words that identify no one.
var titles = []string{"mr", "mrs", "ms", "miss", "mx", "dr", "prof", "jr", "sr", "md", "phd", "ii", "iii", "iv", "rn"}

// minNeedle is the shortest value searched: shorter ones match everywhere.
const minNeedle = 3

// needle is one searched byte string, lower-cased.
type needle struct {
	b    []byte
	kind string
	// word: the match must not be preceded or followed by a letter or
	// digit. digitLeft: it must not be preceded by a digit.
	word, digitLeft bool
}

// matcher holds the needles of a packet.
type matcher struct {
	needles []needle
	skipped int // values too short to search
	values  int // values searched
	maxLen  int
}

func newMatcher(ids Identifiers) *matcher {
	m := &matcher{}
	seen := map[string]bool{}
	add := func(s, kind string, word, digitLeft bool) {
		s = strings.TrimSpace(s)
		if utf8.RuneCountInString(s) < minNeedle {
			if s != "" {
				m.skipped++
			}
			return
		}
		m.values++
		for _, v := range variants(s) {
			b := lowerASCII([]byte(v))
			k := string(b) + "\x00" + kind
			if seen[k] {
				continue
			}
			seen[k] = true
			m.needles = append(m.needles, needle{b: b, kind: kind, word: word, digitLeft: digitLeft})
			m.maxLen = max(m.maxLen, len(b))
		}
	}
	for _, n := range ids.Names {
		words := strings.FieldsFunc(n, func(r rune) bool { return unicode.IsSpace(r) || strings.ContainsRune("^,=;", r) })
		searched := false
		for _, w := range words {
			w = strings.Trim(w, ".")
			if slices.Contains(titles, strings.ToLower(w)) {
				continue
			}
			if utf8.RuneCountInString(w) >= minNeedle {
				searched = true
			}
			add(w, KindName, true, false)
		}
		if !searched {
			// Every word is short ("Li Bo"): search the whole name.
			add(strings.Join(words, " "), KindName, true, false)
		}
	}
	for _, v := range ids.IDs {
		add(v, KindID, true, false)
		if d := digits(v); len(d) >= 6 && d != strings.TrimSpace(v) && onlySeparators(v) {
			add(d, KindID, true, false)
		}
	}
	for _, v := range ids.Phones {
		add(v, KindPhone, true, false)
		d := digits(v)
		if len(d) >= 7 {
			// Digits inside a longer number (a country code before
			// them) still count.
			add(d, KindPhone, false, false)
		}
		if len(d) >= 10 {
			// The usual ways of writing the last ten digits.
			a, b, c := d[len(d)-10:len(d)-7], d[len(d)-7:len(d)-4], d[len(d)-4:]
			for _, f := range []string{a + "-" + b + "-" + c, "(" + a + ") " + b + "-" + c, "(" + a + ")" + b + "-" + c, a + "." + b + "." + c, a + " " + b + " " + c} {
				add(f, KindPhone, false, false)
			}
		}
	}
	for _, v := range ids.Emails {
		add(v, KindEmail, true, false)
	}
	for _, v := range ids.Addresses {
		add(strings.Join(strings.Fields(v), " "), KindAddress, true, false)
	}
	for _, v := range ids.BirthDates {
		forms := dateForms(v)
		if forms == nil {
			add(v, KindBirthDate, true, false)
		}
		for _, f := range forms {
			// A date followed by a time (DICOM DT, FHIR dateTime) counts.
			add(f, KindBirthDate, false, true)
		}
	}
	for _, v := range ids.Other {
		add(v, KindOther, true, false)
	}
	return m
}

// variants returns s and its escaped and legacy encodings.
func variants(s string) []string {
	out := []string{s}
	if h := html.EscapeString(s); h != s {
		out = append(out, h)
	}
	if j, err := json.Marshal(s); err == nil {
		if js := string(j[1 : len(j)-1]); js != s {
			out = append(out, js)
		}
	}
	// ISO 8859-1 (ISO_IR 100), the most common DICOM character set.
	latin, ok := make([]byte, 0, len(s)), true
	for _, r := range s {
		if r > 0xFF {
			ok = false
			break
		}
		latin = append(latin, byte(r))
	}
	if ok && string(latin) != s {
		out = append(out, string(latin))
	}
	return out
}

func digits(s string) string {
	var b strings.Builder
	for _, r := range s {
		if r >= '0' && r <= '9' {
			b.WriteRune(r)
		}
	}
	return b.String()
}

// onlySeparators reports whether s is digits with separators between them
// ("999-12-3456", "555 123 4567").
func onlySeparators(s string) bool {
	return strings.Trim(strings.TrimSpace(s), "0123456789-. /") == ""
}

// dateForms returns the written forms of a date given as YYYY-MM-DD,
// YYYYMMDD or a FHIR dateTime, or nil when it is not one.
func dateForms(s string) []string {
	s = strings.TrimSpace(s)
	var y, mo, d string
	switch {
	case len(s) >= 10 && s[4] == '-' && s[7] == '-':
		y, mo, d = s[:4], s[5:7], s[8:10]
	case len(s) == 8:
		y, mo, d = s[:4], s[4:6], s[6:8]
	default:
		return nil
	}
	if digits(y+mo+d) != y+mo+d {
		return nil
	}
	return []string{y + "-" + mo + "-" + d, y + mo + d, mo + "/" + d + "/" + y, d + "/" + mo + "/" + y, d + "." + mo + "." + y}
}

func lowerASCII(b []byte) []byte {
	for i, c := range b {
		if 'A' <= c && c <= 'Z' {
			b[i] = c + ('a' - 'A')
		}
	}
	return b
}

func isAlnum(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || c >= 0x80
}

// scanner searches a stream for the needles. Matches may span writes; the
// scanner keeps the last bytes of each write (at most the longest needle
// plus one) to find them.
type scanner struct {
	m    *matcher
	buf  []byte // lower-cased, starting at absolute offset base
	base int64
	next []int64 // per needle, the first start not yet examined
	hit  func(n *needle, at int64)
}

func (m *matcher) newScanner(hit func(n *needle, at int64)) *scanner {
	return &scanner{m: m, next: make([]int64, len(m.needles)), hit: hit}
}

// reset starts a new stream.
func (s *scanner) reset() {
	s.buf = s.buf[:0]
	s.base = 0
	clear(s.next)
}

func (s *scanner) Write(p []byte) (int, error) {
	if len(s.m.needles) == 0 {
		return len(p), nil
	}
	n := len(s.buf)
	s.buf = append(s.buf, p...)
	lowerASCII(s.buf[n:])
	s.search(false)
	return len(p), nil
}

// Close searches what remains at the end of the stream.
func (s *scanner) Close() error {
	if len(s.m.needles) > 0 {
		s.search(true)
	}
	return nil
}

func (s *scanner) search(final bool) {
	limit := len(s.buf)
	if !final {
		// A match must have its next byte in the buffer, for the
		// boundary check.
		limit--
	}
	keep := int64(-1)
	for i := range s.m.needles {
		nd := &s.m.needles[i]
		from := int(s.next[i] - s.base)
		for from >= 0 && from < limit {
			j := bytes.Index(s.buf[from:limit], nd.b)
			if j < 0 {
				break
			}
			at := from + j
			if s.boundary(nd, at) {
				s.hit(nd, s.base+int64(at))
			}
			from = at + 1
		}
		from = max(from, limit-len(nd.b)+1)
		s.next[i] = s.base + int64(from)
		if keep < 0 || s.next[i] < keep {
			keep = s.next[i]
		}
	}
	if final {
		s.buf = s.buf[:0]
		return
	}
	// Keep one byte before the earliest unexamined start, for the left
	// boundary check.
	drop := int(keep - 1 - s.base)
	if drop > 0 {
		drop = min(drop, len(s.buf))
		s.buf = append(s.buf[:0], s.buf[drop:]...)
		s.base += int64(drop)
	}
}

func (s *scanner) boundary(nd *needle, at int) bool {
	var before, after byte
	hasBefore, hasAfter := at > 0, at+len(nd.b) < len(s.buf)
	if hasBefore {
		before = s.buf[at-1]
	}
	if hasAfter {
		after = s.buf[at+len(nd.b)]
	}
	if nd.digitLeft && hasBefore && '0' <= before && before <= '9' {
		return false
	}
	if !nd.word {
		return true
	}
	if hasBefore && isAlnum(nd.b[0]) && isAlnum(before) {
		return false
	}
	if hasAfter && isAlnum(nd.b[len(nd.b)-1]) && isAlnum(after) {
		return false
	}
	return true
}

// fileScan collects the hits of one packet file.
type fileScan struct {
	path  string
	sc    *scanner
	where string // current DICOM attribute; "" for byte offsets
	// resolve, when set, names the place of a hit at an offset (the
	// values of a DICOM header scanned in one batch).
	resolve func(at int64) string
	hits    map[[2]string]*Hit
	order   []*Hit
}

// maxHitsPerFile bounds what a file's hits cost in memory and in the
// receipt.
const maxHitsPerFile = 256

func (m *matcher) newFileScan(path string) *fileScan {
	f := &fileScan{path: path, hits: map[[2]string]*Hit{}}
	f.sc = m.newScanner(func(n *needle, at int64) {
		where := f.where
		if f.resolve != nil {
			where = f.resolve(at)
		}
		k := [2]string{n.kind, where}
		if where == "" {
			where = fmt.Sprintf("byte %d", at)
			k[1] = "bytes"
		}
		if h := f.hits[k]; h != nil {
			h.Count++
			return
		}
		if len(f.order) >= maxHitsPerFile {
			return
		}
		h := &Hit{Path: f.path, Kind: n.kind, Where: where, Count: 1}
		f.hits[k] = h
		f.order = append(f.order, h)
	})
	return f
}

// Write scans bytes of a non-DICOM file; Close ends it.
func (f *fileScan) Write(p []byte) (int, error) { return f.sc.Write(p) }
func (f *fileScan) Close() error                { return f.sc.Close() }

// Hits returns the hits found so far.
func (f *fileScan) Hits() []Hit {
	out := make([]Hit, len(f.order))
	for i, h := range f.order {
		out[i] = *h
	}
	return out
}

// scanBytes scans a whole in-memory file.
func (m *matcher) scanBytes(path string, b []byte) []Hit {
	f := m.newFileScan(path)
	f.Write(b)
	f.Close()
	return f.Hits()
}

// dicomScan is what scanning a DICOM file gives besides its hits: what
// the DICOMDIR needs.
type dicomScan struct {
	meta   *dicom.FileMeta
	header []*dicom.Element
	hits   []Hit
}

// scanDICOM reads a Part 10 instance of size bytes from r (through br,
// when given, to reuse its buffer) and scans its
// preamble, every File Meta and dataset value at every depth and, with
// pixels, the Pixel Data. Pixel Data is streamed, never held; without
// pixels it is not even read: the scan jumps over its value and scans
// whatever follows it byte by byte.
func (m *matcher) scanDICOM(path string, r io.ReaderAt, size int64, pixels bool, br *bufio.Reader) (*dicomScan, error) {
	f := m.newFileScan(path)
	var pre [128]byte
	if _, err := r.ReadAt(pre[:], 0); err != nil {
		return nil, fmt.Errorf("reading the preamble: %w", err)
	}
	if br == nil {
		br = bufio.NewReaderSize(nil, 32<<10)
	}
	br.Reset(io.NewSectionReader(r, 0, size))
	defer br.Reset(nil)
	rd, err := dicom.NewReader(br, dicom.ReaderOptions{})
	if err != nil {
		return nil, err
	}
	// Every value goes into one batch, each followed by a NUL (no
	// needle spans it, and it is a word boundary), scanned in one pass;
	// a hit's offset leads back to the value and its attribute path.
	var hb headerBatch
	hb.add(nil, pre[:])
	for _, e := range rd.Meta().Elements {
		hb.walk(e)
	}
	var header []*dicom.Element
	scanBatch := func() {
		f.resolve = hb.where
		f.sc.reset()
		f.sc.Write(hb.buf)
		f.sc.Close()
		f.resolve = nil
	}
	for {
		e, err := rd.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, err
		}
		px := rd.PixelData()
		if px == nil {
			hb.walk(e)
			header = append(header, e)
			continue
		}
		scanBatch()
		hb = headerBatch{}
		if !pixels && e.Length != dicom.UndefinedLength && !rd.TransferSyntax().Deflated {
			// Offsets are those of the file: jump over the value.
			end := rd.Offset() + int64(e.Length)
			if end > size {
				return nil, fmt.Errorf("pixel data of %d bytes runs past the end of the file", e.Length)
			}
			if end < size {
				f.where = "after " + e.Tag.String()
				f.sc.reset()
				if _, err := io.Copy(f.sc, io.NewSectionReader(r, end, size-end)); err != nil {
					return nil, err
				}
				f.sc.Close()
				f.where = ""
			}
			break
		}
		if pixels {
			f.where = e.Tag.String()
			f.sc.reset()
			if _, err := io.Copy(f.sc, px); err != nil {
				return nil, err
			}
			f.sc.Close()
			f.where = ""
		}
	}
	scanBatch()
	return &dicomScan{meta: rd.Meta(), header: header, hits: f.Hits()}, nil
}

// headerBatch gathers the values of a DICOM header for one scan.
type headerBatch struct {
	buf   []byte
	refs  []valueRef
	steps []uint32 // paths: tag, item, tag, ..., one after the other
	stack []uint32
}

// valueRef says where a value starts in buf and what its path is.
type valueRef struct{ off, from, to int }

func (hb *headerBatch) add(path []uint32, v []byte) {
	if len(v) == 0 {
		return
	}
	from := len(hb.steps)
	hb.steps = append(hb.steps, path...)
	hb.refs = append(hb.refs, valueRef{off: len(hb.buf), from: from, to: len(hb.steps)})
	hb.buf = append(hb.buf, v...)
	hb.buf = append(hb.buf, 0)
}

func (hb *headerBatch) walk(e *dicom.Element) {
	hb.stack = append(hb.stack, uint32(e.Tag))
	hb.add(hb.stack, e.Value)
	for i, it := range e.Items {
		hb.stack = append(hb.stack, uint32(i+1))
		for _, c := range it.Elements {
			hb.walk(c)
		}
		hb.stack = hb.stack[:len(hb.stack)-1]
	}
	hb.stack = hb.stack[:len(hb.stack)-1]
}

// where names the value holding the byte at offset at of buf:
// "(0040,A730)[2].(0040,A160)", or "preamble".
func (hb *headerBatch) where(at int64) string {
	off := int(at)
	i, found := slices.BinarySearchFunc(hb.refs, off, func(r valueRef, off int) int { return cmp.Compare(r.off, off) })
	if !found {
		i--
	}
	if i < 0 {
		return ""
	}
	path := hb.steps[hb.refs[i].from:hb.refs[i].to]
	if len(path) == 0 {
		return "preamble"
	}
	var b strings.Builder
	for j, s := range path {
		if j%2 == 1 {
			fmt.Fprintf(&b, "[%d].", s)
			continue
		}
		b.WriteString(dicom.Tag(s).String())
	}
	return b.String()
}
