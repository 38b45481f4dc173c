package fhir

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"sync"
)

// envelope is the part of a transaction or batch Bundle that is not an
// entry's resource. Every element of Bundle is declared so that unknown
// ones can be refused; those this server does not use are ignored.
type envelope struct {
	ResourceType  string            `json:"resourceType"`
	ID            json.RawMessage   `json:"id"`
	Meta          json.RawMessage   `json:"meta"`
	ImplicitRules json.RawMessage   `json:"implicitRules"`
	Language      json.RawMessage   `json:"language"`
	Identifier    json.RawMessage   `json:"identifier"`
	Type          string            `json:"type"`
	Timestamp     json.RawMessage   `json:"timestamp"`
	Total         json.RawMessage   `json:"total"`
	Link          json.RawMessage   `json:"link"`
	Entry         []json.RawMessage `json:"entry"`
	Signature     json.RawMessage   `json:"signature"`
}

type envEntry struct {
	ID                json.RawMessage `json:"id"`
	Extension         json.RawMessage `json:"extension"`
	ModifierExtension json.RawMessage `json:"modifierExtension"`
	Link              json.RawMessage `json:"link"`
	FullURL           string          `json:"fullUrl"`
	Resource          json.RawMessage `json:"resource"`
	Search            json.RawMessage `json:"search"`
	Request           *envRequest     `json:"request"`
	Response          json.RawMessage `json:"response"`
}

type envRequest struct {
	ID                json.RawMessage `json:"id"`
	Extension         json.RawMessage `json:"extension"`
	ModifierExtension json.RawMessage `json:"modifierExtension"`
	Method            string          `json:"method"`
	URL               string          `json:"url"`
	IfNoneMatch       string          `json:"ifNoneMatch"`
	IfModifiedSince   string          `json:"ifModifiedSince"`
	IfMatch           string          `json:"ifMatch"`
	IfNoneExist       string          `json:"ifNoneExist"`
}

