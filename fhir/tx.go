package fhir

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"
)

// Access is one thing a request does to an organisation's records, for
// the caller's authorization: a write (create, update, delete) of one
// resource, a read of one resource, or a search.
type Access struct {
	// Write is true for creates, updates and deletes.
	Write bool
	// Search is true for a search (Type and Patient say what over).
	Search bool
	// Type and ID name the resource (ID is empty for searches).
	Type, ID string
	// Patient is the id of the Patient the resource is linked to (the
	// new content's for writes), or "".
	Patient string
	// Labels are the resource's meta.security codes.
	Labels []string
}

// Authorizer decides one access. A non-nil error refuses it: the entry
// fails with ErrForbidden wrapping the error, and in a transaction the
// whole Bundle fails.
type Authorizer func(ctx context.Context, a Access) error

// WriteOptions configure the write operations of [Store].
type WriteOptions struct {
	// Authorize is asked once per entry: per written resource, per read
	// and per search. Required.
	Authorize Authorizer
	// Representation asks for the stored resources in the results
	// (Prefer: return=representation).
	Representation bool
	// Base is the service base URL ("https://host/fhir"), for the fullUrls
	// of search results inside a Bundle response.
	Base string
	// BeforeCommit, when set, is called once, right before the commit
	// that makes a write visible, and only when there is something to
	// write. An error stops the write: nothing becomes visible. The
	// gateway records its audit entry here (fail closed).
	BeforeCommit func(ctx context.Context) error
}

// EntryResult is the outcome of one Bundle entry, NDJSON line or single
// interaction.
type EntryResult struct {
	// Status is the entry's HTTP status: 201 created, 200 updated, read or
	// matched, 204 deleted, 304 not modified, or an error's.
	Status int
	// Type and ID name the resource concerned, when there is one.
	Type, ID string
	// VersionID is its version after the request, 0 when none.
	VersionID int
	// LastModified is meta.lastUpdated of that version.
	LastModified string
	// Resource is the resource (reads, and writes with Representation),
	// or a searchset Bundle (searches), or nil.
	Resource []byte
	// Err is the failure of a batch entry or NDJSON line (an *Error).
	Err error
	// Warnings are issues that did not stop the entry.
	Warnings []Issue
}

// Location returns "Type/id/_history/n", or "".
func (r EntryResult) Location() string {
	if r.Type == "" || r.ID == "" || r.VersionID == 0 {
		return ""
	}
	return r.Type + "/" + r.ID + "/_history/" + strconv.Itoa(r.VersionID)
}

// ETag returns the weak ETag of the version, W/"n", or "".
func (r EntryResult) ETag() string {
	if r.VersionID == 0 {
		return ""
	}
	return `W/"` + strconv.Itoa(r.VersionID) + `"`
}

// BundleResult is the response to a transaction, batch or NDJSON load.
type BundleResult struct {
	// Type is transaction-response or batch-response.
	Type    string
	Entries []EntryResult
}

// HTTPStatus returns the HTTP status that FHIR gives a failure of this
// package's kinds (see the sentinel errors), or 500.
func HTTPStatus(err error) int {
	switch KindOf(err) {
	case ErrMalformed, ErrNotSupported:
		return http.StatusBadRequest
	case ErrInvalid:
		return http.StatusUnprocessableEntity
	case ErrNotFound:
		return http.StatusNotFound
	case ErrDeleted:
		return http.StatusGone
	case ErrPreconditionFailed:
		return http.StatusPreconditionFailed
	case ErrConflict:
		return http.StatusConflict
	case ErrTooLarge:
		return http.StatusRequestEntityTooLarge
	case ErrForbidden:
		return http.StatusForbidden
	}
	return http.StatusInternalServerError
}

// instant formats t as a FHIR instant with milliseconds, in UTC.
func instant(t time.Time) string { return t.UTC().Format("2006-01-02T15:04:05.000Z07:00") }

