package dicom

import (
	"bufio"
	"cmp"
	"compress/flate"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"sync"

	"github.com/consilium/consilium/deid"
	"github.com/consilium/consilium/dicom/internal/wire"
)

// ErrNoPatientKey is returned by [Deidentifier.Rewrite] when the key
// function returns an empty key.
var ErrNoPatientKey = errors.New("dicom: no patient key")

// KeyFunc chooses the patient key of an instance from its key attributes.
// The key names the patient to the [deid.Source]; see package deid.
type KeyFunc func(Summary) (string, error)

// PatientKey returns a KeyFunc that gives every instance the same key (the
// gateway knows whose instances it de-identifies).
func PatientKey(key string) KeyFunc {
	return func(Summary) (string, error) { return key, nil }
}

// PatientIDKey is the KeyFunc of the offline CLI: the instance's Patient
// ID. An instance without one fails with ErrNoPatientKey.
func PatientIDKey(s Summary) (string, error) { return s.PatientID, nil }

// Options configure a [Deidentifier].
type Options struct {
	// Profile is a DICOM profile from deid.ParseDICOMProfile.
	Profile deid.Profile
	// Source gives pseudonyms, date offsets and UIDs.
	Source deid.Source
	// Reader configures reading; set AllowNoMeta to accept bare datasets.
	Reader ReaderOptions
	// BurnedIn decides which instances are reported as possibly carrying
	// burned-in text. Zero value: DefaultBurnedInRules.
	BurnedIn BurnedInRules
}

// Deidentifier applies the PS3.15 Annex E Basic Application Level
// Confidentiality Profile, with options, to DICOM instances. It is safe for
// concurrent use.
type Deidentifier struct {
	profile deid.Profile
	cols    []int
	src     deid.Source
	ropts   ReaderOptions
	burned  BurnedInRules

	safePrivate bool
	modified    bool // dates shifted
	fullDates   bool
}

// NewDeidentifier returns a Deidentifier for a DICOM profile.
func NewDeidentifier(opts Options) (*Deidentifier, error) {
	if opts.Profile.Kind != deid.DICOM || opts.Profile.Name != deid.Basic {
		return nil, fmt.Errorf("dicom: %w: need a DICOM profile", deid.ErrUnknownProfile)
	}
	if opts.Source == nil {
		return nil, errors.New("dicom: de-identification needs a pseudonym source")
	}
	d := &Deidentifier{profile: opts.Profile, src: opts.Source, ropts: opts.Reader, burned: opts.BurnedIn}
	for _, o := range opts.Profile.Options {
		c, ok := optionColumn[o]
		if !ok {
			return nil, fmt.Errorf("dicom: %w: option %q", deid.ErrUnknownProfile, o)
		}
		d.cols = append(d.cols, c)
	}
	d.safePrivate = opts.Profile.Has(deid.RetainSafePrivate)
	d.modified = opts.Profile.Has(deid.RetainLongModifiedDates)
	d.fullDates = opts.Profile.Has(deid.RetainLongFullDates)
	if len(d.burned.Modalities) == 0 && len(d.burned.SOPClasses) == 0 {
		d.burned = DefaultBurnedInRules()
	}
	return d, nil
}

// Profile returns the profile the Deidentifier applies.
func (d *Deidentifier) Profile() deid.Profile { return d.profile }

