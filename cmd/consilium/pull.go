package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"aead.dev/minisign"
	"filippo.io/age"

	"github.com/consilium/consilium/internal/devenv"
	"github.com/consilium/consilium/packet"
)

// pull downloads a specialist's case packet and opens it: a download that
// resumes (Range + If-Range with the ETag that names the packet's build),
// retried on network errors and 5xx answers, then decrypted, checked
// (signature and every hash, package packet) and unpacked. The packet is
// written to DIR/<case>.packet.part while it arrives, with its ETag in
// DIR/<case>.packet.part.etag, so that a pull cut short (network, Ctrl-C)
// continues where it stopped when it is run again.

const pullUsage = `pull --case ID [--out DIR] [--identity F] [--gateway-key F] [connection flags]

Downloads the case packet released to you (GET /cases/ID/packet) to
DIR/ID.packet, then decrypts it with your age identity, verifies the
manifest's signature with the gateway's minisign public key and every
file's size and SHA-256, and unpacks it into DIR/ID/ (only once everything
verified).

The download shows its progress on stderr, retries network errors and 5xx
answers with backoff, and resumes: a pull that was cut short (DIR/ID.packet.part
is left) continues from where it stopped when run again, as long as the
gateway still serves the same packet.

--identity defaults to CONSILIUM_IDENTITY, --gateway-key to
CONSILIUM_GATEWAY_KEY (or CONSILIUM_GATEWAY_PUB); with --as X both come from
the embedded default's folder (--data): keys/X.agekey and keys/gateway.pub.`

// pullOptions tune a pull; tests shorten the waits.
type pullOptions struct {
	retries int           // retries of an attempt that made no progress
	backoff time.Duration // first retry delay; doubles each time
	stall   time.Duration // an attempt receiving nothing this long is cut and retried
	every   time.Duration // progress line interval when stderr is not a terminal
}

func defaultPullOptions() pullOptions {
	return pullOptions{retries: 5, backoff: 500 * time.Millisecond, stall: 2 * time.Minute, every: 5 * time.Second}
}

func pullCommand() command { return pullCommandWith(defaultPullOptions()) }

func pullCommandWith(o pullOptions) command {
	return command{
		summary: "download a case packet (resumable), verify it and unpack it",
		run:     func(ctx context.Context, env *cli, args []string) error { return runPull(ctx, env, args, o) },
	}
}

// pullFlags are pull's flags as given.
type pullFlags struct {
	caseID, identity, gatewayKey, out string
}

// resolve fills in the identity and the gateway key from the environment
// and the embedded default (--as), and checks the flags.
func (f *pullFlags) resolve(env *cli, as, data string) error {
	if f.caseID == "" {
		return usagef("--case is required")
	}
	if err := checkCaseID(f.caseID); err != nil {
		return err
	}
	var defIdentity, defKey string
	if as != "" {
		l := devenv.Layout{Dir: data}
		defIdentity, defKey = l.AgeIdentity(as), l.SigningPub()
	}
	f.identity = firstNonEmpty(f.identity, env.getenv("CONSILIUM_IDENTITY"), defIdentity)
	f.gatewayKey = firstNonEmpty(f.gatewayKey, env.getenv("CONSILIUM_GATEWAY_KEY"), env.getenv("CONSILIUM_GATEWAY_PUB"), defKey)
	switch {
	case f.identity == "":
		return usagef("--identity is required (or CONSILIUM_IDENTITY, or --as ID with the embedded default): your age identity decrypts the packet")
	case f.gatewayKey == "":
		return usagef("--gateway-key is required (or CONSILIUM_GATEWAY_KEY, or --as ID with the embedded default): the gateway's public key proves where the packet comes from")
	case f.out == "":
		return usagef("--out must name a directory")
	}
	return nil
}

func firstNonEmpty(v ...string) string {
	for _, s := range v {
		if s != "" {
			return s
		}
	}
	return ""
}

