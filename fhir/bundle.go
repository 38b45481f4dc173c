package fhir

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"sync"
)

// The elements of Bundle, Bundle.entry and Bundle.entry.request, so that
// unknown ones can be refused; those this server does not use are ignored.
var (
	bundleKeys  = keySet("resourceType", "id", "meta", "implicitRules", "language", "identifier", "type", "timestamp", "total", "link", "entry", "signature")
	entryKeys   = keySet("id", "extension", "modifierExtension", "link", "fullUrl", "resource", "search", "request", "response")
	requestKeys = keySet("id", "extension", "modifierExtension", "method", "url", "ifNoneMatch", "ifModifiedSince", "ifMatch", "ifNoneExist")
)

func keySet(keys ...string) map[string]bool {
	m := make(map[string]bool, len(keys))
	for _, k := range keys {
		m[k] = true
	}
	return m
}

// entry is one request of a Bundle (or a single interaction, or an NDJSON
// line) on its way through planning and commit.
type entry struct {
	index   int
	root    string // FHIRPath of the entry's resource, "" for single interactions
	fullURL string
	method  string
	url     string
	raw     []byte // the resource as received (single interactions, NDJSON lines)
	tree    object // the resource's tree (Bundle entries)
	res     *Resource

	ifNoneExist, ifMatch, ifNoneMatch string

	// From the request URL.
	typ, id string
	query   string // conditional or search parameters
	hasQ    bool
	vid     int // _history/{vid} reads

	err error // batch: this entry failed

	// Plan.
	op       int
	condRefs bool   // a conditional reference was resolved against the state
	newID    string // the id a create gets; chosen once, kept across retries
	target   string
	// For writes: what is stored.
	patient string
	labels  []string
	// Results.
	status  int
	version int
	at      string
	body    []byte // stored body (writes), for representations
	out     []byte // response resource (reads, representations)
}

// Entry operations.
const (
	opNone = iota
	opCreate
	opUpdate
	opDelete
	opNoop   // a conditional create that found its match, or a delete of nothing
	opRead   // GET Type/id
	opVRead  // GET Type/id/_history/n
	opSearch // GET Type?…
)

// parseEnvelope reads a transaction or batch Bundle and its entries'
// requests. The body is decoded once, as a tree; each entry's resource
// subtree is handed to the parser (in parallel, later) as is.
func parseEnvelope(body []byte) (string, []*entry, error) {
	v, err := decodeTree(body)
	if err != nil {
		return "", nil, err
	}
	typ, list, err := checkRoot(v)
	if err != nil {
		return "", nil, err
	}
	es := make([]*entry, len(list))
	seenURL := map[string]int{}
	for i, raw := range list {
		es[i] = readEntry(raw, i, seenURL)
	}
	return typ, es, nil
}

// readEntry reads entry i of a Bundle from its tree; a failure is
// recorded on the entry.
func readEntry(raw any, i int, seenURL map[string]int) *entry {
	path := "Bundle.entry[" + strconv.Itoa(i) + "]"
	e := &entry{index: i, root: path + ".resource"}
	if err := e.readEnvelope(raw, path, seenURL); err != nil {
		e.err = atEntry(err, i, path)
	}
	return e
}

// checkRoot checks the Bundle itself (v is its decoded tree) and returns
// its type and its entries.
func checkRoot(v any) (string, []any, error) {
	root, ok := v.(object)
	if !ok || root["resourceType"] != "Bundle" {
		return "", nil, newError(ErrInvalid, CodeInvalid, "", "the body must be a Bundle (or NDJSON with Content-Type application/fhir+ndjson)")
	}
	for k := range root {
		if !bundleKeys[k] {
			return "", nil, &Error{Kind: ErrInvalid, Entry: -1, Issues: []Issue{{Severity: SeverityError, Code: CodeStructure,
				Expression: "Bundle", Details: "unknown element", Diagnostics: "element " + strconv.Quote(k)}}}
		}
	}
	typ, _ := root["type"].(string)
	switch typ {
	case "transaction", "batch":
	case "":
		return "", nil, newError(ErrInvalid, CodeRequired, "Bundle.type", "Bundle.type is required")
	default:
		return "", nil, newError(ErrNotSupported, CodeNotSupported, "Bundle.type",
			"only transaction and batch Bundles are processed here; store other Bundles with POST /fhir/Bundle")
	}
	var list []any
	switch t := root["entry"].(type) {
	case nil:
	case []any:
		list = t
	default:
		return "", nil, newError(ErrInvalid, CodeStructure, "Bundle.entry", "entry must be an array")
	}
	return typ, list, nil
}

