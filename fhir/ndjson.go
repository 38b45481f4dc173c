package fhir

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"

	"github.com/google/uuid"
)

// NDJSON loads are staged in parts of about this size.
const (
	ndjsonSegmentBytes = 8 << 20
	ndjsonBatchLines   = 64
	ndjsonBatchBytes   = 4 << 20
)

// lineResult is what a load remembers of one line (the resource itself is
// gone once staged).
type lineResult struct {
	line     int
	typ, id  string
	err      error
	warnings []Issue
}

// LoadNDJSON stores the resources of an NDJSON stream (one resource per
// line, as FHIR Bulk Data exports them) in org. Each line is an upsert: a
// resource with an id creates or updates that id, one without gets a new
// id. Lines are read and parsed as they arrive, each at most the Store's
// MaxLineBytes, never the whole body at once, and their resources staged
// in objects that nothing refers to yet. At the end of the stream every
// staged resource becomes visible in one commit. A line that is invalid, too long or
// refused by the authorizer is reported in its entry of the result (a
// batch-response, one entry per non-blank line, in order) and not stored.
// A failure to read the stream (the client went away) or to commit stores
// nothing: the staged objects are deleted.
//
// Conditional references ("Practitioner?identifier=…", as Synthea's bulk
// exports write them) are resolved against org's resources as they stood
// when the load began; one that does not match exactly one is kept as
// written, with a warning. A line with a urn: reference is refused: those
// only mean something inside a transaction Bundle.
func (s *Store) LoadNDJSON(ctx context.Context, org string, r io.Reader, opts WriteOptions) (*BundleResult, error) {
	if opts.Authorize == nil {
		return nil, errors.New("fhir: an authorizer is required")
	}
	o, err := s.org(org)
	if err != nil {
		return nil, err
	}
	if err := s.fresh(ctx, o); err != nil {
		return nil, err
	}
	at := instant(s.now())
	l := &ndjsonLoad{s: s, o: o, ctx: ctx, opts: opts, at: at, b: newSegBuilder(at)}
	if err := l.run(r); err != nil {
		s.discard(l.parts)
		return nil, err
	}
	if !l.b.empty() {
		if err := l.flush(); err != nil {
			s.discard(l.parts)
			return nil, err
		}
	}
	res := &BundleResult{Type: "batch-response", Entries: make([]EntryResult, len(l.lines))}
	if len(l.parts) > 0 {
		// The commit lists the staged parts and indexes their resources;
		// it does not depend on the organisation's state, so a lost race
		// only means writing it under the next number.
		manifest := newSegBuilder(l.at)
		manifest.idx.Parts, manifest.idx.Entries = l.parts, l.entries
		// Not independent: lines keep their own ids, which another load
		// may write too, and settle needs this load's versions to be the
		// last ones of their histories.
		err := s.commit(ctx, org, func(*state) (*segBuilder, error) { return manifest, nil },
			func(st *state, _ string) { l.settle(st, res) }, opts.BeforeCommit)
		if err != nil {
			var amb *ambiguousError
			if !errors.As(err, &amb) {
				s.discard(l.parts)
			}
			return nil, err
		}
	}
	for i, lr := range l.lines {
		if lr.err != nil {
			res.Entries[i] = EntryResult{Status: HTTPStatus(lr.err), Err: lr.err}
		} else {
			res.Entries[i].Warnings = lr.warnings
		}
	}
	return res, nil
}

type ndjsonLoad struct {
	s       *Store
	o       *orgState
	ctx     context.Context
	opts    WriteOptions
	at      string
	b       *segBuilder // the part being filled
	parts   []string    // staged parts
	entries []segEntry  // the staged resources, for the commit
	lines   []lineResult
	batch   []*entry
	bytes   int
}

// run reads the stream line by line, in batches parsed in parallel.
func (l *ndjsonLoad) run(r io.Reader) error {
	br := bufio.NewReaderSize(r, 64<<10)
	n := 0
	for {
		if err := l.ctx.Err(); err != nil {
			return err
		}
		line, tooLong, err := readLine(br, l.s.maxLine)
		if err != nil && !errors.Is(err, io.EOF) {
			return fmt.Errorf("fhir: read NDJSON: %w", err)
		}
		eof := errors.Is(err, io.EOF)
		if len(line) > 0 || tooLong {
			n++
			switch {
			case tooLong:
				l.lines = append(l.lines, lineResult{line: n, err: lineError(n, newError(ErrTooLarge, CodeTooLong, "",
					"the line is longer than %d bytes", l.s.maxLine))})
			case len(bytes.TrimSpace(line)) == 0:
				n-- // blank lines are not resources
			default:
				e := &entry{index: n, method: "PUT", raw: bytes.Clone(line)}
				l.batch = append(l.batch, e)
				l.bytes += len(line)
				l.lines = append(l.lines, lineResult{line: n})
			}
		}
		if len(l.batch) >= ndjsonBatchLines || l.bytes >= ndjsonBatchBytes || eof && len(l.batch) > 0 {
			if err := l.process(); err != nil {
				return err
			}
		}
		if eof {
			return nil
		}
	}
}

