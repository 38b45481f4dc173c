package imaging

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"sort"
	"time"

	"github.com/consilium/consilium/dicom"
	"github.com/consilium/consilium/storage"
)

// Outcome says what storing one instance did.
type Outcome int

// Outcomes of [Ingest.Add].
const (
	// Failed: nothing was stored; Result.Status says why.
	Failed Outcome = iota
	// Stored: a new instance.
	Stored
	// Unchanged: the same bytes were already stored (a safe re-send).
	Unchanged
	// Replaced: different bytes replaced the stored ones
	// (IngestOptions.Replace).
	Replaced
)

func (o Outcome) String() string {
	switch o {
	case Stored:
		return "stored"
	case Unchanged:
		return "unchanged"
	case Replaced:
		return "replaced"
	}
	return "failed"
}

// Result is what happened to one instance of an [Ingest].
type Result struct {
	// The instance's UIDs, as far as they could be read.
	SOPClassUID, SOPInstanceUID         string
	StudyInstanceUID, SeriesInstanceUID string
	TransferSyntaxUID                   string
	Outcome                             Outcome
	// Status is the failure reason when Outcome is Failed, else the
	// warning reason (0 for none).
	Status Status
	// Message explains a failure; Warnings explain a warning. Both are
	// safe to show the sender: they hold no value from the instance.
	Message  string
	Warnings []string
	// Size is the instance's length in bytes.
	Size int64
	// SHA256 is the hex SHA-256 of the instance's bytes.
	SHA256 string
}

// IngestOptions describe one store request.
type IngestOptions struct {
	// Org is the organisation that owns what is stored. Required.
	Org string
	// Study, when set, is the Study Instance UID the request is addressed
	// to (STOW-RS POST /studies/{study}); instances of other studies are
	// refused.
	Study string
	// Replace lets different bytes replace an instance stored under the
	// same SOP Instance UID; without it they are refused.
	Replace bool
	// Authorize, when set, is asked once per study before its first
	// instance is written. An error wrapping [ErrNotAuthorized] refuses
	// the study's instances with StatusNotAuthorized; another error with
	// StatusProcessingFailure.
	Authorize func(ctx context.Context, s StudyRef) error
}

// StudyRef names a study for authorisation.
type StudyRef struct {
	// UID is the Study Instance UID; Key its keyed hash, which policy
	// inputs and audit records use instead.
	UID, Key string
	// PatientKey is the pseudonymous key of the study's patient.
	PatientKey string
}

// Ingest is one store request: instances are added one by one as they
// arrive and published together by Commit. It is not safe for concurrent
// use.
type Ingest struct {
	a        *Archive
	opts     IngestOptions
	studies  map[string]*pendingStudy
	results  []*Result
	inflight []*inflight
}

// pendingStudy is what an Ingest knows and has done about one study.
type pendingStudy struct {
	key      string
	index    *studyIndex // as loaded at the study's first instance
	attrs    studyAttrs  // from the first instance of this request
	loadErr  error
	authErr  error
	adds     []*pendingInstance
	touched  bool
	leaving  []string // SOP Instance UIDs that a replacement moved to another study
	departed bool
}

// pendingInstance is an instance written (or found) by this request that
// the study index must list.
type pendingInstance struct {
	res    *Result
	series seriesEntry
	entry  *instanceEntry
}

// Begin starts a store request.
func (a *Archive) Begin(opts IngestOptions) (*Ingest, error) {
	if opts.Org == "" {
		return nil, errors.New("imaging: an organisation is required")
	}
	return &Ingest{a: a, opts: opts, studies: map[string]*pendingStudy{}}, nil
}

// RequestError is returned by [Ingest.Add] when the request itself broke
// (its body could not be read, the context ended): no further instance
// can be read, and nothing of the request should be committed.
type RequestError struct{ Err error }

func (e *RequestError) Error() string { return "imaging: reading the request: " + e.Err.Error() }
func (e *RequestError) Unwrap() error { return e.Err }