// parseBundle does what parseEnvelope and then parseEntries do, but
// overlaps them: each entry goes to the Store's parse workers as soon as
// it is decoded, so that the (sequential) decoding of a large Bundle runs
// alongside the parsing of its first entries instead of before it. The
// result, errors included, is the same: anything irregular (invalid
// JSON, a body that is not a JSON object, a repeated element, an entry
// element that is not an array) or a Bundle that checkRoot refuses takes
// the plain path, whose error is returned, and what the workers parsed
// is dropped.
func (s *Store) parseBundle(body []byte) (string, []*entry, error) {
	work := make(chan *entry)
	var wg sync.WaitGroup
	for range s.workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var buf []byte
			for e := range work {
				e.parse(s.parser, &buf)
			}
		}()
	}
	root, es, ok := streamEnvelope(body, work)
	close(work)
	wg.Wait()
	if ok {
		if typ, _, err := checkRoot(root); err == nil {
			return typ, es, nil
		}
	}
	typ, es, err := parseEnvelope(body)
	if err != nil {
		return "", nil, err
	}
	s.parseEntries(es)
	return typ, es, nil
}

// streamEnvelope decodes body as decodeTree does, reading the entries of
// its "entry" array one at a time (readEntry) and sending those with a
// resource to parse to work. It returns the Bundle's tree and its
// entries, or false for anything it leaves to parseEnvelope.
func streamEnvelope(body []byte, work chan<- *entry) (object, []*entry, bool) {
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber()
	if t, err := dec.Token(); err != nil || t != json.Delim('{') {
		return nil, nil, false
	}
	root := object{}
	var es []*entry
	seenURL := map[string]int{}
	for dec.More() {
		t, err := dec.Token()
		key, isKey := t.(string)
		if err != nil || !isKey {
			return nil, nil, false
		}
		if _, dup := root[key]; dup {
			return nil, nil, false // the last one counts: entries already sent
		}
		if key != "entry" {
			var v any
			if err := dec.Decode(&v); err != nil {
				return nil, nil, false
			}
			root[key] = v
			continue
		}
		if t, err := dec.Token(); err != nil || t != json.Delim('[') {
			return nil, nil, false
		}
		list := []any{}
		for dec.More() {
			var v any
			if err := dec.Decode(&v); err != nil {
				return nil, nil, false
			}
			e := readEntry(v, len(list), seenURL)
			list = append(list, v)
			es = append(es, e)
			if e.err == nil && (e.raw != nil || e.tree != nil) {
				work <- e
			}
		}
		if t, err := dec.Token(); err != nil || t != json.Delim(']') {
			return nil, nil, false
		}
		root[key] = list
	}
	if t, err := dec.Token(); err != nil || t != json.Delim('}') {
		return nil, nil, false
	}
	if _, err := dec.Token(); err == nil {
		return nil, nil, false // data after the JSON value
	}
	return root, es, true
}