// readLine returns the next line without its end. A line longer than max
// is skipped to its end and reported as tooLong.
func readLine(br *bufio.Reader, max int) (line []byte, tooLong bool, err error) {
	var buf []byte
	for {
		frag, err := br.ReadSlice('\n')
		if !tooLong {
			if len(buf)+len(frag) > max+2 {
				tooLong, buf = true, nil
			} else {
				buf = append(buf, frag...)
			}
		}
		if errors.Is(err, bufio.ErrBufferFull) {
			continue
		}
		buf = bytes.TrimRight(buf, "\r\n")
		if !tooLong && len(buf) > max {
			tooLong, buf = true, nil
		}
		return buf, tooLong, err
	}
}

func lineError(n int, err error) error {
	var fe *Error
	if !errors.As(err, &fe) {
		return err
	}
	out := &Error{Kind: fe.Kind, Entry: n, Cause: fe.Cause, Issues: make([]Issue, len(fe.Issues))}
	for i, is := range fe.Issues {
		is.Details = "line " + strconv.Itoa(n) + ": " + is.Details
		out.Issues[i] = is
	}
	return out
}

// process parses, checks, authorizes and stages the batch of lines.
func (l *ndjsonLoad) process() error {
	batch := l.batch
	l.batch, l.bytes = nil, 0
	l.s.parseNDJSON(batch)
	for _, e := range batch {
		lr := &l.lines[l.lineIndex(e.index)]
		if e.err != nil {
			lr.err = lineError(e.index, e.err)
			continue
		}
		res := e.res
		id := res.ID
		if id == "" {
			id = uuid.NewString()
		}
		for _, site := range res.refs {
			if strings.HasPrefix(site.orig, "urn:") {
				lr.err = lineError(e.index, &Error{Kind: ErrInvalid, Entry: -1, Issues: []Issue{{Severity: SeverityError, Code: CodeNotFound,
					Expression: res.Type, Details: "urn: references can only be resolved within a transaction Bundle",
					Diagnostics: "reference " + strconv.Quote(site.orig)}}})
				break
			}
			if t, q, isCond := strings.Cut(site.orig, "?"); isCond && typePattern.MatchString(t) {
				l.o.mu.RLock()
				matches, err := matchQuery(l.o.st, t, q)
				l.o.mu.RUnlock()
				if err == nil && len(matches) == 1 {
					site.obj["reference"] = t + "/" + matches[0]
					continue
				}
				res.Warnings = append(res.Warnings, Issue{Severity: SeverityWarning, Code: CodeNotFound, Expression: res.Type,
					Details:     "line " + strconv.Itoa(e.index) + ": a conditional reference that matches no single stored resource is kept as written",
					Diagnostics: "reference " + strconv.Quote(site.orig)})
			}
		}
		patient := res.patientOf(id)
		labels := res.labels()
		if err := l.opts.Authorize(l.ctx, Access{Write: true, Type: res.Type, ID: id, Patient: patient, Labels: labels}); err != nil {
			lr.err = lineError(e.index, &Error{Kind: ErrForbidden, Entry: -1, Cause: err, Issues: []Issue{{Severity: SeverityError, Code: CodeForbidden, Details: "refused by policy"}}})
			continue
		}
		lr.typ, lr.id, lr.warnings = res.Type, id, res.Warnings
		l.b.addResource(segEntry{T: res.Type, ID: id, P: patient, Sec: labels, Idf: res.identifiers(), Refs: res.localRefs(patient)}, res.tree)
		if l.b.size() >= ndjsonSegmentBytes {
			if err := l.flush(); err != nil {
				return err
			}
		}
	}
	return nil
}

// lineIndex finds the lineResult of line n (lines are appended in order).
func (l *ndjsonLoad) lineIndex(n int) int {
	for i := len(l.lines) - 1; i >= 0; i-- {
		if l.lines[i].line == n {
			return i
		}
	}
	panic("fhir: NDJSON line not recorded")
}

// flush stages the current part, invisible until the commit.
func (l *ndjsonLoad) flush() error {
	name, err := l.s.stagePart(context.WithoutCancel(l.ctx), l.o, l.b.body)
	if err != nil {
		return err
	}
	l.parts = append(l.parts, name)
	for _, e := range l.b.idx.Entries {
		e.X = len(l.parts)
		l.entries = append(l.entries, e)
	}
	l.b = newSegBuilder(l.at)
	return nil
}

// settle fills in the results once the load is committed: the versions of
// one resource written by the load are the last ones of its history.
func (l *ndjsonLoad) settle(st *state, res *BundleResult) {
	remaining := map[string]int{}
	for _, lr := range l.lines {
		if lr.err == nil && lr.typ != "" {
			remaining[lr.typ+"/"+lr.id]++
		}
	}
	for i, lr := range l.lines {
		if lr.err != nil || lr.typ == "" {
			continue
		}
		key := lr.typ + "/" + lr.id
		h := st.res[key]
		remaining[key]--
		n := len(h.vs) - remaining[key]
		status := http.StatusOK
		if n == 1 || h.vs[n-2].del {
			status = http.StatusCreated
		}
		res.Entries[i] = EntryResult{Status: status, Type: lr.typ, ID: lr.id, VersionID: n, LastModified: h.vs[n-1].at}
	}
}

// parseNDJSON parses lines in parallel; any resource type is accepted.
func (s *Store) parseNDJSON(es []*entry) {
	s.parseEntriesWith(es, func(e *entry, _ *[]byte) {
		res, err := s.parser.Parse(e.raw)
		if err != nil {
			e.err = err
			return
		}
		e.res, e.raw = res, nil
	})
}
