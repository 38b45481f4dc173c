package packet

import (
	"archive/tar"
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"runtime"
	"slices"
	"strings"
	"sync"
	"time"

	"aead.dev/minisign"
	"filippo.io/age"
	"golang.org/x/sync/errgroup"

	"github.com/consilium/consilium/deid"
	"github.com/consilium/consilium/dicom"
	"github.com/consilium/consilium/fhir"
)

// Options configure [Build].
type Options struct {
	// Recipients are the age recipients the packet is encrypted to (the
	// specialist's X25519 recipient). Required.
	Recipients []age.Recipient
	// SigningKey is the gateway's minisign key; it signs manifest.json.
	// Required.
	SigningKey minisign.PrivateKey
	// Deid says how originals are de-identified.
	Deid Deidentification
	// FailOnResidual makes Build fail with ErrResidualIdentifiers when the
	// residual scan finds an identifier, before the file holding it is
	// written (see the package documentation for the one exception).
	// Without it, hits are reported in the receipt and in [Result.Hits].
	FailOnResidual bool
	// ScanPixelData scans DICOM Pixel Data too. Pixel Data holds samples,
	// not text, and scanning it costs about as much as encrypting it, so it
	// is off by default; every other byte of every file is scanned.
	ScanPixelData bool
	// FileSetID is the DICOMDIR File-set ID (default "CONSILIUM").
	FileSetID string
	// TempDir is where instances larger than MemorySpool wait between
	// de-identification and the tar stream (default os.TempDir()). Only
	// de-identified data is written there, and only until it is sent.
	TempDir string
	// MemorySpool is the largest instance held in memory (default 8 MiB);
	// at most a few instances per core are in memory at once.
	MemorySpool int64
	// Now gives the creation time (default time.Now).
	Now func() time.Time
}

// Deidentification is how [Build] de-identifies originals: the obligations
// of the policy decision that released the packet.
type Deidentification struct {
	// Source gives pseudonyms, date offsets and UIDs. Required when any
	// content is an original.
	Source deid.Source
	// PatientKey names the patient to the Source; every original of the
	// packet is the patient's (the gateway uses "<org>|<patient id>").
	PatientKey string
	// DICOMProfile defaults to "basic,retain-long-modified-dates" (dates
	// shifted by the patient's offset, as the FHIR default does).
	DICOMProfile deid.Profile
	// FHIRProfile defaults to "shifted".
	FHIRProfile deid.Profile
	// ExcludeLabels are meta.security codes whose FHIR resources are left
	// out, besides fhir.DefaultSensitiveLabels.
	ExcludeLabels []string
	// KeepBurnedIn includes instances that may show burned-in text; by
	// default they are withheld.
	KeepBurnedIn bool
	// BurnedIn decides which instances may show burned-in text (zero:
	// dicom.DefaultBurnedInRules).
	BurnedIn dicom.BurnedInRules
}

// Result is what [Build] produced.
type Result struct {
	Manifest *Manifest
	Receipt  *Receipt
	// Hits are every residual hit, including those in manifest.json and
	// deid-receipt.json (which the receipt cannot list).
	Hits []Hit
	// Size is the number of encrypted bytes written.
	Size int64
}

// Defaults.
const (
	defaultFileSetID   = "CONSILIUM"
	defaultMemorySpool = 8 << 20
	chunkSize          = 256 << 10
	chunkDepth         = 8
	// prefetch is how many instances may wait, prepared or being
	// prepared, for the tar stream.
	prefetch = 4
)