func runPull(ctx context.Context, env *cli, args []string, o pullOptions) error {
	fs := newFlagSet(env, "pull", pullUsage)
	var f pullFlags
	fs.StringVar(&f.caseID, "case", "", "the case whose packet to download")
	fs.StringVar(&f.out, "out", ".", "directory for ID.packet and the unpacked ID/")
	fs.StringVar(&f.identity, "identity", "", "your age identity file (CONSILIUM_IDENTITY)")
	fs.StringVar(&f.gatewayKey, "gateway-key", "", "the gateway's minisign public key file (CONSILIUM_GATEWAY_KEY)")
	fs.IntVar(&o.retries, "retries", o.retries, "retries after a network error or 5xx answer that brought no bytes")
	cf := addClientFlags(fs)
	if err := parseFlags(fs, args, false); err != nil {
		return err
	}
	if o.retries < 0 {
		return usagef("--retries must not be negative")
	}
	if err := f.resolve(env, *cf.as, *cf.data); err != nil {
		return err
	}
	// Keys first: a missing key should not cost a download.
	identity, err := loadIdentity(f.identity)
	if err != nil {
		return err
	}
	pub, err := minisign.PublicKeyFromFile(f.gatewayKey)
	if err != nil {
		return fmt.Errorf("gateway public key: %w", err)
	}
	dest := filepath.Join(f.out, f.caseID)
	if ents, err := os.ReadDir(dest); err == nil && len(ents) > 0 {
		return fmt.Errorf("%s already holds an unpacked packet: remove it, or pull with another --out", dest)
	}
	if err := os.MkdirAll(f.out, 0o700); err != nil {
		return err
	}
	c, err := cf.client(env)
	if err != nil {
		return err
	}
	final := filepath.Join(f.out, f.caseID+".packet")
	d := &download{
		c: c, path: "/cases/" + url.PathEscape(f.caseID) + "/packet",
		part: final + ".part", tagFile: final + ".part.etag",
		opts: o, bar: newByteBar(env.stderr, o.every),
	}
	if err := d.run(ctx); err != nil {
		return err
	}
	if err := os.Rename(d.part, final); err != nil {
		return err
	}
	os.Remove(d.tagFile)
	return openPulled(ctx, env, final, dest, f.caseID, f.identity, identity, pub)
}

// openPulled verifies and unpacks a downloaded packet.
func openPulled(ctx context.Context, env *cli, file, dest, caseID, identityFile string, identity age.Identity, pub minisign.PublicKey) error {
	pf, err := os.Open(file)
	if err != nil {
		return err
	}
	defer pf.Close()
	r, err := packet.Open(pf, identity, pub)
	if err != nil {
		var nm *age.NoIdentityMatchError
		if errors.As(err, &nm) {
			return fmt.Errorf("the packet is not encrypted to %s: is it your identity?", identityFile)
		}
		return fmt.Errorf("the packet %s cannot be opened: %w", file, err)
	}
	m, err := r.Unpack(ctx, dest)
	if err != nil {
		return fmt.Errorf("the packet %s does not verify, nothing was unpacked (the file is kept for inspection; pull again to download it anew): %w", file, err)
	}
	if m.Case.ID != caseID {
		// Signed by the gateway, but for another case: never use it as
		// this one's.
		os.RemoveAll(dest)
		return fmt.Errorf("the packet is signed for case %s, not %s: nothing was unpacked", m.Case.ID, caseID)
	}
	printManifest(env, m)
	abs, _ := filepath.Abs(dest)
	fmt.Fprintf(env.stdout, "unpacked to %s\n  read %s first; open %s in a DICOM viewer\n", abs,
		filepath.Join(abs, packet.SummaryPath), filepath.Join(abs, packet.DICOMDIRPath))
	if m.Case.Patient != "" {
		fmt.Fprintf(env.stdout, "  your opinion is a DiagnosticReport with subject Patient/%s: consilium opinion submit --case %s REPORT.json [--pdf F]\n",
			m.Case.Patient, m.Case.ID)
	}
	return nil
}

// download fetches one packet into a part file, resuming and retrying.
type download struct {
	c             *apiClient
	path          string // the packet's URL path
	part, tagFile string
	opts          pullOptions
	bar           *byteBar
}

// errRestart asks for a new attempt from the first byte.
var errRestart = errors.New("starting the download over")

// transientError is a failure worth another attempt.
type transientError struct{ err error }

func (e *transientError) Error() string { return e.err.Error() }
func (e *transientError) Unwrap() error { return e.err }