// ProcessBundle processes a transaction or batch Bundle (JSON) for org, as
// FHIR R4 says (http.html#transaction): DELETEs, then POSTs, then PUTs,
// then GETs; urn:uuid and other fullUrls in references rewritten to the
// ids the resources get; conditional references ("Type?identifier=…")
// resolved against org's stored resources; ifNoneExist, ifMatch and
// conditional PUT/DELETE honoured. A transaction is all or nothing: any
// failure returns an error (an *Error naming the entry) and stores nothing.
// A batch reports each entry's outcome; its successful writes are
// committed together.
func (s *Store) ProcessBundle(ctx context.Context, org string, body []byte, opts WriteOptions) (*BundleResult, error) {
	typ, es, err := s.parseBundle(body)
	if err != nil {
		return nil, err
	}
	batch := typ == "batch"
	if err := s.process(ctx, org, es, batch, true, opts); err != nil {
		return nil, err
	}
	res := &BundleResult{Type: typ + "-response", Entries: make([]EntryResult, len(es))}
	for i, e := range es {
		res.Entries[i] = e.result()
	}
	return res, nil
}

// Create creates a resource (POST /fhir/{type}); ifNoneExist, when not
// empty, makes it conditional (If-None-Exist).
func (s *Store) Create(ctx context.Context, org, typ string, body []byte, ifNoneExist string, opts WriteOptions) (EntryResult, error) {
	e := &entry{index: -1, method: "POST", typ: typ, raw: body, ifNoneExist: ifNoneExist}
	return s.single(ctx, org, e, opts)
}

// Update creates or updates typ/id (PUT /fhir/{type}/{id}); ifMatch, when
// not empty, must be the current version's ETag (W/"n").
func (s *Store) Update(ctx context.Context, org, typ, id string, body []byte, ifMatch string, opts WriteOptions) (EntryResult, error) {
	if !ValidID(id) {
		return EntryResult{}, newError(ErrMalformed, CodeValue, "", "the id in the URL is not a FHIR id")
	}
	e := &entry{index: -1, method: "PUT", typ: typ, id: id, raw: body, ifMatch: ifMatch}
	return s.single(ctx, org, e, opts)
}

// ConditionalUpdate updates the one resource of typ that query selects,
// or creates one when none does (PUT /fhir/{type}?query).
func (s *Store) ConditionalUpdate(ctx context.Context, org, typ, query string, body []byte, opts WriteOptions) (EntryResult, error) {
	e := &entry{index: -1, method: "PUT", typ: typ, query: query, hasQ: true, raw: body}
	return s.single(ctx, org, e, opts)
}

// Delete deletes typ/id (DELETE /fhir/{type}/{id}); deleting what does not
// exist succeeds and changes nothing.
func (s *Store) Delete(ctx context.Context, org, typ, id string, opts WriteOptions) (EntryResult, error) {
	if !ValidID(id) {
		return EntryResult{}, newError(ErrMalformed, CodeValue, "", "the id in the URL is not a FHIR id")
	}
	e := &entry{index: -1, method: "DELETE", typ: typ, id: id}
	return s.single(ctx, org, e, opts)
}

// ConditionalDelete deletes the one resource of typ that query selects
// (DELETE /fhir/{type}?query); none is success, more than one
// ErrPreconditionFailed.
func (s *Store) ConditionalDelete(ctx context.Context, org, typ, query string, opts WriteOptions) (EntryResult, error) {
	e := &entry{index: -1, method: "DELETE", typ: typ, query: query, hasQ: true}
	return s.single(ctx, org, e, opts)
}

func (s *Store) single(ctx context.Context, org string, e *entry, opts WriteOptions) (EntryResult, error) {
	if !typePattern.MatchString(e.typ) {
		return EntryResult{}, newError(ErrMalformed, CodeValue, "", "not a resource type")
	}
	if err := s.process(ctx, org, []*entry{e}, false, false, opts); err != nil {
		return EntryResult{}, err
	}
	return e.result(), nil
}

