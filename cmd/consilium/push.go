package main

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math/big"
	"mime/multipart"
	"net/http"
	"net/textproto"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// push sends a hospital's files to the gateway: DICOM instances by
// STOW-RS in batches, FHIR JSON (resources and Bundles) and NDJSON to
// /fhir. It walks folders, sends with bounded concurrency, retries on
// network errors and 5xx answers with exponential backoff, shows progress
// on stderr, and ends with a summary that lists every failed file and
// why. Re-running it is safe: instances already stored come back as
// unchanged.

func pushCommand() command {
	return command{summary: "send DICOM files (STOW-RS) and FHIR JSON/NDJSON from folders to the gateway", run: runPush}
}

// pushOptions tune a push.
type pushOptions struct {
	batchFiles  int
	batchBytes  int64
	concurrency int
	retries     int
	replace     bool
	backoff     time.Duration // first retry delay; doubles each time
}

func runPush(ctx context.Context, env *cli, args []string) error {
	fs := newFlagSet(env, "push", "push [flags] PATH...\n\n"+
		"Sends every DICOM file (by STOW-RS, in batches) and every FHIR .json\n"+
		"(resource or Bundle) and .ndjson file under the PATHs to the gateway.\n"+
		"Instances already stored are reported as unchanged, so a push can be\n"+
		"run again after a failure. Exits 1 if any file failed.")
	cf := addClientFlags(fs)
	opts := pushOptions{backoff: 500 * time.Millisecond}
	fs.IntVar(&opts.batchFiles, "batch", 16, "DICOM files per STOW-RS request")
	batchMB := fs.Int("batch-mb", 64, "MiB of DICOM per STOW-RS request (a larger file goes alone)")
	fs.IntVar(&opts.concurrency, "concurrency", 4, "requests in flight")
	fs.IntVar(&opts.retries, "retries", 5, "retries of a request after a network error or a 5xx answer")
	fs.BoolVar(&opts.replace, "replace", false, "replace instances stored before under the same SOP Instance UID with different bytes")
	paths, err := parseInterspersed(fs, args)
	if err != nil {
		return err
	}
	if len(paths) == 0 {
		return usagef("no PATH to push")
	}
	if opts.batchFiles < 1 || *batchMB < 1 || opts.concurrency < 1 || opts.retries < 0 {
		return usagef("--batch, --batch-mb and --concurrency must be positive, --retries not negative")
	}
	opts.batchBytes = int64(*batchMB) << 20
	c, err := cf.client(env)
	if err != nil {
		return err
	}
	files, skipped, err := collectFiles(paths)
	if err != nil {
		return err
	}
	p := &pusher{c: c, opts: opts, progress: newProgress(env.stderr)}
	results := p.push(ctx, files)
	return report(env, results, skipped, ctx.Err())
}

// fileKind is what a file is sent as.
type fileKind int

const (
	kindDICOM fileKind = iota
	kindFHIRJSON
	kindFHIRNDJSON
)

type pushFile struct {
	path string
	size int64
	kind fileKind
}

// collectFiles walks the paths and sorts out what to send: DICOM files
// (by the "DICM" prefix at byte 128, or a .dcm/.dicom/.dic name), FHIR
// .json and .ndjson files. Everything else, and DICOMDIR files (indexes of
// the instances next to them, not instances), is skipped.
func collectFiles(paths []string) (files []pushFile, skipped []string, err error) {
	seen := map[string]bool{}
	for _, root := range paths {
		err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			if d.IsDir() {
				if p != root && strings.HasPrefix(d.Name(), ".") {
					return filepath.SkipDir
				}
				return nil
			}
			if seen[p] {
				return nil
			}
			seen[p] = true
			info, err := os.Stat(p) // follows a symbolic link to a file
			if err != nil {
				return err
			}
			if !info.Mode().IsRegular() || strings.HasPrefix(d.Name(), ".") {
				return nil
			}
			kind, ok, err := classify(p)
			if err != nil {
				return err
			}
			if !ok {
				skipped = append(skipped, p)
				return nil
			}
			files = append(files, pushFile{path: p, size: info.Size(), kind: kind})
			return nil
		})
		if err != nil {
			return nil, nil, err
		}
	}
	return files, skipped, nil
}