// Build writes a packet for c to w: an age-encrypted tar stream whose
// entries are, in order, summary.html, fhir/bundle.json, the DICOM
// instances, DICOMDIR, deid-receipt.json, manifest.json and
// manifest.json.minisig (see the package documentation for why the
// manifest comes last). The age header is written at once and the rest as
// it is built; nothing is held whole but the bundle, the summary and the
// DICOMDIR.
//
// On error the output is incomplete: the age stream lacks its final chunk,
// so no age implementation decrypts it to the end, and it lacks the
// manifest. The caller must discard it. Errors: ErrResidualIdentifiers
// (with Options.FailOnResidual), errors of de-identification, of the
// instances' source and of w.
func Build(ctx context.Context, w io.Writer, c Contents, opts Options) (*Result, error) {
	b, err := newBuilder(ctx, c, opts)
	if err != nil {
		return nil, err
	}
	cw := &countWriter{w: w}
	aw, err := age.Encrypt(cw, opts.Recipients...)
	if err != nil {
		return nil, fmt.Errorf("packet: encrypting: %w", err)
	}

	g, gctx := errgroup.WithContext(ctx)
	pipe := newChunkPipe(gctx, chunkSize, chunkDepth)
	g.Go(func() error {
		if err := pipe.drain(aw); err != nil {
			return fmt.Errorf("packet: writing: %w", err)
		}
		// Only a complete stream gets its final chunk.
		if err := aw.Close(); err != nil {
			return fmt.Errorf("packet: writing: %w", err)
		}
		return nil
	})
	ready := make(chan chan *prepared, prefetch)
	if c.Instances != nil {
		g.Go(func() error { return b.prepareAll(gctx, c.Instances, ready) })
	} else {
		close(ready)
	}
	var res *Result
	g.Go(func() error {
		var err error
		res, err = b.write(gctx, pipe, ready)
		return err
	})
	err = g.Wait()
	// Instances prepared but not written (after a failure) hold memory
	// or temporary files.
	for fut := range ready {
		select {
		case p := <-fut:
			if p.sp != nil {
				p.sp.Close()
			}
		default:
		}
	}
	if err != nil {
		return nil, err
	}
	res.Size = cw.n
	return res, nil
}

// builder holds the state of one Build.
type builder struct {
	c        Contents
	opts     Options
	created  time.Time
	id       string
	dicomD   *dicom.Deidentifier
	fhirD    *fhir.Deidentifier
	dicomP   deid.Profile
	fhirP    deid.Profile
	patient  string
	pool     *bufPool
	copyBufs chan []byte
	readers  sync.Pool // *bufio.Reader for scanning headers

	// Identifiers: the base set, and what the workers learned from
	// originals (under mu).
	ids     Identifiers
	mu      sync.Mutex
	learned Identifiers
}