func (e *entry) result() EntryResult {
	r := EntryResult{Status: e.status, Type: e.typ, ID: e.target, VersionID: e.version, LastModified: e.at, Resource: e.out, Err: e.err}
	if e.res != nil {
		r.Warnings = e.res.Warnings
	}
	if e.err != nil {
		r.Status = HTTPStatus(e.err)
		r.ID, r.VersionID, r.LastModified, r.Resource = "", 0, "", nil
	}
	return r
}

// reqPath is the FHIRPath of the entry's request, "" for single
// interactions.
func (e *entry) reqPath() string {
	if e.index < 0 {
		return ""
	}
	return "Bundle.entry[" + strconv.Itoa(e.index) + "].request"
}

// process parses (unless parsed), plans, authorizes and commits
// entries, then runs their reads.
func (s *Store) process(ctx context.Context, org string, es []*entry, batch, parsed bool, opts WriteOptions) error {
	if opts.Authorize == nil {
		return errors.New("fhir: an authorizer is required")
	}
	if !parsed {
		s.parseEntries(es)
	}
	perr := make([]error, len(es))
	for i, e := range es {
		perr[i] = e.err
		if e.err == nil && (e.method == "POST" || e.method == "PUT" && e.hasQ) {
			e.newID = uuid.NewString()
		}
	}
	if !batch {
		if err := joinEntryErrors(es); err != nil {
			return err
		}
	}
	// Decisions are remembered across re-plans: a retry asks again only
	// about what changed.
	decided := map[string]error{}
	authorize := opts.Authorize
	opts.Authorize = func(ctx context.Context, a Access) error {
		k := fmt.Sprintf("%t|%t|%s|%s|%s|%s", a.Write, a.Search, a.Type, a.ID, a.Patient, strings.Join(a.Labels, ","))
		if err, ok := decided[k]; ok {
			return err
		}
		err := authorize(ctx, a)
		decided[k] = err
		return err
	}
	at := instant(s.now())
	var b *segBuilder
	err := s.commit(ctx, org, func(st *state) (*segBuilder, error) {
		for i, e := range es {
			e.err = perr[i]
		}
		var err error
		b, err = s.plan(ctx, st, es, batch, opts, at)
		return b, err
	}, func(st *state, seg string) { s.settle(st, es, seg, b, opts) }, opts.BeforeCommit)
	if err != nil {
		return err
	}
	s.runReads(ctx, org, es, opts)
	return nil
}

// joinEntryErrors returns the entries' failures as one *Error (the
// first failing entry's index, every entry's issues), or nil.
func joinEntryErrors(es []*entry) error {
	var out *Error
	for _, e := range es {
		if e.err == nil {
			continue
		}
		var fe *Error
		if !errors.As(e.err, &fe) {
			return e.err
		}
		if out == nil {
			out = &Error{Kind: fe.Kind, Entry: fe.Entry, Cause: fe.Cause}
		}
		out.Issues = append(out.Issues, fe.Issues...)
	}
	if out == nil {
		return nil
	}
	return out
}