// readEnvelope reads one Bundle entry (not its resource).
func (e *entry) readEnvelope(raw any, path string, seenURL map[string]int) error {
	structure := func(expr, details string) error {
		return newError(ErrInvalid, CodeStructure, expr, "%s", details)
	}
	eo, ok := raw.(object)
	if !ok {
		return structure(path, "an entry must be a JSON object")
	}
	for k := range eo {
		if !entryKeys[k] {
			return &Error{Kind: ErrInvalid, Entry: -1, Issues: []Issue{{Severity: SeverityError, Code: CodeStructure, Expression: path,
				Details: "unknown element in an entry", Diagnostics: "element " + strconv.Quote(k)}}}
		}
	}
	req, ok := eo["request"].(object)
	if !ok {
		return newError(ErrInvalid, CodeRequired, path+".request", "every entry of a transaction or batch needs a request")
	}
	for k := range req {
		if !requestKeys[k] {
			return &Error{Kind: ErrInvalid, Entry: -1, Issues: []Issue{{Severity: SeverityError, Code: CodeStructure, Expression: path + ".request",
				Details: "unknown element in a request", Diagnostics: "element " + strconv.Quote(k)}}}
		}
	}
	if eo["modifierExtension"] != nil || req["modifierExtension"] != nil {
		return newError(ErrNotSupported, CodeNotSupported, path, "modifier extensions on an entry are not understood")
	}
	str := func(o object, k, expr string) (string, error) {
		switch t := o[k].(type) {
		case nil:
			return "", nil
		case string:
			return t, nil
		default:
			return "", structure(expr, k+" must be a string")
		}
	}
	var err error
	fields := []struct {
		dst  *string
		o    object
		k    string
		expr string
	}{
		{&e.fullURL, eo, "fullUrl", path + ".fullUrl"},
		{&e.method, req, "method", path + ".request.method"},
		{&e.url, req, "url", path + ".request.url"},
		{&e.ifNoneExist, req, "ifNoneExist", path + ".request.ifNoneExist"},
		{&e.ifMatch, req, "ifMatch", path + ".request.ifMatch"},
		{&e.ifNoneMatch, req, "ifNoneMatch", path + ".request.ifNoneMatch"},
	}
	for _, f := range fields {
		if *f.dst, err = str(f.o, f.k, f.expr); err != nil {
			return err
		}
	}
	if e.method == "" || e.url == "" {
		return newError(ErrInvalid, CodeRequired, path+".request", "every entry of a transaction or batch needs request.method and request.url")
	}
	if e.fullURL != "" {
		if !absoluteURL(e.fullURL) {
			return &Error{Kind: ErrInvalid, Entry: -1, Issues: []Issue{{Severity: SeverityError, Code: CodeValue, Expression: path + ".fullUrl",
				Details: "fullUrl must be an absolute URL, urn:uuid or urn:oid", Diagnostics: fmt.Sprintf("fullUrl %q", e.fullURL)}}}
		}
		if j, dup := seenURL[e.fullURL]; dup {
			return newError(ErrInvalid, CodeDuplicate, path+".fullUrl", "fullUrl repeats entry %d's (bdl-7)", j)
		}
		seenURL[e.fullURL] = e.index
	}
	switch t := eo["resource"].(type) {
	case nil:
	case object:
		e.tree = t
	default:
		return structure(path+".resource", "resource must be a JSON object")
	}
	if err := e.parseRequestURL(e.url); err != nil {
		return atEntry(err, e.index, path+".request.url")
	}
	return nil
}