func classify(p string) (fileKind, bool, error) {
	name := strings.ToLower(filepath.Base(p))
	ext := filepath.Ext(name)
	switch {
	case name == "dicomdir":
		return 0, false, nil
	case ext == ".ndjson":
		return kindFHIRNDJSON, true, nil
	case ext == ".json":
		return kindFHIRJSON, true, nil
	case ext == ".dcm" || ext == ".dicom" || ext == ".dic":
		return kindDICOM, true, nil
	}
	f, err := os.Open(p)
	if err != nil {
		return 0, false, err
	}
	defer f.Close()
	var b [132]byte
	if n, _ := io.ReadFull(f, b[:]); n == 132 && string(b[128:]) == "DICM" {
		return kindDICOM, true, nil
	}
	return 0, false, nil
}

// outcome is what happened to one file.
type outcome int

const (
	outStored outcome = iota
	outUnchanged
	outReplaced
	outSent // FHIR: accepted by the gateway
	outFailed
)

type fileResult struct {
	file    pushFile
	outcome outcome
	reason  string
}

// pusher sends files.
type pusher struct {
	c        *apiClient
	opts     pushOptions
	progress *progress
	mu       sync.Mutex
	results  []fileResult
}

// job is one request's worth of files.
type job struct {
	files []pushFile
	bytes int64
}

func (p *pusher) push(ctx context.Context, files []pushFile) []fileResult {
	var total int64
	for _, f := range files {
		total += f.size
	}
	p.progress.start(len(files), total)
	defer p.progress.finish()
	jobs := make(chan job)
	var wg sync.WaitGroup
	for range p.opts.concurrency {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range jobs {
				p.run(ctx, j)
			}
		}()
	}
	for _, j := range p.plan(files) {
		select {
		case jobs <- j:
		case <-ctx.Done():
		}
		if ctx.Err() != nil {
			break
		}
	}
	close(jobs)
	wg.Wait()
	sort.Slice(p.results, func(i, j int) bool { return p.results[i].file.path < p.results[j].file.path })
	return p.results
}

// plan groups DICOM files into STOW-RS batches; each FHIR file is a job.
func (p *pusher) plan(files []pushFile) []job {
	var jobs []job
	var cur job
	for _, f := range files {
		if f.kind != kindDICOM {
			jobs = append(jobs, job{files: []pushFile{f}, bytes: f.size})
			continue
		}
		if len(cur.files) > 0 && (len(cur.files) >= p.opts.batchFiles || cur.bytes+f.size > p.opts.batchBytes) {
			jobs = append(jobs, cur)
			cur = job{}
		}
		cur.files = append(cur.files, f)
		cur.bytes += f.size
	}
	if len(cur.files) > 0 {
		jobs = append(jobs, cur)
	}
	return jobs
}

func (p *pusher) record(f pushFile, o outcome, reason string) {
	p.mu.Lock()
	p.results = append(p.results, fileResult{file: f, outcome: o, reason: reason})
	p.mu.Unlock()
	p.progress.fileDone(o == outFailed)
}

// run sends one job, retrying what may succeed on another try.
func (p *pusher) run(ctx context.Context, j job) {
	pending := j.files
	for attempt := 0; ; attempt++ {
		var retry []pushFile
		var lastErr string
		if pending[0].kind == kindDICOM {
			retry, lastErr = p.stow(ctx, pending)
		} else {
			retry, lastErr = p.fhir(ctx, pending[0])
		}
		if len(retry) == 0 {
			return
		}
		if attempt >= p.opts.retries || ctx.Err() != nil {
			if ctx.Err() != nil {
				lastErr = "interrupted: " + lastErr
			}
			for _, f := range retry {
				p.record(f, outFailed, lastErr)
			}
			return
		}
		p.progress.note(fmt.Sprintf("retrying %d file(s) after: %s", len(retry), lastErr))
		if !sleepCtx(ctx, p.retryDelay(attempt)) {
			for _, f := range retry {
				p.record(f, outFailed, "interrupted: "+lastErr)
			}
			return
		}
		pending = retry
	}
}

// retryDelay is the backoff before retry attempt+1: the base doubled per
// attempt, with jitter, at most a minute.
func (p *pusher) retryDelay(attempt int) time.Duration {
	d := p.opts.backoff << min(attempt, 7)
	d = min(d, time.Minute)
	n, _ := rand.Int(rand.Reader, big.NewInt(int64(d)/2+1))
	return d/2 + time.Duration(n.Int64())
}