// plan decides what each entry does against st, rewrites references,
// authorizes, and returns the segment to commit. In a transaction the
// first failure is returned; in a batch it is recorded on its entry.
func (s *Store) plan(ctx context.Context, st *state, es []*entry, batch bool, opts WriteOptions, at string) (*segBuilder, error) {
	for _, e := range es {
		e.op, e.target, e.status, e.version, e.at, e.body, e.out = opNone, "", 0, 0, "", nil, nil
		e.patient, e.labels, e.condRefs = "", nil, false
	}
	fail := func(e *entry, err error) error {
		err = atEntry(err, e.index, e.root)
		if batch {
			e.err = err
			return nil
		}
		return err
	}
	ok := func(e *entry) bool { return e.err == nil }

	// 1. Resolve what each write touches, in FHIR's processing order.
	for _, method := range []string{"DELETE", "POST", "PUT"} {
		for _, e := range es {
			if !ok(e) || e.method != method {
				continue
			}
			if err := e.resolve(st); err != nil {
				if err := fail(e, err); err != nil {
					return nil, err
				}
			}
		}
	}

	// 2. No two entries may touch one resource.
	touched := map[string]*entry{}
	for _, e := range es {
		if !ok(e) || e.op != opCreate && e.op != opUpdate && e.op != opDelete && !(e.method == "DELETE" && e.target != "") {
			continue
		}
		key := e.typ + "/" + e.target
		if prev, dup := touched[key]; dup {
			err := &Error{Kind: ErrMalformed, Entry: e.index, Issues: []Issue{{Severity: SeverityError, Code: CodeDuplicate, Expression: e.reqPath(),
				Details: fmt.Sprintf("entries %d and %d touch the same resource", prev.index, e.index)}}}
			if !batch {
				return nil, err
			}
			e.err = &Error{Kind: ErrConflict, Entry: e.index, Issues: err.Issues}
			continue
		}
		touched[key] = e
	}

	// 3. Rewrite references: fullUrls of other entries, conditional
	// references.
	fullURLs := map[string]*entry{}
	for _, e := range es {
		if ok(e) && e.fullURL != "" && (e.op == opCreate || e.op == opUpdate || e.op == opNoop && e.method == "POST") {
			fullURLs[e.fullURL] = e
		}
	}
	for _, e := range es {
		if !ok(e) || e.op != opCreate && e.op != opUpdate {
			continue
		}
		if err := e.rewriteRefs(st, fullURLs, batch); err != nil {
			if err := fail(e, err); err != nil {
				return nil, err
			}
			continue
		}
		e.patient = e.res.patientOf(e.target)
		e.labels = e.res.labels()
	}

	// 4. Reads in the Bundle: check they can succeed, before anything is
	// committed.
	for _, e := range es {
		if !ok(e) || e.method != "GET" && e.method != "HEAD" {
			continue
		}
		if err := e.planRead(st, touched); err != nil {
			if err := fail(e, err); err != nil {
				return nil, err
			}
		}
	}

	// 5. Ask the caller.
	for _, e := range es {
		if !ok(e) {
			continue
		}
		a, ask := e.access(st)
		if !ask {
			continue
		}
		if err := opts.Authorize(ctx, a); err != nil {
			ferr := &Error{Kind: ErrForbidden, Entry: e.index, Cause: err, Issues: []Issue{{Severity: SeverityError, Code: CodeForbidden,
				Expression: e.reqPath(), Details: "refused by policy"}}}
			if err := fail(e, ferr); err != nil {
				return nil, err
			}
		}
	}

	// 6. The segment: every write, in entry order. It is independent of
	// the state when nothing above consulted it.
	b := newSegBuilder(at)
	b.independent = true
	for _, e := range es {
		if e.method != "POST" || e.ifNoneExist != "" || e.condRefs {
			b.independent = false
		}
	}
	for _, e := range es {
		if !ok(e) {
			continue
		}
		switch e.op {
		case opCreate, opUpdate:
			e.body = b.addResource(segEntry{T: e.typ, ID: e.target, P: e.patient, Sec: e.labels, Idf: e.res.identifiers(), Refs: e.res.localRefs(e.patient)}, e.res.tree)
		case opDelete:
			b.add(segEntry{T: e.typ, ID: e.target, Del: true}, nil)
		}
	}
	return b, nil
}