// Refuse records an instance refused before it was read (a part that is
// not application/dicom, say) and returns its result.
func (in *Ingest) Refuse(s Status, msg string) *Result {
	r := &Result{Outcome: Failed, Status: s, Message: msg}
	in.results = append(in.results, r)
	return r
}

// Add reads one instance from r to its end, checks it with dicom.Check
// and streams it into the store, and returns its result. The result is
// final once Commit returns (the store may still be committing the
// upload when Add returns), and the instance is not visible until then.
// The returned error is a *RequestError, or nil; refusals are results,
// not errors.
func (in *Ingest) Add(ctx context.Context, r io.Reader) (*Result, error) {
	a := in.a
	res := &Result{}
	src := &sourceReader{r: r, left: a.maxBytes}
	sk := &sink{h: sha256.New(), max: int(a.maxHeader) + 1<<20}
	// The checker reports any read error as truncated data; the trap
	// keeps the real cause (the sender's connection, a limit).
	tee := &errTrap{r: io.TeeReader(src, sk)}
	var up *upload
	var pl *plan
	cr, err := dicom.Check(tee, dicom.CheckOptions{
		Reader: dicom.ReaderOptions{MaxHeaderBytes: a.maxHeader},
		Header: func(s dicom.Summary) error {
			setUIDs(res, s)
			p, err := in.plan(ctx, s)
			if err != nil {
				return err
			}
			pl = p
			if p.existing != nil && !in.opts.Replace {
				sk.hashOnly()
				return nil
			}
			up = a.startUpload(ctx, p.name, p.put)
			sk.attach(up.pw)
			return nil
		},
	})
	setUIDs(res, cr.Summary)
	if err == nil {
		// Check stops at the end of the dataset; anything after it is
		// still part of the instance as sent.
		_, err = io.Copy(io.Discard, tee)
	}
	if tee.err != nil {
		err = tee.err
	}
	if err != nil {
		if up != nil {
			up.pw.CloseWithError(err)
			<-up.done
		}
		var se *sourceError
		if errors.As(err, &se) || ctx.Err() != nil {
			in.settle(ctx, -1)
			return nil, &RequestError{Err: err}
		}
		res.Outcome = Failed
		res.Status, res.Message = a.classify(err)
		in.results = append(in.results, res)
		return res, nil
	}
	res.Size = sk.n
	res.SHA256 = hex.EncodeToString(sk.h.Sum(nil))
	for _, w := range cr.Warnings {
		res.Warnings = append(res.Warnings, w.Error())
	}
	if len(res.Warnings) > 0 {
		res.Status = WarningDataSetMismatch
	}
	in.results = append(in.results, res)
	if up == nil {
		in.finish(ctx, res, pl, up, cr)
		return res, nil
	}
	// The upload now syncs and commits its object; the next instance is
	// read meanwhile, and the outcome is settled later (at the latest by
	// Commit), so that the store's latency does not add up instance after
	// instance.
	up.pw.Close()
	in.inflight = append(in.inflight, &inflight{res: res, pl: pl, up: up, cr: cr})
	if len(in.inflight) > maxInflight {
		in.settle(ctx, 1)
	}
	return res, nil
}

// maxInflight bounds the uploads of one request that are still being
// committed by the store while the next instance is read.
const maxInflight = 4

// inflight is an instance whose upload has all its bytes and is being
// committed.
type inflight struct {
	res *Result
	pl  *plan
	up  *upload
	cr  dicom.CheckResult
}

// settle waits for the oldest n uploads in flight (all for n < 0) and
// decides their outcomes, in the order the instances arrived.
func (in *Ingest) settle(ctx context.Context, n int) {
	if n < 0 || n > len(in.inflight) {
		n = len(in.inflight)
	}
	for _, f := range in.inflight[:n] {
		<-f.up.done
		in.finish(ctx, f.res, f.pl, f.up, f.cr)
	}
	in.inflight = in.inflight[n:]
}