// entry is one request of a Bundle (or a single interaction, or an NDJSON
// line) on its way through planning and commit.
type entry struct {
	index   int
	root    string // FHIRPath of the entry's resource, "" for single interactions
	fullURL string
	method  string
	raw     []byte
	res     *Resource

	ifNoneExist, ifMatch, ifNoneMatch string

	// From the request URL.
	typ, id string
	query   string // conditional or search parameters
	hasQ    bool
	vid     int // _history/{vid} reads

	err error // batch: this entry failed

	// Plan.
	op     int
	newID  string // the id a create gets; chosen once, kept across retries
	target string
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

// parseEnvelope reads a Bundle's envelope and its entries' requests.
func parseEnvelope(body []byte) (*envelope, []*entry, error) {
	var env envelope
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&env); err != nil {
		if _, terr := decodeTree(body); terr != nil {
			return nil, nil, terr
		}
		return nil, nil, &Error{Kind: ErrInvalid, Entry: -1, Issues: []Issue{{Severity: SeverityError, Code: CodeStructure,
			Expression: "Bundle", Details: "not a Bundle this server can read (an unknown element, or one of the wrong JSON type)", Diagnostics: err.Error()}}}
	}
	if _, err := dec.Token(); err == nil {
		return nil, nil, newError(ErrMalformed, CodeStructure, "", "data after the JSON value")
	}
	if env.ResourceType != "Bundle" {
		return nil, nil, newError(ErrInvalid, CodeInvalid, "", "the body must be a Bundle (or NDJSON with Content-Type application/fhir+ndjson)")
	}
	switch env.Type {
	case "transaction", "batch":
	case "":
		return nil, nil, newError(ErrInvalid, CodeRequired, "Bundle.type", "Bundle.type is required")
	default:
		return nil, nil, newError(ErrNotSupported, CodeNotSupported, "Bundle.type",
			"only transaction and batch Bundles are processed here; store other Bundles with POST /fhir/Bundle")
	}
	es := make([]*entry, len(env.Entry))
	seenURL := map[string]int{}
	for i, raw := range env.Entry {
		path := "Bundle.entry[" + strconv.Itoa(i) + "]"
		e := &entry{index: i, root: path + ".resource"}
		es[i] = e
		var ee envEntry
		d := json.NewDecoder(bytes.NewReader(raw))
		d.DisallowUnknownFields()
		if err := d.Decode(&ee); err != nil {
			e.err = &Error{Kind: ErrInvalid, Entry: i, Issues: []Issue{{Severity: SeverityError, Code: CodeStructure, Expression: path,
				Details: "an entry with an unknown element or one of the wrong JSON type", Diagnostics: err.Error()}}}
			continue
		}
		switch {
		case len(ee.ModifierExtension) > 0 || ee.Request != nil && len(ee.Request.ModifierExtension) > 0:
			e.err = &Error{Kind: ErrNotSupported, Entry: i, Issues: []Issue{{Severity: SeverityError, Code: CodeNotSupported, Expression: path,
				Details: "modifier extensions on an entry are not understood"}}}
			continue
		case ee.Request == nil || ee.Request.Method == "" || ee.Request.URL == "":
			e.err = &Error{Kind: ErrInvalid, Entry: i, Issues: []Issue{{Severity: SeverityError, Code: CodeRequired, Expression: path + ".request",
				Details: "every entry of a transaction or batch needs request.method and request.url"}}}
			continue
		}
		if ee.FullURL != "" {
			if !absoluteURL(ee.FullURL) {
				e.err = &Error{Kind: ErrInvalid, Entry: i, Issues: []Issue{{Severity: SeverityError, Code: CodeValue, Expression: path + ".fullUrl",
					Details: "fullUrl must be an absolute URL, urn:uuid or urn:oid", Diagnostics: fmt.Sprintf("fullUrl %q", ee.FullURL)}}}
				continue
			}
			if j, dup := seenURL[ee.FullURL]; dup {
				e.err = &Error{Kind: ErrInvalid, Entry: i, Issues: []Issue{{Severity: SeverityError, Code: CodeDuplicate, Expression: path + ".fullUrl",
					Details: fmt.Sprintf("fullUrl repeats entry %d's (bdl-7)", j)}}}
				continue
			}
			seenURL[ee.FullURL] = i
		}
		e.fullURL = ee.FullURL
		e.method = ee.Request.Method
		e.ifNoneExist, e.ifMatch, e.ifNoneMatch = ee.Request.IfNoneExist, ee.Request.IfMatch, ee.Request.IfNoneMatch
		if len(ee.Resource) > 0 && !bytes.Equal(ee.Resource, []byte("null")) {
			e.raw = ee.Resource
		}
		if err := e.parseRequestURL(ee.Request.URL); err != nil {
			e.err = atEntry(err, i, path+".request.url")
		}
	}
	return &env, es, nil
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
	hasRes := e.raw != nil
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
	s.parseEntriesWith(es, func(e *entry) { e.parse(s.parser) })
}

// parseEntriesWith runs parse on the entries that have a resource and no
// error yet, on the Store's workers.
func (s *Store) parseEntriesWith(es []*entry, parse func(*entry)) {
	work := make(chan *entry)
	var wg sync.WaitGroup
	for range min(s.workers, max(len(es), 1)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for e := range work {
				parse(e)
			}
		}()
	}
	for _, e := range es {
		if e.err == nil && e.raw != nil {
			work <- e
		}
	}
	close(work)
	wg.Wait()
}

func (e *entry) parse(p *Parser) {
	res, err := p.Parse(e.raw)
	if err != nil {
		e.err = atEntry(err, e.index, e.root)
		return
	}
	if res.Type != e.typ {
		e.err = atEntry(newError(ErrInvalid, CodeInvalid, res.Type, "the resource's type does not match request.url"), e.index, e.root)
		return
	}
	e.res = res
	e.raw = nil // the tree holds it now
}
