package gateway

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"filippo.io/age"

	"github.com/consilium/consilium/cases"
	"github.com/consilium/consilium/certs"
	"github.com/consilium/consilium/deid"
	"github.com/consilium/consilium/fhir"
	"github.com/consilium/consilium/imaging"
	"github.com/consilium/consilium/packet"
	"github.com/consilium/consilium/policy"
)

// # Packets
//
// GET /cases/{id}/packet serves the packet of the caller's release. The
// policy is asked on every request (consent, assignment, deadline, case
// status), so a revocation refuses the cached copy too.
//
// The first request builds the packet: its bytes go to the caller as they
// are made (the age header leaves at once) and, in the same pass, into
// the store. The build goes on if the caller leaves, so that the stored
// copy is complete and the next request resumes it. Each build has a tag,
// sent as ETag from the first byte; a resumed download (Range with
// If-Range: that tag) gets the rest of the very bytes it started with.

// cleanGraphics is PS3.15's Clean Graphics Option.
const cleanGraphics = "clean-graphics"

// packetBuildTimeout bounds building one packet.
const packetBuildTimeout = 30 * time.Minute

// getPacket is GET /cases/{id}/packet.
func (s *Server) getPacket(w http.ResponseWriter, r *http.Request) error {
	setAuditAction(r, "packet.read")
	c, p, err := s.loadCase(r, r.PathValue("id"))
	if err != nil {
		return err
	}
	if p.Role == certs.RoleSpecialist && c.IsAssigned(p.ID) && (c.Status == cases.Draft || c.Status == cases.Assigned) {
		return errorf(http.StatusConflict, "the case has not been released yet")
	}
	in := s.caseInput(policy.ActionPacketRead, c, "packet")
	in.Recipient = policy.Recipient{ID: p.ID, Org: p.Org, Country: p.Country}
	if in, err = s.withConsents(r, in, c); err != nil {
		return err
	}
	if _, err := s.authorize(r, in); err != nil {
		return err
	}
	rel, ok := c.Releases[p.ID]
	if !ok {
		return errorf(http.StatusConflict, "the case has not been released to you yet: the case manager releases it again after an assignment")
	}
	sp, err := s.directory.Get(r.Context(), p.ID)
	if err != nil {
		return fmt.Errorf("directory entry of the caller: %w", err)
	}
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Header().Set("Content-Disposition", `attachment; filename="`+c.ID+`.packet"`)
	w.Header().Set("Cache-Control", "no-store")
	info, err := s.cases.StatPacket(r.Context(), c.ID, p.ID, rel.Seq)
	switch {
	case err == nil:
		return s.servePacket(w, r, c, p.ID, rel.Seq, info)
	case !errors.Is(err, cases.ErrNotFound):
		return err
	}
	return s.buildPacket(w, r, c, rel, sp)
}

// servePacket serves a stored packet, with Range support.
func (s *Server) servePacket(w http.ResponseWriter, r *http.Request, c *cases.Case, specialist string, seq int, info cases.PacketInfo) error {
	etag := `"` + info.Tag + `"`
	w.Header().Set("ETag", etag)
	w.Header().Set("Accept-Ranges", "bytes")
	w.Header().Set("X-Consilium-Packet-Status", "stored")
	start, length, partial, err := packetRange(r, etag, info.Size)
	if err != nil {
		w.Header().Set("Content-Range", "bytes */"+strconv.FormatInt(info.Size, 10))
		return err
	}
	if err := s.auditCommit(r, map[bool]int{true: http.StatusPartialContent, false: http.StatusOK}[partial]); err != nil {
		return err
	}
	rc, err := s.cases.OpenPacket(r.Context(), c.ID, specialist, seq, start, length)
	if err != nil {
		return err
	}
	defer rc.Close()
	w.Header().Set("Content-Length", strconv.FormatInt(length, 10))
	status := http.StatusOK
	if partial {
		status = http.StatusPartialContent
		w.Header().Set("Content-Range", fmt.Sprintf("bytes %d-%d/%d", start, start+length-1, info.Size))
	}
	w.WriteHeader(status)
	if r.Method == http.MethodHead {
		return nil
	}
	if _, err := io.Copy(w, rc); err != nil && r.Context().Err() == nil {
		s.cutStream(r, err)
	}
	return nil
}