// finish decides the outcome of a checked instance.
func (in *Ingest) finish(ctx context.Context, res *Result, pl *plan, up *upload, cr dicom.CheckResult) {
	a := in.a
	fail := func(s Status, format string, args ...any) {
		res.Outcome, res.Status, res.Message, res.Warnings = Failed, s, fmt.Sprintf(format, args...), nil
	}
	switch {
	case up == nil: // already stored and not to be replaced
		if pl.existing.SHA256 != res.SHA256 {
			fail(StatusDuplicateInstance, "different bytes are already stored under this SOP Instance UID; resend with replace=true to replace them")
			return
		}
		res.Outcome = Unchanged
		return
	case errors.Is(up.err, storage.ErrExists):
		// Stored meanwhile by another request, or left unlisted by one
		// whose index update failed: compare with what is there.
		sum, err := a.hashObject(ctx, pl.name)
		if err != nil {
			a.log.Error("reading back a stored instance", "study", pl.study.key, "err", err)
			fail(StatusProcessingFailure, "the instance could not be compared with the stored one; try again")
			return
		}
		if sum != res.SHA256 {
			fail(StatusDuplicateInstance, "different bytes are already stored under this SOP Instance UID; resend with replace=true to replace them")
			return
		}
		res.Outcome = Unchanged
	case up.err != nil:
		a.log.Error("storing an instance", "study", pl.study.key, "err", up.err)
		fail(StatusProcessingFailure, "the store failed; try again")
		return
	case pl.replacing:
		res.Outcome = Replaced
	default:
		res.Outcome = Stored
	}
	s := cr.Summary
	dec := dicom.NewTextDecoder(s.SpecificCharacterSet)
	ts, _ := dicom.LookupTransferSyntax(s.TransferSyntaxUID)
	entry := &instanceEntry{
		UID: s.SOPInstanceUID, Key: pl.sopKey, SOPClassUID: s.SOPClassUID, TransferSyntax: s.TransferSyntaxUID,
		Number: s.InstanceNumber, Rows: s.Rows, Columns: s.Columns, Bits: s.BitsAllocated, Size: res.Size, SHA256: res.SHA256,
		PixelData: cr.PixelData, PixelDataEnd: cr.PixelDataEnd, Trailing: cr.Trailing, Deflated: ts.Deflated,
		Encapsulated: s.HasPixelData && s.PixelDataLength == dicom.UndefinedLength, Stored: time.Now().UTC(),
	}
	if s.HasPixelData {
		entry.Frames = max(s.NumberOfFrames, 1)
	}
	series := seriesEntry{UID: s.SeriesInstanceUID, Modality: s.Modality, Number: s.SeriesNumber, Description: dec.Decode([]byte(s.SeriesDescription))}
	pl.study.adds = append(pl.study.adds, &pendingInstance{res: res, series: series, entry: entry})
	if pl.leaves != "" {
		if old := in.studies[pl.leaves]; old != nil {
			old.leaving = append(old.leaving, s.SOPInstanceUID)
		} else {
			in.studies[pl.leaves] = &pendingStudy{key: pl.leaves, leaving: []string{s.SOPInstanceUID}, departed: true}
		}
	}
}

func setUIDs(res *Result, s dicom.Summary) {
	set := func(dst *string, v string) {
		if v != "" {
			*dst = v
		}
	}
	set(&res.SOPClassUID, s.SOPClassUID)
	set(&res.SOPInstanceUID, s.SOPInstanceUID)
	set(&res.StudyInstanceUID, s.StudyInstanceUID)
	set(&res.SeriesInstanceUID, s.SeriesInstanceUID)
	set(&res.TransferSyntaxUID, s.TransferSyntaxUID)
}