func (d *download) run(ctx context.Context) (err error) {
	f, err := os.OpenFile(d.part, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return err
	}
	defer func() {
		if cerr := f.Close(); err == nil {
			err = cerr
		}
	}()
	st, err := f.Stat()
	if err != nil {
		return err
	}
	have, tag := st.Size(), ""
	if b, err := os.ReadFile(d.tagFile); err == nil {
		tag = strings.TrimSpace(string(b))
	}
	if have > 0 && tag == "" {
		// Without the tag of the bytes we have, a resumed range could
		// splice two different builds: start over.
		have = 0
	}
	if err := f.Truncate(have); err != nil {
		return err
	}
	if have > 0 {
		d.bar.note(fmt.Sprintf("resuming the download at %s", humanBytes(have)))
	}
	d.bar.start(have)
	defer d.bar.finish()
	failures := 0
	for {
		before := d.bar.fetched.Load()
		err := d.attempt(ctx, f, &have, &tag)
		if err == nil {
			if err := f.Sync(); err != nil {
				return err
			}
			d.bar.done(have)
			return nil
		}
		if ctx.Err() != nil {
			if have > 0 {
				return fmt.Errorf("interrupted with %s of the packet in %s: run the same pull again to resume", humanBytes(have), d.part)
			}
			return ctx.Err()
		}
		var te *transientError
		if !errors.As(err, &te) && !errors.Is(err, errRestart) {
			return err
		}
		if d.bar.fetched.Load() > before {
			failures = 0
		} else if failures++; failures > d.opts.retries {
			if have > 0 {
				return fmt.Errorf("%w\n%s of the packet is in %s: run the same pull again to resume", err, humanBytes(have), d.part)
			}
			return err
		}
		if errors.Is(err, errRestart) {
			d.bar.note(err.Error())
			continue
		}
		wait := retryBackoff(d.opts.backoff, failures)
		d.bar.note(fmt.Sprintf("retrying in %s after: %v", wait.Round(10*time.Millisecond), err))
		if !sleepCtx(ctx, wait) {
			return fmt.Errorf("interrupted with %s of the packet in %s: run the same pull again to resume", humanBytes(have), d.part)
		}
	}
}

// retryBackoff is the wait before another attempt after failures attempts
// in a row that brought nothing: base doubled per failure, half of it
// random, at most a minute.
func retryBackoff(base time.Duration, failures int) time.Duration {
	d := min(base<<min(max(failures-1, 0), 7), time.Minute)
	return d/2 + rand.N(d/2+1)
}