// parseRequestURL reads an entry's request.url (relative to the base) and
// checks it against the method and the presence of a resource.
func (e *entry) parseRequestURL(u string) error {
	u = strings.TrimPrefix(u, "/")
	if absoluteURL(u) {
		return newError(ErrNotSupported, CodeNotSupported, "", "request.url must be relative to the server's base")
	}
	p, q, hasQ := strings.Cut(u, "?")
	e.query, e.hasQ = q, hasQ
	segs := strings.Split(p, "/")
	if strings.HasPrefix(segs[len(segs)-1], "$") || strings.HasPrefix(p, "$") {
		return newError(ErrNotSupported, CodeNotSupported, "", "operations are not supported inside a Bundle")
	}
	if !typePattern.MatchString(segs[0]) {
		return newError(ErrMalformed, CodeValue, "", "request.url must start with a resource type")
	}
	e.typ = segs[0]
	switch len(segs) {
	case 1:
	case 2:
		e.id = segs[1]
	case 4:
		if segs[2] != "_history" {
			return newError(ErrMalformed, CodeValue, "", "request.url is not Type, Type/id or Type/id/_history/vid")
		}
		e.id = segs[1]
		n, err := strconv.Atoi(segs[3])
		if err != nil || n < 1 {
			return newError(ErrMalformed, CodeValue, "", "the version in request.url must be a positive integer")
		}
		e.vid = n
	default:
		return newError(ErrMalformed, CodeValue, "", "request.url is not Type, Type/id or Type/id/_history/vid")
	}
	if e.id != "" && !ValidID(e.id) {
		return newError(ErrMalformed, CodeValue, "", "the id in request.url is not a FHIR id")
	}
	if e.id != "" && hasQ {
		return newError(ErrMalformed, CodeValue, "", "request.url has both an id and search parameters")
	}
	hasRes := e.raw != nil || e.tree != nil
	switch e.method {
	case "POST":
		if e.id != "" || hasQ {
			return newError(ErrMalformed, CodeValue, "", "POST request.url must be the resource type")
		}
		if !hasRes {
			return newError(ErrInvalid, CodeRequired, "", "POST needs a resource")
		}
	case "PUT":
		if e.id == "" && !hasQ || e.vid != 0 {
			return newError(ErrMalformed, CodeValue, "", "PUT request.url must be Type/id or Type?search")
		}
		if !hasRes {
			return newError(ErrInvalid, CodeRequired, "", "PUT needs a resource")
		}
	case "DELETE":
		if e.id == "" && !hasQ || e.vid != 0 {
			return newError(ErrMalformed, CodeValue, "", "DELETE request.url must be Type/id or Type?search")
		}
		if hasRes {
			return newError(ErrInvalid, CodeInvalid, "", "DELETE takes no resource")
		}
	case "GET", "HEAD":
		if hasRes {
			return newError(ErrInvalid, CodeInvalid, "", "GET takes no resource")
		}
	case "PATCH":
		return newError(ErrNotSupported, CodeNotSupported, "", "PATCH is not supported")
	default:
		return newError(ErrMalformed, CodeValue, "", "request.method must be GET, HEAD, POST, PUT or DELETE")
	}
	return nil
}

// parseEntries parses the resources of es in parallel; a failure is
// recorded on its entry.
func (s *Store) parseEntries(es []*entry) {
	s.parseEntriesWith(es, func(e *entry, buf *[]byte) { e.parse(s.parser, buf) })
}

// parseEntriesWith runs parse on the entries that have a resource and no
// error yet, on the Store's workers.
// Each worker passes parse its own scratch buffer.
func (s *Store) parseEntriesWith(es []*entry, parse func(*entry, *[]byte)) {
	work := make(chan *entry)
	var wg sync.WaitGroup
	for range min(s.workers, max(len(es), 1)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var buf []byte
			for e := range work {
				parse(e, &buf)
			}
		}()
	}
	for _, e := range es {
		if e.err == nil && (e.raw != nil || e.tree != nil) {
			work <- e
		}
	}
	close(work)
	wg.Wait()
}

func (e *entry) parse(p *Parser, buf *[]byte) {
	var res *Resource
	var err error
	if e.tree != nil {
		// The Bundle was decoded as a tree: the validating parser gets the
		// resource's canonical encoding.
		// (The parser keeps nothing of its input: the buffer is reused.)
		*buf = appendUnordered((*buf)[:0], e.tree)
		res, err = p.parseTree(*buf, e.tree)
	} else {
		res, err = p.Parse(e.raw)
	}
	if err != nil {
		e.err = atEntry(err, e.index, e.root)
		return
	}
	if res.Type != e.typ {
		e.err = atEntry(newError(ErrInvalid, CodeInvalid, res.Type, "the resource's type does not match request.url"), e.index, e.root)
		return
	}
	e.res = res
	e.raw, e.tree = nil, nil // the Resource holds the tree now
}