// plan is where an instance goes, decided from its header.
type plan struct {
	study    *pendingStudy
	sopKey   string
	name     string
	put      storage.PutOptions
	existing *instanceEntry // already listed under this SOP Instance UID
	// replacing: an object is overwritten; leaves: the key of another
	// study that listed the SOP Instance UID before.
	replacing bool
	leaves    string
}

// mediaStorageDirectory is the SOP Class of a DICOMDIR.
const mediaStorageDirectory = "1.2.840.10008.1.3.10"

// plan decides from the header where the instance goes and whether it
// may: the errors it returns are refusals, which end the instance.
func (in *Ingest) plan(ctx context.Context, s dicom.Summary) (*plan, error) {
	a := in.a
	if in.opts.Study != "" && s.StudyInstanceUID != in.opts.Study {
		return nil, refuse(StatusDataSetMismatch, "the instance belongs to another study than the one the request is addressed to")
	}
	if s.SOPClassUID == mediaStorageDirectory {
		return nil, refuse(StatusSOPClassNotSupported, "a DICOMDIR is not a composite instance; send the instances it references")
	}
	for _, f := range in.inflight {
		if f.res.SOPInstanceUID == s.SOPInstanceUID {
			// The same instance twice in one request: the first must be
			// settled before the second can be compared with it.
			in.settle(ctx, -1)
			break
		}
	}
	st := in.study(ctx, s)
	switch {
	case st.loadErr != nil:
		return nil, refuse(StatusProcessingFailure, "the study's index could not be read; try again")
	case errors.Is(st.authErr, ErrNotAuthorized):
		return nil, refuse(StatusNotAuthorized, "storing into this study is not allowed by policy")
	case st.authErr != nil:
		return nil, refuse(StatusProcessingFailure, "the policy could not decide; try again")
	}
	dec := dicom.NewTextDecoder(s.SpecificCharacterSet)
	if pid := dec.Decode([]byte(s.PatientID)); st.patientID() != pid {
		return nil, refuse(StatusDataSetMismatch, "the Patient ID differs from the one of the study's other instances")
	}
	p := &plan{study: st, sopKey: a.names(kindSOP, s.SOPInstanceUID)}
	p.name = a.instanceName(in.opts.Org, p.sopKey)
	p.existing = st.lookup(s.SOPInstanceUID)
	p.put = storage.PutOptions{ContentType: "application/dicom", Metadata: map[string]string{"study": st.key}}
	switch {
	case !in.opts.Replace:
		p.put.IfAbsent = true
	case p.existing != nil:
		p.replacing = true
	default:
		// A replacement may move an instance between studies: find where
		// it was, to take it out of that study's index.
		info, err := a.store.Stat(ctx, p.name)
		switch {
		case err == nil:
			p.replacing = true
			if old := info.Metadata["study"]; old != "" && old != st.key {
				p.leaves = old
			}
		case !errors.Is(err, storage.ErrNotFound):
			a.log.Error("looking up a stored instance", "study", st.key, "err", err)
			return nil, refuse(StatusProcessingFailure, "the store failed; try again")
		}
	}
	st.touched = true
	return p, nil
}

// study returns the request's state for the instance's study, loading its
// index and asking for authorisation at its first instance.
func (in *Ingest) study(ctx context.Context, s dicom.Summary) *pendingStudy {
	a := in.a
	key := a.StudyKey(s.StudyInstanceUID)
	st := in.studies[key]
	if st != nil && !st.departed {
		return st
	}
	if st == nil {
		st = &pendingStudy{key: key}
		in.studies[key] = st
	}
	st.departed = false
	dec := dicom.NewTextDecoder(s.SpecificCharacterSet)
	d := func(v string) string { return dec.Decode([]byte(v)) }
	st.attrs = studyAttrs{
		UID: s.StudyInstanceUID, PatientID: d(s.PatientID), PatientName: d(s.PatientName),
		BirthDate: s.PatientBirthDate, Sex: s.PatientSex, Date: s.StudyDate, Time: s.StudyTime,
		Accession: d(s.AccessionNumber), StudyID: d(s.StudyID), Description: d(s.StudyDescription), Referring: d(s.ReferringPhysician),
	}
	st.attrs.PatientKey = a.PatientKey(in.opts.Org, st.attrs.PatientID)
	st.index = &studyIndex{}
	// The index as this archive last saw it will do: a duplicate it no
	// longer lists is caught when its upload finds the object there, and
	// the Patient ID is checked again by the commit.
	if err := a.loadCached(ctx, a.studyName(in.opts.Org, key), st.index); err != nil {
		a.log.Error("reading a study index", "study", key, "err", err)
		st.loadErr = err
		return st
	}
	if in.opts.Authorize != nil {
		patientKey := st.attrs.PatientKey
		if st.index.Study.PatientKey != "" {
			patientKey = st.index.Study.PatientKey
		}
		st.authErr = in.opts.Authorize(ctx, StudyRef{UID: s.StudyInstanceUID, Key: key, PatientKey: patientKey})
	}
	return st
}