func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// transient reports an answer worth retrying.
func transient(status int) bool {
	return status >= 500 || status == http.StatusTooManyRequests || status == http.StatusRequestTimeout
}

// stow sends DICOM files in one STOW-RS request. It records the files
// that are done and returns those to retry, with the reason.
func (p *pusher) stow(ctx context.Context, files []pushFile) ([]pushFile, string) {
	pr, pw := io.Pipe()
	mw := multipart.NewWriter(pw)
	var sent atomic.Int64
	go func() {
		for _, f := range files {
			h := textproto.MIMEHeader{}
			h.Set("Content-Type", "application/dicom")
			w, err := mw.CreatePart(h)
			if err != nil {
				pw.CloseWithError(err)
				return
			}
			fh, err := os.Open(f.path)
			if err != nil {
				pw.CloseWithError(err)
				return
			}
			_, err = io.Copy(w, &countingReader{r: fh, n: &sent, progress: p.progress})
			fh.Close()
			if err != nil {
				pw.CloseWithError(err)
				return
			}
		}
		pw.CloseWithError(mw.Close())
	}()
	path := "/dicomweb/studies"
	if p.opts.replace {
		path += "?replace=true"
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, p.c.base+path, pr)
	if err != nil {
		return files, err.Error()
	}
	req.Header.Set("Content-Type", `multipart/related; type="application/dicom"; boundary=`+mw.Boundary())
	req.Header.Set("Accept", "application/dicom+json")
	resp, err := p.c.http.Do(req)
	pr.CloseWithError(errors.New("request ended"))
	if err != nil {
		p.progress.unsend(sent.Load())
		var pe *os.PathError
		if errors.As(err, &pe) {
			// A file could not be read: not the network's fault.
			for _, f := range files {
				p.record(f, outFailed, pe.Error())
			}
			return nil, ""
		}
		return files, "network: " + err.Error()
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		p.progress.unsend(sent.Load())
		return files, "reading the answer: " + err.Error()
	}
	var ds map[string]json.RawMessage
	jsonErr := json.Unmarshal(body, &ds)
	switch {
	case transient(resp.StatusCode):
		p.progress.unsend(sent.Load())
		return files, fmt.Sprintf("gateway answered %d: %s", resp.StatusCode, errorText(ds, body))
	case resp.StatusCode != http.StatusOK && resp.StatusCode != http.StatusAccepted && resp.StatusCode != http.StatusConflict,
		jsonErr != nil:
		msg := fmt.Sprintf("gateway answered %d: %s", resp.StatusCode, errorText(ds, body))
		for _, f := range files {
			p.record(f, outFailed, msg)
		}
		return nil, ""
	}
	items := map[int]stowItem{}
	for _, key := range []string{"00081199", "00081198"} {
		for _, it := range stowItems(ds[key]) {
			items[it.part] = it
		}
	}
	var retry []pushFile
	lastErr := ""
	for i, f := range files {
		it, ok := items[i+1]
		switch {
		case !ok && resp.StatusCode == http.StatusOK:
			p.record(f, outStored, "")
		case !ok:
			p.record(f, outFailed, "the gateway's answer does not mention this file")
		case it.failure == 0x0110:
			// Processing failure: the store hiccuped; sending again is
			// safe and usually works.
			retry = append(retry, f)
			lastErr = "processing failure (0110): " + it.text
			p.progress.unsend(f.size)
		case it.failure != 0:
			p.record(f, outFailed, fmt.Sprintf("%04X %s", it.failure, it.text))
		case it.outcome == "UNCHANGED":
			p.record(f, outUnchanged, "")
		case it.outcome == "REPLACED":
			p.record(f, outReplaced, "")
		default:
			p.record(f, outStored, "")
		}
	}
	return retry, lastErr
}

type stowItem struct {
	part    int
	outcome string
	failure int
	text    string
}

// stowItems reads the items of a Referenced or Failed SOP Sequence with
// the gateway's private outcome, reason text and part number.
func stowItems(raw json.RawMessage) []stowItem {
	var sq struct{ Value []map[string]json.RawMessage }
	if json.Unmarshal(raw, &sq) != nil {
		return nil
	}
	var out []stowItem
	for _, it := range sq.Value {
		si := stowItem{outcome: firstValue(it["00091001"]), text: firstValue(it["00091002"])}
		si.part, _ = strconv.Atoi(firstValue(it["00091003"]))
		si.failure, _ = strconv.Atoi(firstValue(it["00081197"]))
		out = append(out, si)
	}
	return out
}