// attempt makes one request and appends what it brings to f. It returns
// nil once f holds the whole packet, a *transientError or errRestart when
// another attempt may do better, and any other error when none will.
func (d *download) attempt(ctx context.Context, f *os.File, have *int64, tag *string) error {
	actx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	req, err := http.NewRequestWithContext(actx, http.MethodGet, d.c.base+d.path, nil)
	if err != nil {
		return err
	}
	// Bytes as stored: a transparently decompressed body could not be
	// resumed by offset.
	req.Header.Set("Accept-Encoding", "identity")
	if *have > 0 && *tag != "" {
		req.Header.Set("Range", fmt.Sprintf("bytes=%d-", *have))
		req.Header.Set("If-Range", *tag)
	}
	stall := time.AfterFunc(d.opts.stall, func() { cancel(errStalled) })
	defer stall.Stop()
	resp, err := d.c.bulk.Do(req)
	if err != nil {
		return &transientError{fmt.Errorf("calling the gateway: %w", attemptErr(actx, err))}
	}
	defer resp.Body.Close()
	total := int64(-1)
	switch resp.StatusCode {
	case http.StatusOK:
		if *have > 0 {
			d.bar.note("the gateway sent the whole packet (it was built anew, or does not resume): starting over")
		}
		*have = 0
		if err := f.Truncate(0); err != nil {
			return err
		}
		*tag = resumeTag(resp.Header)
		if err := d.saveTag(*tag); err != nil {
			return err
		}
		total = resp.ContentLength
	case http.StatusPartialContent:
		start, size, ok := parseContentRange(resp.Header.Get("Content-Range"))
		if et := resp.Header.Get("ETag"); !ok || start != *have || (et != "" && et != *tag) {
			return d.restart(f, have, tag, "the gateway answered the resume with another range or packet")
		}
		total = size
	case http.StatusRequestedRangeNotSatisfiable:
		if _, size, ok := parseContentRange(resp.Header.Get("Content-Range")); ok && size == *have {
			return nil // the part file already holds it all
		}
		return d.restart(f, have, tag, "the gateway cannot resume from where the download stopped")
	default:
		e := readAPIError(resp)
		if transient(resp.StatusCode) {
			return &transientError{e}
		}
		if resp.StatusCode == http.StatusForbidden || resp.StatusCode == http.StatusNotFound || resp.StatusCode == http.StatusGone {
			// Access has ended (or never was): keep nothing of the packet.
			os.Remove(d.part)
			os.Remove(d.tagFile)
		}
		return e
	}
	if _, err := f.Seek(*have, io.SeekStart); err != nil {
		return err
	}
	d.bar.setTotal(total)
	buf := make([]byte, 256<<10)
	for {
		n, rerr := resp.Body.Read(buf)
		if n > 0 {
			stall.Reset(d.opts.stall)
			if _, err := f.Write(buf[:n]); err != nil {
				return fmt.Errorf("writing %s: %w", d.part, err)
			}
			*have += int64(n)
			d.bar.add(int64(n))
		}
		if rerr == io.EOF && actx.Err() != nil {
			// A body cut by a cancellation may end in a plain EOF: never
			// take it for the end of a packet of unknown length.
			rerr = context.Cause(actx)
		}
		if rerr == io.EOF {
			break
		}
		if rerr != nil {
			return &transientError{fmt.Errorf("the download was cut at %s: %w", humanBytes(*have), attemptErr(actx, rerr))}
		}
	}
	if total >= 0 && *have != total {
		return &transientError{fmt.Errorf("the download ended at %s of %s", humanBytes(*have), humanBytes(total))}
	}
	return nil
}

var errStalled = errors.New("no data from the gateway for too long")

// attemptErr names a stall rather than the cancellation it caused.
func attemptErr(actx context.Context, err error) error {
	if cause := context.Cause(actx); errors.Is(cause, errStalled) {
		return cause
	}
	return err
}

// restart drops what the part file holds.
func (d *download) restart(f *os.File, have *int64, tag *string, why string) error {
	*have, *tag = 0, ""
	os.Remove(d.tagFile)
	if err := f.Truncate(0); err != nil {
		return err
	}
	d.bar.reset()
	return fmt.Errorf("%s: %w", why, errRestart)
}

func (d *download) saveTag(tag string) error {
	if tag == "" {
		os.Remove(d.tagFile)
		return nil
	}
	return os.WriteFile(d.tagFile, []byte(tag+"\n"), 0o600)
}

// resumeTag is the validator a later Range request may name in If-Range:
// a strong ETag, unless the server says it takes no ranges. The gateway
// sends its build's ETag from the first byte, before the packet is
// stored and offers ranges, so Accept-Ranges is not required.
func resumeTag(h http.Header) string {
	et := h.Get("ETag")
	if et == "" || strings.HasPrefix(et, "W/") || strings.EqualFold(strings.TrimSpace(h.Get("Accept-Ranges")), "none") {
		return ""
	}
	return et
}

// parseContentRange reads "bytes first-last/size" (size may be "*") or
// "bytes */size"; it returns first and size (-1 when unknown).
func parseContentRange(s string) (first, size int64, ok bool) {
	spec, found := strings.CutPrefix(strings.TrimSpace(s), "bytes ")
	if !found {
		return 0, 0, false
	}
	rng, sz, found := strings.Cut(spec, "/")
	if !found {
		return 0, 0, false
	}
	size = -1
	if sz != "*" {
		n, err := strconv.ParseInt(sz, 10, 64)
		if err != nil || n < 0 {
			return 0, 0, false
		}
		size = n
	}
	if rng == "*" {
		return 0, size, size >= 0
	}
	a, b, found := strings.Cut(rng, "-")
	if !found {
		return 0, 0, false
	}
	first, err1 := strconv.ParseInt(a, 10, 64)
	last, err2 := strconv.ParseInt(b, 10, 64)
	if err1 != nil || err2 != nil || first < 0 || last < first || (size >= 0 && last >= size) {
		return 0, 0, false
	}
	return first, size, true
}