// Rewrite reads one instance from src and writes its de-identified form
// to dst: the header is rewritten, Pixel Data is copied through byte for
// byte without being held in memory, the transfer syntax is kept, and the
// File Meta is replaced. key chooses the patient key once the header has
// been read.
//
// On error dst holds a partial instance, which the caller must discard.
// Errors from reading are [*ParseError]s; ErrNoPatientKey when key gives
// no key; errors from the source are wrapped.
func (d *Deidentifier) Rewrite(ctx context.Context, dst io.Writer, src io.Reader, key KeyFunc) (*Report, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	// A seekable source lets Pixel Data be copied by range (in the kernel,
	// with copy_file_range, between two files) instead of through memory.
	base := int64(-1)
	pool := &streamReaders
	if seekable(src) {
		pool = &fileReaders
		if pos, err := src.(io.Seeker).Seek(0, io.SeekCurrent); err == nil {
			base = pos
		}
	}
	// The Reader lives only for this call: its buffer is reused.
	buf := pool.Get().(*bufio.Reader)
	defer func() {
		buf.Reset(nil)
		pool.Put(buf)
	}()
	mem := getScratch()
	defer mem.release()
	rd, err := newReader(src, d.ropts, buf, mem)
	if err != nil {
		return nil, err
	}
	header, pixel, err := readHeader(rd)
	if err != nil {
		return nil, err
	}
	sum := rd.Summary()
	k, err := key(sum)
	if err != nil {
		return nil, fmt.Errorf("dicom: choosing the patient key: %w", err)
	}
	if k == "" {
		return nil, ErrNoPatientKey
	}
	patient, err := d.src.Patient(ctx, k)
	if err != nil {
		return nil, fmt.Errorf("dicom: pseudonym: %w", err)
	}
	rw := d.newRewrite(patient, sum, rd.TransferSyntax())
	rw.mem = mem
	rw.report.Problems = validate(header, &sum, rd.Offset())

	out := rw.header(header)
	metaUID := sum.SOPInstanceUID
	if metaUID == "" {
		metaUID = rd.Meta().MediaStorageSOPInstanceUID
	}
	newInstance, err := rw.resolveUIDs(ctx, k, metaUID)
	if err != nil {
		return nil, err
	}
	if newInstance == "" {
		// A dataset with no SOP Instance UID anywhere (a fragment, not an
		// instance: the report says so). The File Meta still needs one.
		if newInstance, err = deid.NewUID(); err != nil {
			return nil, err
		}
	}
	sopClass := sum.SOPClassUID
	if sopClass == "" {
		sopClass = rd.Meta().MediaStorageSOPClassUID
	}
	rw.finishReport(out, newInstance)

	bw := writerPool.Get().(*bufio.Writer)
	bw.Reset(dst)
	defer func() {
		bw.Reset(nil)
		writerPool.Put(bw)
	}()
	if err := writeMeta(bw, sopClass, newInstance, rd.TransferSyntax().UID); err != nil {
		return nil, err
	}
	var body io.Writer = bw
	var fw *flate.Writer
	if rd.TransferSyntax().Deflated {
		fw, _ = flate.NewWriter(bw, flate.DefaultCompression)
		body = fw
	}
	enc := wire.NewEncoder(body, rd.TransferSyntax().wire())
	for _, e := range out {
		if e != pixel {
			if err := writeElement(enc, e); err != nil {
				return nil, err
			}
			continue
		}
		if err := enc.WriteHeader(uint32(e.Tag), e.VR, e.Length); err != nil {
			return nil, err
		}
		chk := newPixelChecker(&sum, e)
		var n int64
		if base >= 0 && fw == nil {
			n, err = copyPixelRange(bw, dst, src, base, rd, e, chk)
		} else {
			n, err = io.Copy(io.MultiWriter(body, chk), rd.PixelData())
		}
		if err != nil {
			return nil, err
		}
		rw.report.PixelBytes = n
		if chk.err != nil {
			rw.report.Problems = append(rw.report.Problems, chk.err.(*ParseError).Reason)
		}
	}
	// Elements after Pixel Data (rare: padding, signatures).
	for pixel != nil {
		e, err := rd.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, err
		}
		ne := rw.element(e, 0, nil, nil)
		if ne == nil {
			continue
		}
		if _, err := rw.resolveUIDs(ctx, k, ""); err != nil {
			return nil, err
		}
		if err := writeElement(enc, ne); err != nil {
			return nil, err
		}
	}
	if fw != nil {
		if err := fw.Close(); err != nil {
			return nil, err
		}
	}
	if err := bw.Flush(); err != nil {
		return nil, err
	}
	return rw.closeReport(), nil
}