// resolve decides a write entry's operation and target against st.
func (e *entry) resolve(st *state) error {
	switch e.method {
	case "DELETE":
		e.op = opDelete
		if e.hasQ {
			matches, err := matchQuery(st, e.typ, e.query)
			if err != nil {
				return err
			}
			switch len(matches) {
			case 0:
				e.op = opNoop
				return nil
			case 1:
				e.target = matches[0]
			default:
				return e.multiple("conditional delete")
			}
		} else {
			e.target = e.id
		}
		if v := st.lookup(e.typ, e.target).current(); v == nil || v.del {
			e.op = opNoop
		}
	case "POST":
		e.op, e.target = opCreate, e.newID
		if e.ifNoneExist != "" {
			matches, err := matchQuery(st, e.typ, strings.TrimPrefix(e.ifNoneExist, "?"))
			if err != nil {
				return err
			}
			switch len(matches) {
			case 0:
			case 1:
				e.op, e.target = opNoop, matches[0]
			default:
				return e.multiple("ifNoneExist")
			}
		}
	case "PUT":
		if e.hasQ {
			matches, err := matchQuery(st, e.typ, e.query)
			if err != nil {
				return err
			}
			switch len(matches) {
			case 0:
				e.target = e.res.ID
				if e.target == "" {
					e.target = e.newID
				}
			case 1:
				e.target = matches[0]
				if e.res.ID != "" && e.res.ID != e.target {
					return newError(ErrMalformed, CodeInvalid, e.res.Type+".id", "the resource's id differs from the one the conditional update matched")
				}
			default:
				return e.multiple("conditional update")
			}
		} else {
			e.target = e.id
			if e.res.ID != "" && e.res.ID != e.id {
				return newError(ErrMalformed, CodeInvalid, e.res.Type+".id", "the resource's id differs from the id in the URL")
			}
		}
		cur := st.lookup(e.typ, e.target)
		v := cur.current()
		if e.ifMatch != "" {
			want, okv := parseETag(e.ifMatch)
			if !okv {
				return newError(ErrMalformed, CodeValue, e.reqPath(), "If-Match must be a version ETag such as W/\"3\"")
			}
			if v == nil || len(cur.vs) != want {
				return newError(ErrPreconditionFailed, CodeConflict, e.reqPath(), "If-Match does not match the current version")
			}
		}
		e.op = opUpdate
		if v == nil || v.del {
			e.op = opCreate
		}
	}
	return nil
}

func (e *entry) multiple(what string) error {
	return newError(ErrPreconditionFailed, CodeMultipleMatches, e.reqPath(), "%s matches more than one resource", what)
}

// matchQuery runs a conditional query.
func matchQuery(st *state, typ, raw string) ([]string, error) {
	q, err := parseQueryString(typ, raw)
	if err != nil {
		return nil, err
	}
	return st.match(q), nil
}

// parseETag reads W/"n" (or "n", or n).
func parseETag(s string) (int, bool) {
	s = strings.TrimPrefix(strings.TrimSpace(s), "W/")
	s = strings.Trim(s, `"`)
	n, err := strconv.Atoi(s)
	return n, err == nil && n > 0
}

// rewriteRefs sets every reference of the entry's resource from its
// received value: other entries' fullUrls become their "Type/id",
// conditional references the one resource they match.
func (e *entry) rewriteRefs(st *state, fullURLs map[string]*entry, batch bool) error {
	for _, site := range e.res.refs {
		ref := site.orig
		nv := ref
		if other, found := fullURLs[ref]; found {
			if batch && other != e {
				return newError(ErrInvalid, CodeProcessing, e.res.Type, "a batch entry may not reference another entry of the batch; use a transaction")
			}
			nv = other.typ + "/" + other.target
		} else if strings.HasPrefix(ref, "urn:uuid:") || strings.HasPrefix(ref, "urn:oid:") {
			return &Error{Kind: ErrInvalid, Entry: -1, Issues: []Issue{{Severity: SeverityError, Code: CodeNotFound, Expression: e.res.Type,
				Details: "a reference to a urn: fullUrl that no entry of the Bundle has", Diagnostics: "reference " + strconv.Quote(ref)}}}
		} else if t, q, isCond := strings.Cut(ref, "?"); isCond && typePattern.MatchString(t) {
			e.condRefs = true
			matches, err := matchQuery(st, t, q)
			if err != nil {
				return err
			}
			if len(matches) != 1 {
				return &Error{Kind: ErrPreconditionFailed, Entry: -1, Issues: []Issue{{Severity: SeverityError, Code: CodeMultipleMatches, Expression: e.res.Type,
					Details:     fmt.Sprintf("a conditional reference matches %d resources, not exactly one", len(matches)),
					Diagnostics: "reference " + strconv.Quote(ref)}}}
			}
			nv = t + "/" + matches[0]
		}
		site.obj["reference"] = nv
	}
	return nil
}