func firstValue(raw json.RawMessage) string {
	var a struct{ Value []any }
	if json.Unmarshal(raw, &a) != nil || len(a.Value) == 0 {
		return ""
	}
	switch v := a.Value[0].(type) {
	case float64:
		return strconv.FormatFloat(v, 'f', -1, 64)
	default:
		return fmt.Sprint(v)
	}
}

// errorText is the message of an error answer: DICOM JSON Error Comment,
// Consilium's {"error": ...}, a FHIR OperationOutcome, or the text.
func errorText(ds map[string]json.RawMessage, body []byte) string {
	if s := firstValue(ds["00000902"]); s != "" {
		return s
	}
	var e struct {
		Error string `json:"error"`
		Issue []struct {
			Diagnostics string `json:"diagnostics"`
			Details     struct {
				Text string `json:"text"`
			} `json:"details"`
		} `json:"issue"`
	}
	if json.Unmarshal(body, &e) == nil {
		if e.Error != "" {
			return e.Error
		}
		var msgs []string
		for _, is := range e.Issue {
			if m := is.Diagnostics + is.Details.Text; m != "" {
				msgs = append(msgs, m)
			}
		}
		if len(msgs) > 0 {
			return strings.Join(msgs, "; ")
		}
	}
	s := strings.TrimSpace(string(body))
	if len(s) > 300 {
		s = s[:300] + "..."
	}
	return s
}

// fhir sends one FHIR file: a Bundle to POST /fhir, another resource to
// POST /fhir/{type}, NDJSON to POST /fhir as application/fhir+ndjson.
func (p *pusher) fhir(ctx context.Context, f pushFile) ([]pushFile, string) {
	path, ct := "/fhir", "application/fhir+ndjson"
	if f.kind == kindFHIRJSON {
		rt, err := resourceType(f.path)
		if err != nil {
			p.record(f, outFailed, err.Error())
			return nil, ""
		}
		ct = "application/fhir+json"
		if rt != "Bundle" {
			path = "/fhir/" + rt
		}
	}
	fh, err := os.Open(f.path)
	if err != nil {
		p.record(f, outFailed, err.Error())
		return nil, ""
	}
	defer fh.Close()
	var sent atomic.Int64
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, p.c.base+path, &countingReader{r: fh, n: &sent, progress: p.progress})
	if err != nil {
		p.record(f, outFailed, err.Error())
		return nil, ""
	}
	req.ContentLength = f.size
	req.Header.Set("Content-Type", ct)
	req.Header.Set("Accept", "application/fhir+json")
	resp, err := p.c.http.Do(req)
	if err != nil {
		p.progress.unsend(sent.Load())
		return []pushFile{f}, "network: " + err.Error()
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
	switch {
	case resp.StatusCode >= 200 && resp.StatusCode < 300:
		p.record(f, outSent, "")
		return nil, ""
	case transient(resp.StatusCode):
		p.progress.unsend(sent.Load())
		return []pushFile{f}, fmt.Sprintf("gateway answered %d: %s", resp.StatusCode, errorText(nil, body))
	default:
		p.record(f, outFailed, fmt.Sprintf("gateway answered %d: %s", resp.StatusCode, errorText(nil, body)))
		return nil, ""
	}
}

// resourceType reads the top-level resourceType of a FHIR JSON file
// without holding the file in memory.
func resourceType(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	dec := json.NewDecoder(bufio.NewReader(f))
	if t, err := dec.Token(); err != nil || t != json.Delim('{') {
		return "", errors.New("not a FHIR JSON resource (no JSON object)")
	}
	for dec.More() {
		k, err := dec.Token()
		if err != nil {
			return "", fmt.Errorf("not valid JSON: %w", err)
		}
		if k == "resourceType" {
			var rt string
			if err := dec.Decode(&rt); err != nil || rt == "" || strings.ContainsAny(rt, "/?#") {
				return "", errors.New("resourceType is not a resource type name")
			}
			return rt, nil
		}
		var skip json.RawMessage
		if err := dec.Decode(&skip); err != nil {
			return "", fmt.Errorf("not valid JSON: %w", err)
		}
	}
	return "", errors.New("not a FHIR resource (no resourceType)")
}