// Buffers reused across Rewrite calls: a de-identified series is hundreds
// of instances, and allocating them anew for each was a third of the
// bytes allocated per instance.
var (
	writerPool    = sync.Pool{New: func() any { return bufio.NewWriterSize(nil, 64<<10) }}
	fileReaders   = sync.Pool{New: func() any { return bufio.NewReaderSize(nil, seekableBuffer) }}
	streamReaders = sync.Pool{New: func() any { return bufio.NewReaderSize(nil, streamBuffer) }}
)

// copyPixelRange copies the Pixel Data value that starts at the reader's
// position by byte range, from a seekable source: its extent is found from
// the element length, or by walking the item headers of encapsulated data
// (reading only their first bytes, for the checker). Between two files the
// copy is done by the kernel. The reader then continues after it.
func copyPixelRange(bw *bufio.Writer, dst io.Writer, src io.Reader, base int64, rd *Reader, e *Element, chk *pixelChecker) (int64, error) {
	ra := src.(io.ReaderAt)
	size, err := src.(io.Seeker).Seek(0, io.SeekEnd)
	if err != nil {
		return 0, err
	}
	start := base + rd.Offset()
	var n int64
	if e.Length != UndefinedLength {
		n = int64(e.Length)
		if start+n > size {
			return 0, parseErr(ReasonTruncated, size-base, e.Tag, "pixel data shorter than its length")
		}
	} else {
		pos, index := start, 0
		var hdr [8]byte
		prefix := make([]byte, pixelPrefix)
		for {
			if pos+8 > size {
				return 0, parseErr(ReasonTruncated, size-base, e.Tag, "pixel data without sequence delimiter")
			}
			if _, err := ra.ReadAt(hdr[:], pos); err != nil {
				return 0, err
			}
			tag := uint32(binary.LittleEndian.Uint16(hdr[0:]))<<16 | uint32(binary.LittleEndian.Uint16(hdr[2:]))
			length := binary.LittleEndian.Uint32(hdr[4:])
			pos += 8
			if tag == wire.SeqDelim {
				break
			}
			if tag != wire.ItemTag || length == wire.Undefined {
				return 0, parseErr(ReasonMalformed, pos-8-base, e.Tag, "bad item in encapsulated pixel data")
			}
			if pos+int64(length) > size {
				return 0, parseErr(ReasonTruncated, size-base, e.Tag, "pixel data fragment shorter than its length")
			}
			if index > 0 && length > 0 {
				p := prefix[:min(int64(length), pixelPrefix)]
				if _, err := ra.ReadAt(p, pos); err != nil {
					return 0, err
				}
				chk.checkPrefix(index, p)
			}
			pos += int64(length)
			index++
		}
		n = pos - start
	}
	if err := bw.Flush(); err != nil {
		return 0, err
	}
	var copied int64
	srcFile, okSrc := src.(*os.File)
	dstFile, okDst := dst.(*os.File)
	if okSrc && okDst {
		if _, err := srcFile.Seek(start, io.SeekStart); err != nil {
			return 0, err
		}
		copied, err = io.Copy(dstFile, io.LimitReader(srcFile, n))
	} else {
		copied, err = io.Copy(bw, io.NewSectionReader(ra, start, n))
	}
	if err != nil {
		return copied, err
	}
	if copied != n {
		return copied, parseErr(ReasonTruncated, start-base+copied, e.Tag, "pixel data shorter than its length")
	}
	// Whatever follows (usually nothing: then no read is needed to find
	// the end) is read by position, so src's offset does not matter.
	end := start + n
	rd.resync(io.NewSectionReader(ra, end, size-end), end-base)
	return n, nil
}