// planRead checks a GET entry before the commit; touched are the
// Bundle's writes.
func (e *entry) planRead(st *state, touched map[string]*entry) error {
	switch {
	case e.hasQ || e.id == "":
		q, err := parseQueryString(e.typ, e.query)
		if err != nil && e.query != "" {
			return err
		}
		_ = q
		e.op = opSearch
		return nil
	case e.vid > 0:
		e.op, e.target = opVRead, e.id
		h := st.lookup(e.typ, e.id)
		if h == nil || e.vid > len(h.vs) {
			return newError(ErrNotFound, CodeNotFound, e.reqPath(), "no such version")
		}
		return nil
	}
	e.op, e.target = opRead, e.id
	if w, ok := touched[e.typ+"/"+e.id]; ok {
		if w.op == opDelete {
			return newError(ErrDeleted, CodeDeleted, e.reqPath(), "the resource is deleted by this Bundle")
		}
		return nil
	}
	v := st.lookup(e.typ, e.id).current()
	switch {
	case v == nil:
		return newError(ErrNotFound, CodeNotFound, e.reqPath(), "no such resource")
	case v.del:
		return newError(ErrDeleted, CodeDeleted, e.reqPath(), "the resource is deleted")
	}
	return nil
}

// access is what the entry asks the authorizer, and whether it asks.
func (e *entry) access(st *state) (Access, bool) {
	switch e.op {
	case opCreate, opUpdate:
		return Access{Write: true, Type: e.typ, ID: e.target, Patient: e.patient, Labels: e.labels}, true
	case opDelete:
		v := st.lookup(e.typ, e.target).current()
		return Access{Write: true, Type: e.typ, ID: e.target, Patient: v.patient, Labels: v.sec}, true
	case opRead, opVRead:
		a := Access{Type: e.typ, ID: e.id}
		if h := st.lookup(e.typ, e.id); h != nil {
			v := h.current()
			if e.op == opVRead && e.vid <= len(h.vs) {
				v = h.vs[e.vid-1]
			}
			a.Patient, a.Labels = v.patient, v.sec
		}
		return a, true
	case opSearch:
		q, _ := parseQueryString(e.typ, e.query)
		return Access{Search: true, Type: e.typ, Patient: q.Patient}, true
	}
	return Access{}, false
}

// settle records the outcome of the entries once their segment is
// committed as seg.
func (s *Store) settle(st *state, es []*entry, seg string, b *segBuilder, opts WriteOptions) {
	for _, e := range es {
		if e.err != nil {
			continue
		}
		switch e.op {
		case opCreate, opUpdate, opDelete:
			h := st.lookup(e.typ, e.target)
			e.version = versionIn(h, seg)
			e.at = h.vs[e.version-1].at
			e.status = http.StatusOK
			switch e.op {
			case opCreate:
				e.status = http.StatusCreated
			case opDelete:
				e.status = http.StatusNoContent
			}
			if e.op != opDelete {
				if opts.Representation {
					e.out, _ = spliceMeta(nil, e.body, e.typ, e.target, strconv.Itoa(e.version), e.at)
				}
			}
		case opNoop:
			e.status = http.StatusNoContent
			if e.method == "POST" {
				e.status = http.StatusOK
				h := st.lookup(e.typ, e.target)
				e.version = len(h.vs)
				e.at = h.current().at
			}
		}
	}
}

// versionIn returns the number of the version of h stored in seg.
func versionIn(h *history, seg string) int {
	if h == nil {
		return 0
	}
	for i := len(h.vs) - 1; i >= 0; i-- {
		if h.vs[i].seg == seg {
			return i + 1
		}
	}
	return 0
}