// patientID is the Patient ID every instance of the study must carry.
func (st *pendingStudy) patientID() string {
	if st.index.Study.UID != "" {
		return st.index.Study.PatientID
	}
	return st.attrs.PatientID
}

// lookup finds an instance this request added, or the index listed.
func (st *pendingStudy) lookup(sopUID string) *instanceEntry {
	for i := len(st.adds) - 1; i >= 0; i-- {
		if st.adds[i].entry.UID == sopUID && st.adds[i].res.Outcome != Failed {
			return st.adds[i].entry
		}
	}
	_, e := st.index.find(sopUID)
	return e
}

// Commit publishes what the request stored: one compare-and-swap update
// of each study index it touched, then of the study's catalog shard. It
// returns every instance's result in the order added; instances whose
// index update failed turn into failures (StatusProcessingFailure), and
// storing them again completes them.
func (in *Ingest) Commit(ctx context.Context) []*Result {
	a := in.a
	in.settle(ctx, -1)
	keys := make([]string, 0, len(in.studies))
	for k := range in.studies {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		st := in.studies[k]
		if !st.touched && len(st.leaving) == 0 {
			continue
		}
		if err := in.commitStudy(ctx, st); err != nil {
			a.log.Error("updating a study index", "study", st.key, "err", err)
			for _, p := range st.adds {
				if p.res.Outcome != Failed {
					p.res.Outcome, p.res.Status, p.res.Warnings = Failed, StatusProcessingFailure, nil
					p.res.Message = "the instance was stored but could not be indexed; send it again"
				}
			}
		}
	}
	return in.results
}

var errPatientConflict = errors.New("another request stored a different patient in this study")

func (in *Ingest) commitStudy(ctx context.Context, st *pendingStudy) error {
	a := in.a
	var sum studySummary
	err := groupUpdate(ctx, a, a.studyName(in.opts.Org, st.key), func(x *studyIndex, exists bool) (bool, error) {
		changed := !exists
		x.V = indexVersion
		if len(st.adds) > 0 {
			if x.Study.UID != "" && x.Study.PatientID != st.attrs.PatientID {
				return false, errPatientConflict
			}
			changed = x.Study.fill(st.attrs) || changed
		}
		for _, p := range st.adds {
			if p.res.Outcome != Failed {
				changed = x.upsert(p.series, p.entry) || changed
			}
		}
		for _, uid := range st.leaving {
			changed = x.remove(uid) || changed
		}
		if changed {
			x.sortEntries()
			x.Updated = time.Now().UTC()
			x.Rev++
		}
		sum = x.summary()
		return changed, nil
	})
	if errors.Is(err, errPatientConflict) {
		for _, p := range st.adds {
			if p.res.Outcome != Failed {
				p.res.Outcome, p.res.Status, p.res.Warnings = Failed, StatusDataSetMismatch, nil
				p.res.Message = "the Patient ID differs from the one of the study's other instances"
			}
		}
		return nil
	}
	if err != nil {
		return err
	}
	return a.publishSummary(ctx, in.opts.Org, st.key, sum)
}