// UIDs returns the original UIDs that Rewrite would remap in the instance
// read from r (its header only). A caller de-identifying a whole study can
// pass the UIDs of all its instances to the source in one call before
// rewriting them, so that a recording source writes its mapping once.
func (d *Deidentifier) UIDs(r io.Reader) ([]string, error) {
	rd, err := NewReader(r, d.ropts)
	if err != nil {
		return nil, err
	}
	header, _, err := readHeader(rd)
	if err != nil {
		return nil, err
	}
	rw := d.newRewrite(deid.Patient{}, rd.Summary(), rd.TransferSyntax())
	rw.header(header)
	var out []string
	seen := map[string]bool{}
	add := func(u string) {
		if u != "" && !seen[u] {
			seen[u] = true
			out = append(out, u)
		}
	}
	for _, f := range rw.fixups {
		for _, u := range f.originals {
			add(u)
		}
	}
	if !d.profile.Has(deid.RetainUIDs) {
		add(rd.Meta().MediaStorageSOPInstanceUID)
	}
	return out, nil
}

// readHeader reads the top-level elements up to and including Pixel Data
// (returned as pixel; nil when there is none).
func readHeader(rd *Reader) (header []*Element, pixel *Element, err error) {
	if rd.mem != nil {
		header = rd.mem.hdr[:0]
		defer func() { rd.mem.hdr = header }()
	}
	for {
		e, err := rd.Next()
		if err == io.EOF {
			return header, nil, nil
		}
		if err != nil {
			return nil, nil, err
		}
		header = append(header, e)
		if isPixelData(e.Tag) {
			return header, e, nil
		}
	}
}

// validate runs the checks of Inspect that do not stop de-identification
// and returns their reasons.
func validate(header []*Element, s *Summary, off int64) []Reason {
	var out []Reason
	add := func(err error) {
		if err == nil {
			return
		}
		var pe *ParseError
		if errors.As(err, &pe) && !slices.Contains(out, pe.Reason) {
			out = append(out, pe.Reason)
		}
	}
	for _, e := range header {
		add(checkValues(e))
		if isPixelData(e.Tag) {
			add(checkPixelModule(s, e, off))
		}
	}
	add(checkRequired(s, off))
	return out
}

// fixup is an element whose UIDs are replaced once the source has
// answered.
type fixup struct {
	e         *Element
	originals []string
}

// rewrite is the state of one Rewrite.
type rewrite struct {
	d       *Deidentifier
	patient deid.Patient
	sum     Summary
	ts      TransferSyntax
	fixups  []fixup
	tokens  *tokens // identifying values, for cleaning text
	low     []byte  // scratch space for scrub
	hdr     []*Element
	mem     *scratch // nil outside Rewrite
	report  *Report
	counts  []countKey // one per action taken
}

func (d *Deidentifier) newRewrite(p deid.Patient, s Summary, ts TransferSyntax) *rewrite {
	return &rewrite{
		d: d, patient: p, sum: s, ts: ts,
		report: &Report{
			Profile:           d.profile.String(),
			TransferSyntaxUID: ts.UID,
			SOPClassUID:       s.SOPClassUID,
			Modality:          s.Modality,
			Pseudonym:         p.Pseudonym,
			OffsetDays:        p.OffsetDays,
		},
	}
}