// packetRange reads a single-range Range header (with If-Range) against
// a packet of size bytes. Without one, or when If-Range names another
// build, the whole packet is served.
func packetRange(r *http.Request, etag string, size int64) (start, length int64, partial bool, err error) {
	h := r.Header.Get("Range")
	if h == "" {
		return 0, size, false, nil
	}
	if ir := r.Header.Get("If-Range"); ir != "" && ir != etag {
		return 0, size, false, nil
	}
	spec, ok := strings.CutPrefix(h, "bytes=")
	if !ok || strings.Contains(spec, ",") {
		return 0, size, false, nil // not a single byte range: ignore it (RFC 9110)
	}
	first, last, ok := strings.Cut(strings.TrimSpace(spec), "-")
	if !ok {
		return 0, size, false, nil
	}
	bad := errorf(http.StatusRequestedRangeNotSatisfiable, "the range is outside the packet (%d bytes)", size)
	switch {
	case first == "": // suffix: the last n bytes
		n, err := strconv.ParseInt(last, 10, 64)
		if err != nil || n <= 0 {
			return 0, 0, false, bad
		}
		n = min(n, size)
		return size - n, n, true, nil
	default:
		a, err := strconv.ParseInt(first, 10, 64)
		if err != nil || a < 0 || a >= size {
			return 0, 0, false, bad
		}
		b := size - 1
		if last != "" {
			if b, err = strconv.ParseInt(last, 10, 64); err != nil || b < a {
				return 0, 0, false, bad
			}
			b = min(b, size-1)
		}
		return a, b - a + 1, true, nil
	}
}

// buildPacket builds the packet of a release, streaming it to the caller
// and into the store in one pass.
func (s *Server) buildPacket(w http.ResponseWriter, r *http.Request, c *cases.Case, rel cases.Release, sp cases.Specialist) error {
	recipient, err := age.ParseX25519Recipient(sp.Recipient)
	if err != nil {
		return fmt.Errorf("the directory's recipient of %s: %w", sp.ID, err)
	}
	// The build outlives a caller that leaves, bounded on its own.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(r.Context()), packetBuildTimeout)
	defer cancel()
	contents, opts, err := s.packetContents(ctx, r, c, rel, sp)
	if err != nil {
		return err
	}
	opts.Recipients = []age.Recipient{recipient}
	tag := newBuildTag()
	if err := s.auditCommit(r, http.StatusOK); err != nil {
		return err
	}
	w.Header().Set("ETag", `"`+tag+`"`)
	w.Header().Set("X-Consilium-Packet-Status", "building")
	w.WriteHeader(http.StatusOK)

	pr, pw := io.Pipe()
	stored := make(chan error, 1)
	go func() {
		_, err := s.cases.PutPacket(ctx, c.ID, sp.ID, rel.Seq, tag, pr)
		pr.CloseWithError(err) // unblocks the builder if the store failed
		stored <- err
	}()
	out := &teeToClient{store: pw, client: w, rc: http.NewResponseController(w)}
	_, buildErr := packet.Build(ctx, out, contents, opts)
	if buildErr != nil {
		pw.CloseWithError(buildErr) // nothing is stored
	} else {
		pw.Close()
	}
	storeErr := <-stored
	switch {
	case buildErr != nil:
		s.log.Error("building a packet failed", "request_id", RequestID(r.Context()), "case", c.ID, "err", buildErr.Error())
		s.cutStream(r, buildErr)
	case storeErr != nil:
		// The caller may have the whole packet; the next request builds again.
		s.log.Error("storing a built packet failed", "request_id", RequestID(r.Context()), "case", c.ID, "err", storeErr.Error())
	}
	if out.err != nil {
		s.log.Info("the caller left during a packet build; the packet is stored for a resumed download",
			"request_id", RequestID(r.Context()), "case", c.ID)
	}
	return nil
}

// newBuildTag names one build of a packet (its ETag).
func newBuildTag() string {
	var b [12]byte
	_, _ = rand.Read(b[:])
	return "p-" + hex.EncodeToString(b[:])
}

// teeToClient writes a packet into the store (which must get every byte)
// and to the caller (who may leave: the build then goes on for the store).
type teeToClient struct {
	store  io.Writer
	client io.Writer
	rc     *http.ResponseController
	err    error // the caller's first write error
	n      int64
}

func (t *teeToClient) Write(p []byte) (int, error) {
	if n, err := t.store.Write(p); err != nil {
		return n, err
	}
	if t.err == nil {
		if _, err := t.client.Write(p); err != nil {
			t.err = err
		} else if t.n += int64(len(p)); t.n < 1<<20 {
			// Flush the first MiB as it comes: the specialist sees the
			// download start at once.
			_ = t.rc.Flush()
		}
	}
	return len(p), nil
}

// packetContents gathers the originals of a packet and the options that
// apply the release's obligations.
func (s *Server) packetContents(ctx context.Context, r *http.Request, c *cases.Case, rel cases.Release, sp cases.Specialist) (packet.Contents, packet.Options, error) {
	var opts packet.Options
	bundle, err := s.caseBundle(ctx, r, c)
	if err != nil {
		return packet.Contents{}, opts, err
	}
	src, fhirProfile, dicomProfile, err := s.deidFor(rel)
	if err != nil {
		return packet.Contents{}, opts, err
	}
	contents := packet.Contents{
		Case: packet.Case{
			ID: c.ID, Question: c.Question, Specialty: c.Specialty, Languages: c.Languages,
			Deadline: c.Deadline, Recipient: sp.ID,
		},
		Bundle: bundle,
	}
	if len(c.Studies) > 0 {
		contents.Instances = &studyInstances{s: s, org: c.Org, studies: c.Studies}
	}
	opts = packet.Options{
		SigningKey: s.signingKey,
		Deid: packet.Deidentification{
			Source: src, PatientKey: c.Org + "|" + c.Patient,
			DICOMProfile: dicomProfile, FHIRProfile: fhirProfile,
			ExcludeLabels: rel.ExcludeLabels, KeepBurnedIn: !rel.WithholdBurnedIn,
		},
		FailOnResidual: true,
	}
	return contents, opts, nil
}