// countingReader counts bytes read into n and the progress.
type countingReader struct {
	r        io.Reader
	n        *atomic.Int64
	progress *progress
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n.Add(int64(n))
	c.progress.sent(int64(n))
	return n, err
}

// report prints the summary and returns an error when anything failed.
func report(env *cli, results []fileResult, skipped []string, interrupted error) error {
	counts := map[outcome]int{}
	var bytes int64
	var failed []fileResult
	for _, r := range results {
		counts[r.outcome]++
		if r.outcome == outFailed {
			failed = append(failed, r)
		} else {
			bytes += r.file.size
		}
	}
	w := env.stdout
	fmt.Fprintf(w, "pushed %d file(s), %s: %d stored, %d already stored (unchanged), %d replaced, %d FHIR sent, %d failed",
		len(results)-counts[outFailed], humanBytes(bytes), counts[outStored], counts[outUnchanged], counts[outReplaced], counts[outSent], counts[outFailed])
	if len(skipped) > 0 {
		fmt.Fprintf(w, "; %d skipped (neither DICOM nor FHIR)", len(skipped))
	}
	fmt.Fprintln(w)
	if len(failed) > 0 {
		fmt.Fprintln(w, "failed:")
		for _, r := range failed {
			fmt.Fprintf(w, "  %s: %s\n", r.file.path, r.reason)
		}
	}
	switch {
	case interrupted != nil:
		return fmt.Errorf("interrupted; run the same push again to finish (stored files are skipped)")
	case len(failed) > 0:
		return fmt.Errorf("%d file(s) failed", len(failed))
	}
	return nil
}

func humanBytes(n int64) string {
	switch {
	case n >= 1<<30:
		return fmt.Sprintf("%.2f GiB", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%d B", n)
}

// progress shows files and bytes done on stderr: a bar redrawn in place
// on a terminal, a line every few seconds otherwise.
type progress struct {
	w                   io.Writer
	tty                 bool
	files, failed, done atomic.Int64
	bytes, total        atomic.Int64
	nfiles              int
	stop                chan struct{}
	stopped             chan struct{}
	mu                  sync.Mutex
}

func newProgress(w io.Writer) *progress {
	p := &progress{w: w}
	if f, ok := w.(*os.File); ok {
		if st, err := f.Stat(); err == nil && st.Mode()&os.ModeCharDevice != 0 {
			p.tty = true
		}
	}
	return p
}

func (p *progress) start(files int, total int64) {
	p.nfiles = files
	p.total.Store(total)
	p.stop, p.stopped = make(chan struct{}), make(chan struct{})
	every := 5 * time.Second
	if p.tty {
		every = 200 * time.Millisecond
	}
	go func() {
		defer close(p.stopped)
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			select {
			case <-p.stop:
				p.draw(true)
				return
			case <-t.C:
				p.draw(false)
			}
		}
	}()
}

func (p *progress) finish() {
	close(p.stop)
	<-p.stopped
}

func (p *progress) sent(n int64)   { p.bytes.Add(n) }
func (p *progress) unsend(n int64) { p.bytes.Add(-n) }

func (p *progress) fileDone(failed bool) {
	p.done.Add(1)
	if failed {
		p.failed.Add(1)
	}
}

// note prints a message above the bar.
func (p *progress) note(msg string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.tty {
		fmt.Fprintf(p.w, "\r\033[K")
	}
	fmt.Fprintf(p.w, "push: %s\n", msg)
}

func (p *progress) draw(final bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	done, failed := p.done.Load(), p.failed.Load()
	b, total := max(p.bytes.Load(), 0), p.total.Load()
	line := fmt.Sprintf("%d/%d files, %s/%s", done, p.nfiles, humanBytes(b), humanBytes(total))
	if failed > 0 {
		line += fmt.Sprintf(", %d failed", failed)
	}
	if !p.tty {
		fmt.Fprintf(p.w, "push: %s\n", line)
		return
	}
	const width = 30
	frac := 1.0
	if total > 0 {
		frac = min(float64(b)/float64(total), 1)
	}
	fill := int(frac * width)
	bar := strings.Repeat("=", fill) + strings.Repeat(" ", width-fill)
	fmt.Fprintf(p.w, "\r\033[K[%s] %3.0f%% %s", bar, frac*100, line)
	if final {
		fmt.Fprintln(p.w)
	}
}