// resolveUIDs asks the source for every pending fixup (and extra, when
// not empty) in one call, fills the fixups, and returns extra's new UID.
func (rw *rewrite) resolveUIDs(ctx context.Context, key, extra string) (string, error) {
	retain := rw.d.profile.Has(deid.RetainUIDs)
	var origs []string
	seen := map[string]int{}
	add := func(u string) {
		if _, ok := seen[u]; !ok && u != "" {
			seen[u] = len(origs)
			origs = append(origs, u)
		}
	}
	for _, f := range rw.fixups {
		for _, u := range f.originals {
			add(u)
		}
	}
	if !retain {
		add(extra)
	}
	if len(origs) == 0 {
		rw.fixups = rw.fixups[:0]
		return extra, nil
	}
	news, err := rw.d.src.UIDs(ctx, key, origs)
	if err != nil {
		return "", fmt.Errorf("dicom: new UIDs: %w", err)
	}
	if len(news) != len(origs) {
		return "", fmt.Errorf("dicom: source returned %d UIDs for %d", len(news), len(origs))
	}
	for _, f := range rw.fixups {
		vals := make([]string, len(f.originals))
		for i, u := range f.originals {
			if u != "" {
				vals[i] = news[seen[u]]
			}
		}
		f.e.Value = padValue("UI", strings.Join(vals, `\`))
		f.e.Length = uint32(len(f.e.Value))
	}
	rw.fixups = rw.fixups[:0]
	if retain || extra == "" {
		return extra, nil
	}
	return news[seen[extra]], nil
}

// header de-identifies the top-level elements and adds the attributes
// that say how.
func (rw *rewrite) header(elems []*Element) []*Element {
	rw.hdr = elems
	if rw.mem != nil {
		rw.counts = rw.mem.counts[:0]
	} else {
		rw.counts = make([]countKey, 0, len(elems))
	}
	out := rw.list(elems, 0)
	p := rw.patient.Pseudonym
	set := func(e *Element) {
		if i := slices.IndexFunc(out, func(x *Element) bool { return x.Tag == e.Tag }); i >= 0 {
			out[i] = e
		} else {
			out = append(out, e)
		}
	}
	set(textElement(tagPatientName, "PN", p))
	set(textElement(tagPatientID, "LO", p))
	set(textElement(tagPatientIdentityRemoved, "CS", "YES"))
	method := []string{"Consilium PS3.15 Annex E", rw.d.profile.Name}
	for _, o := range rw.d.profile.Options {
		method = append(method, string(o))
	}
	set(textElement(tagDeidentificationMethod, "LO", strings.Join(method, `\`)))
	seq := &Element{Tag: tagDeidentificationMethodCodeSeq, VR: "SQ", Length: UndefinedLength}
	for _, c := range rw.d.profile.Codes() {
		seq.Items = append(seq.Items, &Item{Elements: []*Element{
			textElement(tagCodeValue, "SH", c.Value),
			textElement(tagCodingSchemeDesignator, "SH", c.Scheme),
			textElement(tagCodeMeaning, "LO", c.Meaning),
		}})
	}
	set(seq)
	ltim := "REMOVED"
	switch {
	case rw.d.modified:
		ltim = "MODIFIED"
	case rw.d.fullDates:
		ltim = "UNMODIFIED"
	}
	set(textElement(tagLongitudinalTemporalInfoModif, "CS", ltim))
	slices.SortStableFunc(out, func(a, b *Element) int { return cmp.Compare(a.Tag, b.Tag) })
	return out
}

func textElement(t Tag, vr, s string) *Element {
	v := padValue(vr, s)
	return &Element{Tag: t, VR: vr, Value: v, Length: uint32(len(v))}
}

// finishReport records the new UIDs and the burned-in verdict.
func (rw *rewrite) finishReport(out []*Element, newInstance string) {
	r := rw.report
	r.SOPInstanceUID = newInstance
	if e := Find(out, tagStudyInstanceUID); e != nil {
		r.StudyInstanceUID = e.String()
	}
	if e := Find(out, tagSeriesInstanceUID); e != nil {
		r.SeriesInstanceUID = e.String()
	}
	r.BurnedIn, r.BurnedInReason = rw.d.burned.check(&rw.sum)
}

// closeReport turns the counts into the report's sorted action list.
func (rw *rewrite) closeReport() *Report {
	r := rw.report
	slices.SortFunc(rw.counts, compareCounts)
	if rw.mem != nil {
		rw.mem.counts = rw.counts // keep the capacity for the next instance
	}
	distinct := 0
	for i := range rw.counts {
		if i == 0 || compareCounts(rw.counts[i], rw.counts[i-1]) != 0 {
			distinct++
		}
	}
	r.Actions = make([]ActionCount, 0, distinct)
	for i, k := range rw.counts {
		if i > 0 && compareCounts(k, rw.counts[i-1]) == 0 {
			r.Actions[len(r.Actions)-1].Count++
			continue
		}
		if k.private {
			k.keyword = fmt.Sprintf("private attributes of group %04X", k.tag.Group())
		}
		r.Actions = append(r.Actions, ActionCount{Tag: k.tag, Keyword: k.keyword, Rule: k.rule, Applied: k.applied, Private: k.private, Count: 1})
	}
	return r
}
