package fhir

import (
	"errors"
	"io"
	"net/http"
	"strconv"
)

// FullURL returns base/Type/id (base without a trailing slash), or
// Type/id when base is empty.
func FullURL(base, typ, id string) string {
	if base == "" {
		return typ + "/" + id
	}
	return base + "/" + typ + "/" + id
}

// Link is a Bundle.link.
type Link struct {
	Relation, URL string
}

// BundleWriter writes a Bundle (searchset, history) as a stream: the
// envelope first, then one entry per Add, then the end on Close. Write
// errors stick and are returned by every later call.
type BundleWriter struct {
	w    io.Writer
	n    int
	mode string
	err  error
}

// NewBundleWriter starts a Bundle of typ ("searchset", "history") with
// total (omitted when negative) and links.
func NewBundleWriter(w io.Writer, typ string, total int, links []Link) *BundleWriter {
	bw := &BundleWriter{w: w}
	if typ == "searchset" {
		bw.mode = "match"
	}
	b := []byte(`{"resourceType":"Bundle","type":`)
	b = appendString(b, typ)
	if total >= 0 {
		b = append(b, `,"total":`...)
		b = strconv.AppendInt(b, int64(total), 10)
	}
	if len(links) > 0 {
		b = append(b, `,"link":[`...)
		for i, l := range links {
			if i > 0 {
				b = append(b, ',')
			}
			b = append(b, `{"relation":`...)
			b = appendString(b, l.Relation)
			b = append(b, `,"url":`...)
			b = appendString(b, l.URL)
			b = append(b, '}')
		}
		b = append(b, ']')
	}
	_, bw.err = w.Write(b)
	return bw
}

// Add writes an entry holding resource (JSON) under fullURL.
func (bw *BundleWriter) Add(fullURL string, resource []byte) error {
	return bw.add(fullURL, resource, nil)
}

// AddHistory writes a history entry: the version's resource (nil for a
// deletion) and its request and response.
func (bw *BundleWriter) AddHistory(fullURL string, v Version, resource []byte) error {
	var b []byte
	method, status := "PUT", "200 OK"
	switch {
	case v.Deleted:
		method, status = "DELETE", "204 No Content"
	case v.VersionID == 1:
		method, status = "POST", "201 Created"
	}
	url := v.Type + "/" + v.ID
	if method == "POST" {
		url = v.Type
	}
	b = append(b, `"request":{"method":`...)
	b = appendString(b, method)
	b = append(b, `,"url":`...)
	b = appendString(b, url)
	b = append(b, `},"response":{"status":`...)
	b = appendString(b, status)
	b = append(b, `,"etag":`...)
	b = appendString(b, v.ETag())
	b = append(b, `,"lastModified":`...)
	b = appendString(b, v.LastUpdated)
	b = append(b, '}')
	return bw.add(fullURL, resource, b)
}

func (bw *BundleWriter) add(fullURL string, resource, extra []byte) error {
	if bw.err != nil {
		return bw.err
	}
	b := make([]byte, 0, len(resource)+len(fullURL)+64+len(extra))
	if bw.n > 0 {
		b = append(b, ',')
	} else {
		b = append(b, `,"entry":[`...)
	}
	b = append(b, `{"fullUrl":`...)
	b = appendString(b, fullURL)
	if resource != nil {
		b = append(b, `,"resource":`...)
		b = append(b, resource...)
	}
	if bw.mode != "" {
		b = append(b, `,"search":{"mode":`...)
		b = appendString(b, bw.mode)
		b = append(b, '}')
	}
	if extra != nil {
		b = append(b, ',')
		b = append(b, extra...)
	}
	b = append(b, '}')
	bw.n++
	_, bw.err = bw.w.Write(b)
	return bw.err
}

// Close ends the Bundle. An empty Bundle gets no entry element (FHIR
// forbids empty arrays).
func (bw *BundleWriter) Close() error {
	if bw.err != nil {
		return bw.err
	}
	end := "]}"
	if bw.n == 0 {
		end = "}"
	}
	_, bw.err = bw.w.Write([]byte(end))
	return bw.err
}

// AppendOutcome appends an OperationOutcome with issues (at least one:
// an informational "ok" when issues is empty).
func AppendOutcome(b []byte, issues []Issue) []byte {
	if len(issues) == 0 {
		issues = []Issue{{Severity: SeverityInformation, Code: CodeInformational, Details: "ok"}}
	}
	b = append(b, `{"resourceType":"OperationOutcome","issue":[`...)
	for i, is := range issues {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, `{"severity":`...)
		b = appendString(b, is.Severity)
		b = append(b, `,"code":`...)
		b = appendString(b, is.Code)
		if is.Details != "" {
			b = append(b, `,"details":{"text":`...)
			b = appendString(b, is.Details)
			b = append(b, '}')
		}
		if is.Diagnostics != "" {
			b = append(b, `,"diagnostics":`...)
			b = appendString(b, is.Diagnostics)
		}
		if is.Expression != "" {
			b = append(b, `,"expression":[`...)
			b = appendString(b, is.Expression)
			b = append(b, ']')
		}
		b = append(b, '}')
	}
	return append(b, "]}"...)
}

// IssuesOf returns the issues an error carries (an *Error's), or nil.
func IssuesOf(err error) []Issue {
	var fe *Error
	if errors.As(err, &fe) {
		return fe.Issues
	}
	return nil
}

// statusLine is "201 Created".
func statusLine(code int) string {
	return strconv.Itoa(code) + " " + http.StatusText(code)
}

// AppendJSON appends the response Bundle.
func (r *BundleResult) AppendJSON(b []byte) []byte {
	b = append(b, `{"resourceType":"Bundle","type":`...)
	b = appendString(b, r.Type)
	if len(r.Entries) == 0 {
		return append(b, '}')
	}
	b = append(b, `,"entry":[`...)
	for i, e := range r.Entries {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, '{')
		if e.Resource != nil {
			b = append(b, `"resource":`...)
			b = append(b, e.Resource...)
			b = append(b, ',')
		}
		b = append(b, `"response":{"status":`...)
		b = appendString(b, statusLine(e.Status))
		if l := e.Location(); l != "" {
			b = append(b, `,"location":`...)
			b = appendString(b, l)
			b = append(b, `,"etag":`...)
			b = appendString(b, e.ETag())
		}
		if e.LastModified != "" {
			b = append(b, `,"lastModified":`...)
			b = appendString(b, e.LastModified)
		}
		switch {
		case e.Err != nil:
			b = append(b, `,"outcome":`...)
			b = AppendOutcome(b, IssuesOf(e.Err))
		case len(e.Warnings) > 0:
			b = append(b, `,"outcome":`...)
			b = AppendOutcome(b, e.Warnings)
		}
		b = append(b, "}}"...)
	}
	return append(b, "]}"...)
}