// updateCatalog writes a study's summary into its catalog shard unless
// the shard has it, or a later one, already; a study without instances
// stays as a tombstone that keeps its revision.
func (a *Archive) updateCatalog(ctx context.Context, org, key string, sum studySummary) error {
	return groupUpdate(ctx, a, a.shardName(org, key), func(c *catalogShard, exists bool) (bool, error) {
		return setSummary(c, key, sum), nil
	})
}

// hashObject returns the hex SHA-256 of a stored object's bytes.
func (a *Archive) hashObject(ctx context.Context, name string) (string, error) {
	rc, _, err := a.store.Get(ctx, name, storage.GetOptions{})
	if err != nil {
		return "", err
	}
	defer rc.Close()
	h := sha256.New()
	if _, err := io.Copy(h, rc); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// upload is a Put running in its own goroutine, fed through a pipe.
type upload struct {
	pw   *io.PipeWriter
	done chan struct{}
	info storage.Info
	err  error
}

// errUploadEnded unblocks a writer whose Put returned early.
var errUploadEnded = errors.New("imaging: upload ended")

func (a *Archive) startUpload(ctx context.Context, name string, opts storage.PutOptions) *upload {
	pr, pw := io.Pipe()
	u := &upload{pw: pw, done: make(chan struct{})}
	go func() {
		defer close(u.done)
		u.info, u.err = a.store.Put(ctx, name, pr, opts)
		pr.CloseWithError(errUploadEnded)
	}()
	return u
}

// sink receives every byte of the instance as the checker reads it: it
// hashes them, holds them until the header has decided where they go,
// then passes them to the upload. A failed upload does not fail the
// reading (the result says what happened).
type sink struct {
	h    hash.Hash
	n    int64
	buf  []byte
	max  int
	mode int // 0 buffering, 1 uploading, 2 hashing only
	w    io.Writer
	werr error
}

func (s *sink) Write(p []byte) (int, error) {
	switch s.mode {
	case 0:
		if len(s.buf)+len(p) > s.max {
			return 0, errHeaderTooLarge
		}
		s.buf = append(s.buf, p...)
	case 1:
		if s.werr == nil {
			_, s.werr = s.w.Write(p)
		}
	}
	s.h.Write(p)
	s.n += int64(len(p))
	return len(p), nil
}

func (s *sink) attach(w io.Writer) {
	s.mode, s.w = 1, w
	_, s.werr = w.Write(s.buf)
	s.buf = nil
}

func (s *sink) hashOnly() { s.mode, s.buf = 2, nil }

// errTrap remembers the first error other than io.EOF that r returned.
type errTrap struct {
	r   io.Reader
	err error
}

func (t *errTrap) Read(p []byte) (int, error) {
	n, err := t.r.Read(p)
	if err != nil && err != io.EOF && t.err == nil {
		t.err = err
	}
	return n, err
}

// sourceReader reads the sender's bytes, marks its errors as the
// request's, and bounds the instance's size.
type sourceReader struct {
	r    io.Reader
	left int64
}

type sourceError struct{ err error }

func (e *sourceError) Error() string { return e.err.Error() }
func (e *sourceError) Unwrap() error { return e.err }

func (s *sourceReader) Read(p []byte) (int, error) {
	if s.left <= 0 {
		// One more byte tells an instance of exactly the limit from a
		// longer one.
		var b [1]byte
		n, err := s.r.Read(b[:])
		switch {
		case n > 0:
			return 0, errTooLarge
		case err == nil || err == io.EOF:
			return 0, err
		default:
			return 0, &sourceError{err}
		}
	}
	if int64(len(p)) > s.left {
		p = p[:s.left]
	}
	n, err := s.r.Read(p)
	s.left -= int64(n)
	if err != nil && err != io.EOF {
		return n, &sourceError{err}
	}
	return n, err
}