// readAPIError reads an error answer of the gateway.
func readAPIError(resp *http.Response) *apiError {
	e := &apiError{Status: resp.StatusCode}
	data, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if json.Unmarshal(data, e) != nil || e.Message == "" {
		e.Message = strings.TrimSpace(string(data))
		if e.Message == "" {
			e.Message = http.StatusText(resp.StatusCode)
		}
	}
	return e
}

// byteBar shows a download's progress on stderr: a bar redrawn in place
// on a terminal, a line every few seconds otherwise.
type byteBar struct {
	w       io.Writer
	tty     bool
	every   time.Duration
	got     atomic.Int64 // bytes in the part file
	total   atomic.Int64 // -1: not known (the packet is being built)
	fetched atomic.Int64 // bytes received by this run
	began   time.Time
	stop    chan struct{}
	stopped chan struct{}
	mu      sync.Mutex
}

func newByteBar(w io.Writer, every time.Duration) *byteBar {
	b := &byteBar{w: w, tty: isTerminal(w), every: every}
	b.total.Store(-1)
	return b
}

func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}

func (b *byteBar) start(have int64) {
	b.got.Store(have)
	b.began = time.Now()
	b.stop, b.stopped = make(chan struct{}), make(chan struct{})
	every := b.every
	if b.tty {
		every = 200 * time.Millisecond
	}
	go func() {
		defer close(b.stopped)
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			select {
			case <-b.stop:
				return
			case <-t.C:
				b.draw()
			}
		}
	}()
}

func (b *byteBar) finish() {
	close(b.stop)
	<-b.stopped
	if b.tty {
		b.mu.Lock()
		fmt.Fprint(b.w, "\r\033[K")
		b.mu.Unlock()
	}
}

func (b *byteBar) setTotal(n int64) { b.total.Store(n) }
func (b *byteBar) add(n int64)      { b.got.Add(n); b.fetched.Add(n) }
func (b *byteBar) reset()           { b.got.Store(0); b.total.Store(-1) }

// done prints the closing line.
func (b *byteBar) done(size int64) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.tty {
		fmt.Fprint(b.w, "\r\033[K")
	}
	el := time.Since(b.began)
	fmt.Fprintf(b.w, "pull: downloaded %s (%s this run in %s, %s/s)\n", humanBytes(size),
		humanBytes(b.fetched.Load()), el.Round(10*time.Millisecond), humanBytes(rate(b.fetched.Load(), el)))
}

// note prints a message above the bar.
func (b *byteBar) note(msg string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.tty {
		fmt.Fprint(b.w, "\r\033[K")
	}
	fmt.Fprintf(b.w, "pull: %s\n", msg)
}

func rate(n int64, d time.Duration) int64 {
	if d <= 0 {
		return 0
	}
	return int64(float64(n) / d.Seconds())
}

func (b *byteBar) draw() {
	b.mu.Lock()
	defer b.mu.Unlock()
	got, total := b.got.Load(), b.total.Load()
	speed := humanBytes(rate(b.fetched.Load(), time.Since(b.began))) + "/s"
	var line string
	frac := -1.0
	if total > 0 {
		frac = min(float64(got)/float64(total), 1)
		line = fmt.Sprintf("%s/%s, %s", humanBytes(got), humanBytes(total), speed)
	} else {
		line = fmt.Sprintf("%s, %s (size not known yet: the gateway is building the packet)", humanBytes(got), speed)
	}
	if !b.tty {
		if frac >= 0 {
			line = fmt.Sprintf("%3.0f%% %s", frac*100, line)
		}
		fmt.Fprintf(b.w, "pull: %s\n", line)
		return
	}
	const width = 30
	bar := strings.Repeat(" ", width)
	pct := "   "
	if frac >= 0 {
		fill := int(frac * width)
		bar = strings.Repeat("=", fill) + strings.Repeat(" ", width-fill)
		pct = fmt.Sprintf("%3.0f", frac*100)
	}
	fmt.Fprintf(b.w, "\r\033[K[%s] %s%% %s", bar, pct, line)
}