func newBuilder(ctx context.Context, c Contents, opts Options) (*builder, error) {
	if len(opts.Recipients) == 0 {
		return nil, errors.New("packet: no recipient")
	}
	if opts.SigningKey.Equal(minisign.PrivateKey{}) {
		return nil, errors.New("packet: no signing key")
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.FileSetID == "" {
		opts.FileSetID = defaultFileSetID
	}
	if opts.MemorySpool <= 0 {
		opts.MemorySpool = defaultMemorySpool
	}
	id, err := deid.NewUID()
	if err != nil {
		return nil, err
	}
	b := &builder{c: c, opts: opts, created: opts.Now().UTC().Truncate(time.Second), id: id, pool: newBufPool(), copyBufs: make(chan []byte, 2), ids: c.Identifiers}
	b.readers.New = func() any { return bufio.NewReaderSize(nil, 32<<10) }
	d := opts.Deid
	b.dicomP, b.fhirP = d.DICOMProfile, d.FHIRProfile
	if b.dicomP.Name == "" {
		b.dicomP = deid.Profile{Kind: deid.DICOM, Name: deid.Basic, Options: []deid.Option{deid.RetainLongModifiedDates}}
	}
	if b.fhirP.Name == "" {
		b.fhirP = deid.Profile{Kind: deid.FHIR, Name: deid.Shifted}
	}
	if d.Source != nil {
		if d.PatientKey == "" {
			return nil, errors.New("packet: de-identification needs a patient key")
		}
		p, err := d.Source.Patient(ctx, d.PatientKey)
		if err != nil {
			return nil, fmt.Errorf("packet: pseudonym: %w", err)
		}
		b.patient = p.Pseudonym
		key := d.PatientKey
		if b.fhirD, err = fhir.NewDeidentifier(fhir.DeidOptions{
			Profile: b.fhirP, Source: d.Source, SensitiveLabels: d.ExcludeLabels,
			PatientKey: func(fhir.DeidPatient) (string, error) { return key, nil },
		}); err != nil {
			return nil, err
		}
		if b.dicomD, err = dicom.NewDeidentifier(dicom.Options{Profile: b.dicomP, Source: d.Source, BurnedIn: d.BurnedIn}); err != nil {
			return nil, err
		}
	}
	if len(c.Bundle) > 0 && c.BundleReport == nil {
		if b.fhirD == nil {
			return nil, errors.New("packet: the bundle is an original (no BundleReport) and Deid has no Source")
		}
		pid, err := PatientIdentifiers(c.Bundle)
		if err != nil {
			return nil, err
		}
		b.ids.Merge(pid)
	}
	return b, nil
}

// prepared is one instance ready for the tar stream, or withheld.
type prepared struct {
	sp       *spool
	sum      string // SHA-256 of the spooled content, hex
	report   *dicom.Report
	scan     *dicomScan
	withheld *Withheld
}

// prepareAll fetches the instances in order and prepares (de-identifies
// or takes, spools, hashes, scans) several at once, one per core: the
// writer receives one future per instance, in order, a few ahead.
func (b *builder) prepareAll(ctx context.Context, src Instances, out chan<- chan *prepared) error {
	seen := map[string]bool{}
	m := newMatcher(b.ids)
	learn := func(s dicom.Summary) {
		var l Identifiers
		l.AddDICOM(s)
		b.mu.Lock()
		defer b.mu.Unlock()
		grew := false
		for _, v := range slices.Concat(l.Names, l.IDs, l.BirthDates) {
			if !seen[v] {
				seen[v] = true
				grew = true
			}
		}
		if grew {
			b.learned.Merge(l)
			all := b.ids
			all.Merge(b.learned)
			m = newMatcher(all)
		}
	}
	current := func() *matcher {
		b.mu.Lock()
		defer b.mu.Unlock()
		return m
	}

	type job struct {
		inst Instance
		fut  chan *prepared
	}
	jobs := make(chan job)
	g, gctx := errgroup.WithContext(ctx)
	for range workers() {
		g.Go(func() error {
			for j := range jobs {
				p, err := b.prepare(gctx, j.inst, learn, current)
				if err != nil {
					return err
				}
				j.fut <- p
			}
			return nil
		})
	}
	g.Go(func() error {
		defer close(jobs)
		defer close(out)
		for {
			inst, err := src.Next(gctx)
			if err == io.EOF {
				return nil
			}
			if err != nil {
				return fmt.Errorf("packet: next instance: %w", err)
			}
			fut := make(chan *prepared, 1)
			select {
			case out <- fut:
			case <-gctx.Done():
				inst.Body.Close()
				return gctx.Err()
			}
			select {
			case jobs <- job{inst, fut}:
			case <-gctx.Done():
				inst.Body.Close()
				return gctx.Err()
			}
		}
	})
	return g.Wait()
}

// workers is how many instances are prepared at once.
func workers() int { return min(max(runtime.GOMAXPROCS(0), 1), 4) }

// finalMatcher returns the matcher of every identifier, those learned from
// DICOM originals included. Call it once every instance is prepared.
func (b *builder) finalMatcher() *matcher {
	b.mu.Lock()
	defer b.mu.Unlock()
	all := b.ids
	all.Merge(b.learned)
	return newMatcher(all)
}

func (b *builder) prepare(ctx context.Context, inst Instance, learn func(dicom.Summary), m func() *matcher) (p *prepared, err error) {
	if inst.Body == nil {
		return nil, errors.New("packet: instance without a body")
	}
	sp := b.pool.newSpool(b.opts.MemorySpool, b.opts.TempDir)
	defer func() {
		if err != nil || p.sp == nil {
			sp.Close()
		}
	}()
	// The content is hashed here, as it is spooled, so that hashing (the
	// most expensive step after encryption) runs in the workers, beside
	// the tar stream and encryption rather than in line with them.
	sum := ""
	rep := inst.Report
	if rep == nil {
		if b.dicomD == nil {
			inst.Body.Close()
			return nil, errors.New("packet: an instance is an original (no Report) and Deid has no Source")
		}
		key := b.opts.Deid.PatientKey
		rep, err = b.dicomD.Rewrite(ctx, sp, inst.Body, func(s dicom.Summary) (string, error) {
			learn(s)
			return key, nil
		})
		inst.Body.Close()
		var pe *dicom.ParseError
		if errors.As(err, &pe) {
			return &prepared{withheld: &Withheld{Kind: "dicom-instance", Reason: "cannot be read: " + string(pe.Reason)}}, nil
		}
		if err != nil {
			return nil, fmt.Errorf("packet: de-identifying an instance: %w", err)
		}
	} else if ra, ok := inst.Body.(io.ReaderAt); ok && inst.Size > b.opts.MemorySpool {
		// A large file is read where it is rather than copied to
		// another file.
		sp.ra, sp.closer, sp.size = ra, inst.Body, inst.Size
		h := sha256.New()
		buf := b.copyBuf()
		n, err := io.CopyBuffer(h, io.NewSectionReader(ra, 0, inst.Size), buf)
		b.putCopyBuf(buf)
		if err == nil && n != inst.Size {
			err = fmt.Errorf("%d bytes, expected %d", n, inst.Size)
		}
		if err != nil {
			return nil, fmt.Errorf("packet: reading an instance: %w", err)
		}
		sum = hexSum(h)
	} else {
		_, err := sp.ReadFrom(inst.Body)
		inst.Body.Close()
		if err != nil {
			return nil, fmt.Errorf("packet: reading an instance: %w", err)
		}
	}
	if sum == "" {
		sum = sp.sum()
	}
	withheld := func(reason string) *prepared {
		return &prepared{report: rep, withheld: &Withheld{
			Kind: "dicom-instance", Reason: reason, StudyInstanceUID: rep.StudyInstanceUID,
			SeriesInstanceUID: rep.SeriesInstanceUID, SOPInstanceUID: rep.SOPInstanceUID, Modality: rep.Modality,
		}}
	}
	if rep.BurnedIn && !b.opts.Deid.KeepBurnedIn {
		return withheld("may show burned-in text: " + rep.BurnedInReason), nil
	}
	br := b.readers.Get().(*bufio.Reader)
	scan, err := m().scanDICOM("", sp.readerAt(), sp.size, b.opts.ScanPixelData, br)
	b.readers.Put(br)
	if err != nil {
		var pe *dicom.ParseError
		if errors.As(err, &pe) {
			return withheld("cannot be read after de-identification: " + string(pe.Reason)), nil
		}
		return nil, fmt.Errorf("packet: scanning an instance: %w", err)
	}
	return &prepared{sp: sp, sum: sum, report: rep, scan: scan}, nil
}

// copyBuf returns a buffer for copying files: large, so that a file on
// disk is read in few system calls.
func (b *builder) copyBuf() []byte {
	select {
	case buf := <-b.copyBufs:
		return buf
	default:
		return make([]byte, 1<<20)
	}
}

func (b *builder) putCopyBuf(buf []byte) {
	select {
	case b.copyBufs <- buf:
	default:
	}
}

// write produces the tar stream.
func (b *builder) write(ctx context.Context, pipe *chunkPipe, ready <-chan chan *prepared) (*Result, error) {
	tw := tar.NewWriter(pipe)
	m := newMatcher(b.ids)
	man := &Manifest{
		Format: Format, PacketID: b.id, Created: b.created, GatewayKeyID: KeyID(b.opts.SigningKey.ID()),
		Case: b.c.Case, Withheld: slices.Clone(b.c.Withheld),
		Deidentification: Deidentified{BurnedInWithheld: !b.opts.Deid.KeepBurnedIn},
	}
	if man.Case.Patient == "" {
		man.Case.Patient = b.patient
	}
	rc := &Receipt{Format: ReceiptFormat, PacketID: b.id, CaseID: b.c.Case.ID, Created: b.created}
	var hits []Hit
	files := 0
	check := func(h []Hit) error {
		files++
		hits = append(hits, h...)
		if len(h) > 0 && b.opts.FailOnResidual {
			return fmt.Errorf("%w: %s in %s (%s)", ErrResidualIdentifiers, h[0].Kind, h[0].Path, h[0].Where)
		}
		return nil
	}
	// add writes one file; sum is its SHA-256 when the caller computed
	// it, else it is computed here.
	add := func(path, media string, r io.Reader, size int64, sum string) error {
		if err := ctx.Err(); err != nil {
			return err
		}
		hdr := &tar.Header{Name: path, Size: size, Mode: 0o644, ModTime: b.created, Typeflag: tar.TypeReg}
		if err := tw.WriteHeader(hdr); err != nil {
			return fmt.Errorf("packet: %s: %w", path, err)
		}
		var w io.Writer = tw
		var h hash.Hash
		if sum == "" {
			h = sha256.New()
			w = io.MultiWriter(tw, h)
		}
		var n int64
		var err error
		if wt, ok := r.(io.WriterTo); ok {
			// An in-memory file goes in one write, which the pipe lends
			// to the encrypting goroutine.
			n, err = wt.WriteTo(w)
		} else {
			buf := b.copyBuf()
			n, err = io.CopyBuffer(w, r, buf)
			b.putCopyBuf(buf)
		}
		if err != nil {
			return fmt.Errorf("packet: %s: %w", path, err)
		}
		if n != size {
			return fmt.Errorf("packet: %s: %d bytes, expected %d", path, n, size)
		}
		if h != nil {
			sum = hexSum(h)
		}
		man.Files = append(man.Files, File{Path: path, Size: size, MediaType: media, SHA256: sum})
		return nil
	}
	addBytes := func(path, media string, data []byte) error {
		return add(path, media, bytes.NewReader(data), int64(len(data)), "")
	}

	// The FHIR bundle and the summary come first: they are what the
	// specialist reads before the images.
	bundle, frep := b.c.Bundle, b.c.BundleReport
	if len(bundle) > 0 && frep == nil {
		var err error
		if bundle, frep, err = b.fhirD.Deidentify(ctx, bundle); err != nil {
			return nil, fmt.Errorf("packet: de-identifying the bundle: %w", err)
		}
	}
	if len(bundle) > 0 {
		rc.FHIR = frep
		man.Deidentification.FHIR = profileOf(frep.Profile)
		man.Deidentification.ExcludedLabels = slices.Concat(fhir.DefaultSensitiveLabels, b.opts.Deid.ExcludeLabels)
		for _, e := range frep.Excluded {
			man.Withheld = append(man.Withheld, Withheld{Kind: "fhir-resource", Reason: e.Reason, ResourceType: e.ResourceType, Count: e.Count})
		}
	}
	safeHarbor := man.Deidentification.FHIR != nil && man.Deidentification.FHIR.Name == deid.SafeHarbor
	summary, err := renderSummary(man.Case, b.created, bundle, safeHarbor)
	if err != nil {
		return nil, err
	}
	if err := check(m.scanBytes(SummaryPath, summary)); err != nil {
		return nil, err
	}
	if err := addBytes(SummaryPath, MediaHTML, summary); err != nil {
		return nil, err
	}
	if len(bundle) > 0 {
		if err := check(m.scanBytes(BundlePath, bundle)); err != nil {
			return nil, err
		}
		if err := addBytes(BundlePath, MediaFHIR, bundle); err != nil {
			return nil, err
		}
	}
	// Let the first bytes go out before the images.
	if err := pipe.Flush(); err != nil {
		return nil, err
	}

	dir, err := dicom.NewDirectory(dicom.DirectoryOptions{FileSetID: b.opts.FileSetID})
	if err != nil {
		return nil, err
	}
	var totals dicomTotals
	instances := 0
	for fut := range ready {
		var p *prepared
		select {
		case p = <-fut:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		instances++
		if p.withheld != nil {
			man.Withheld = append(man.Withheld, *p.withheld)
			continue
		}
		id, err := dir.Add(p.scan.meta, p.scan.header)
		if errors.Is(err, dicom.ErrDuplicateInstance) || errors.Is(err, dicom.ErrNotPlaceable) {
			r := p.report
			man.Withheld = append(man.Withheld, Withheld{Kind: "dicom-instance", Reason: strings.TrimPrefix(err.Error(), "dicom: "),
				StudyInstanceUID: r.StudyInstanceUID, SeriesInstanceUID: r.SeriesInstanceUID, SOPInstanceUID: r.SOPInstanceUID, Modality: r.Modality})
			p.sp.Close()
			continue
		}
		if err != nil {
			p.sp.Close()
			return nil, err
		}
		path := strings.Join(id, "/")
		for i := range p.scan.hits {
			p.scan.hits[i].Path = path
		}
		if err := check(p.scan.hits); err != nil {
			p.sp.Close()
			return nil, err
		}
		err = add(path, MediaDICOM, p.sp.content(), p.sp.size, p.sum)
		p.sp.Close()
		if err != nil {
			return nil, err
		}
		totals.add(p.report)
		if man.Case.Patient == "" {
			man.Case.Patient = p.report.Pseudonym
		}
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if dir.Len() > 0 {
		var dd bytes.Buffer
		if _, err := dir.WriteTo(&dd); err != nil {
			return nil, err
		}
		if err := check(m.scanBytes(DICOMDIRPath, dd.Bytes())); err != nil {
			return nil, err
		}
		if err := addBytes(DICOMDIRPath, MediaDICOM, dd.Bytes()); err != nil {
			return nil, err
		}
		rc.DICOM = totals.receipt()
		man.Deidentification.DICOM = profileOf(rc.DICOM.Profile)
	} else if instances > 0 && b.dicomD != nil {
		man.Deidentification.DICOM = profileOf(b.dicomP.String())
	}

	// Identifiers learned from DICOM originals after the summary and the
	// bundle were written: scan those again (the hit is reported; with
	// FailOnResidual the packet gets no manifest).
	final := m
	if fm := b.finalMatcher(); fm.values > m.values {
		final = fm
		for _, f := range []struct {
			path string
			data []byte
		}{{SummaryPath, summary}, {BundlePath, bundle}} {
			if len(f.data) == 0 {
				continue
			}
			files--
			if err := check(final.scanBytes(f.path, f.data)); err != nil {
				return nil, err
			}
		}
		hits = dedupeHits(hits)
	}

	rc.Withheld = man.Withheld
	if rc.Withheld == nil {
		rc.Withheld = []Withheld{}
		man.Withheld = rc.Withheld
	}
	rc.ResidualScan = ScanReport{Files: files, Values: final.values, TooShort: final.skipped, PixelData: b.opts.ScanPixelData, Clean: len(hits) == 0, Hits: slices.Clone(hits)}
	if rc.ResidualScan.Hits == nil {
		rc.ResidualScan.Hits = []Hit{}
	}
	switch {
	case final.values == 0:
		man.Deidentification.ResidualScan = ScanNone
	case len(hits) == 0:
		man.Deidentification.ResidualScan = ScanClean
	default:
		man.Deidentification.ResidualScan = ScanHits
	}
	receipt, err := marshal(rc)
	if err != nil {
		return nil, err
	}
	if err := check(final.scanBytes(ReceiptPath, receipt)); err != nil {
		return nil, err
	}
	if err := addBytes(ReceiptPath, MediaJSON, receipt); err != nil {
		return nil, err
	}

	manifest, err := marshal(man)
	if err != nil {
		return nil, err
	}
	if err := check(final.scanBytes(ManifestPath, manifest)); err != nil {
		return nil, err
	}
	sig := sign(b.opts.SigningKey, manifest, b.id, b.c.Case.ID)
	if err := addBytes(ManifestPath, MediaJSON, manifest); err != nil {
		return nil, err
	}
	if err := tw.WriteHeader(&tar.Header{Name: SignaturePath, Size: int64(len(sig)), Mode: 0o644, ModTime: b.created, Typeflag: tar.TypeReg}); err != nil {
		return nil, err
	}
	if _, err := tw.Write(sig); err != nil {
		return nil, err
	}
	// The manifest does not list itself; drop the entry add made.
	man.Files = man.Files[:len(man.Files)-1]
	if err := tw.Close(); err != nil {
		return nil, err
	}
	if err := pipe.Close(); err != nil {
		return nil, err
	}
	return &Result{Manifest: man, Receipt: rc, Hits: hits}, nil
}

// sign signs the manifest with a prehashed minisign signature (the format
// minisign 0.10 and later write and -H requires), with the packet and case
// in the trusted comment, which minisign -V prints.
func sign(key minisign.PrivateKey, manifest []byte, packetID, caseID string) []byte {
	r := minisign.NewReader(bytes.NewReader(manifest))
	_, _ = io.Copy(io.Discard, r)
	trusted := fmt.Sprintf("consilium packet %s case %s", packetID, strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f {
			return -1
		}
		return r
	}, caseID))
	return r.SignWithComments(key, trusted, "signature from consilium gateway key "+KeyID(key.ID()))
}

func marshal(v any) ([]byte, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	enc.SetIndent("", "  ")
	if err := enc.Encode(v); err != nil {
		return nil, fmt.Errorf("packet: encoding: %w", err)
	}
	return buf.Bytes(), nil
}

func hexSum(h hash.Hash) string { return hex.EncodeToString(h.Sum(nil)) }

// profileOf splits a profile's CLI form ("basic,retain-uids").
func profileOf(s string) *Profile {
	if s == "" {
		return nil
	}
	parts := strings.Split(s, ",")
	return &Profile{Name: parts[0], Options: parts[1:]}
}

// dedupeHits merges hits of the same file, kind and place.
func dedupeHits(hits []Hit) []Hit {
	type key struct{ path, kind, where string }
	idx := map[key]int{}
	var out []Hit
	for _, h := range hits {
		k := key{h.Path, h.Kind, h.Where}
		if i, ok := idx[k]; ok {
			out[i].Count = max(out[i].Count, h.Count)
			continue
		}
		idx[k] = len(out)
		out = append(out, h)
	}
	return out
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