// deidFor picks the pseudonym source and profiles a release's
// obligations ask for: keyed pseudonyms and shifted dates (GDPR
// pseudonymisation), or random surrogates and dates cut to the year
// (HIPAA Safe Harbor).
func (s *Server) deidFor(rel cases.Release) (deid.Source, deid.Profile, deid.Profile, error) {
	var src deid.Source
	fhirName, dicomOpts := rel.DeidProfile, []string{}
	switch rel.DeidProfile {
	case policy.ProfileShifted, "":
		src, fhirName = s.pseudonyms, deid.Shifted
		dicomOpts = append(dicomOpts, string(deid.RetainLongModifiedDates))
	case policy.ProfileSafeHarbor:
		src = s.surrogates
	default:
		return nil, deid.Profile{}, deid.Profile{}, fmt.Errorf("the policy asks for an unknown de-identification profile %q", rel.DeidProfile)
	}
	var fhirOpts []string
	for _, o := range rel.DeidOptions {
		switch o {
		case string(deid.KeepFreeText):
			fhirOpts = append(fhirOpts, o)
		case cleanGraphics:
			// The Basic Profile removes overlays (X) and replaces graphic
			// annotations (D): stricter than cleaning them, so satisfied.
		default:
			dicomOpts = append(dicomOpts, o)
		}
	}
	fp, err := deid.ParseFHIRProfile(strings.Join(append([]string{fhirName}, fhirOpts...), ","))
	if err != nil {
		return nil, fp, fp, fmt.Errorf("the policy's FHIR de-identification obligations: %w", err)
	}
	dicomOpts = dedupe(dicomOpts)
	if slices.Contains(dicomOpts, string(deid.RetainLongFullDates)) {
		dicomOpts = slices.DeleteFunc(dicomOpts, func(o string) bool { return o == string(deid.RetainLongModifiedDates) })
	}
	dp, err := deid.ParseDICOMProfile(strings.Join(append([]string{deid.Basic}, dicomOpts...), ","))
	if err != nil {
		return nil, fp, dp, fmt.Errorf("the policy's DICOM de-identification obligations: %w", err)
	}
	return src, fp, dp, nil
}

// caseBundle builds a collection Bundle of the patient's record: the
// resource types the case shares (the Patient always), never Consents
// (they govern the sharing; they are not part of the record).
func (s *Server) caseBundle(ctx context.Context, r *http.Request, c *cases.Case) ([]byte, error) {
	vs, err := s.fhir.Everything(ctx, c.Org, c.Patient)
	if errors.Is(err, fhir.ErrNotFound) {
		return nil, errorf(http.StatusConflict, "the case's patient has no records any more")
	}
	if err != nil {
		return nil, err
	}
	keep := vs[:0]
	for _, v := range vs {
		if v.Deleted || v.Type == "Consent" {
			continue
		}
		if len(c.Resources) > 0 && v.Type != "Patient" && !slices.Contains(c.Resources, v.Type) {
			continue
		}
		keep = append(keep, v)
	}
	var b bytes.Buffer
	b.WriteString(`{"resourceType":"Bundle","type":"collection","entry":[`)
	base := fhirBase(r)
	i := 0
	for body, err := range s.fhir.Bodies(ctx, keep) {
		if err != nil {
			return nil, err
		}
		if i > 0 {
			b.WriteByte(',')
		}
		url, _ := json.Marshal(base + "/" + keep[i].Type + "/" + keep[i].ID)
		fmt.Fprintf(&b, `{"fullUrl":%s,"resource":`, url)
		b.Write(body)
		b.WriteByte('}')
		i++
	}
	b.WriteString(`]}`)
	return b.Bytes(), nil
}

// studyInstances yields the instances of a case's studies, opened one at
// a time from the archive.
type studyInstances struct {
	s       *Server
	org     string
	studies []string
	queue   []imaging.Instance
}

func (it *studyInstances) Next(ctx context.Context) (packet.Instance, error) {
	for len(it.queue) == 0 {
		if len(it.studies) == 0 {
			return packet.Instance{}, io.EOF
		}
		st, err := it.s.dicom.Study(ctx, it.org, it.studies[0])
		if err != nil {
			return packet.Instance{}, fmt.Errorf("a study of the case: %w", err)
		}
		it.studies = it.studies[1:]
		if it.queue, err = st.Instances("", ""); err != nil {
			return packet.Instance{}, fmt.Errorf("a study of the case: %w", err)
		}
	}
	in := it.queue[0]
	it.queue = it.queue[1:]
	rc, err := it.s.dicom.Open(ctx, in)
	if err != nil {
		return packet.Instance{}, fmt.Errorf("an instance of the case: %w", err)
	}
	return packet.Instance{Body: rc, Size: in.Size}, nil
}
