package fhir

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"unicode/utf8"
)

// The ingest path works on two views of each resource: the typed proto of
// github.com/google/fhir (validation only, then dropped) and a plain JSON
// tree (map[string]any with json.Number), which is what gets edited
// (references, id, meta) and stored. Decoding the tree costs a fraction of
// the proto parse, and writing it back with [appendResource] gives a
// canonical form whose first bytes are known, so that meta.versionId and
// meta.lastUpdated can be spliced in at read time (see [spliceMeta]).

// object is a JSON object of the tree.
type object = map[string]any

// decodeTree decodes one JSON value, keeping numbers as written.
func decodeTree(raw []byte) (any, error) {
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, syntaxIssue(raw, err)
	}
	if _, err := dec.Token(); err == nil {
		return nil, newError(ErrMalformed, CodeStructure, "", "data after the JSON value")
	}
	return v, nil
}

// syntaxIssue turns a JSON decoding error into a validation error that says
// where the document broke, without quoting it.
func syntaxIssue(raw []byte, err error) error {
	var se *json.SyntaxError
	var te *json.UnmarshalTypeError
	details := "invalid JSON"
	switch {
	case errors.As(err, &se):
		line, col := position(raw, se.Offset)
		details = fmt.Sprintf("invalid JSON at line %d, column %d (byte %d)", line, col, se.Offset)
	case errors.As(err, &te):
		line, col := position(raw, te.Offset)
		details = fmt.Sprintf("invalid JSON value at line %d, column %d", line, col)
	case errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, io.EOF):
		details = "invalid JSON: unexpected end of input"
	}
	return &Error{Kind: ErrMalformed, Entry: -1, Issues: []Issue{{Severity: SeverityError, Code: CodeStructure, Details: details, Diagnostics: err.Error()}}}
}

// position returns the 1-based line and column of byte offset off.
func position(raw []byte, off int64) (line, col int) {
	if off > int64(len(raw)) {
		off = int64(len(raw))
	}
	before := raw[:off]
	line = bytes.Count(before, []byte{'\n'}) + 1
	col = int(off) - bytes.LastIndexByte(before, '\n')
	return line, col
}

// checkElements enforces the FHIR JSON rules that the proto parser lets
// through: no empty objects, arrays or strings, and null only inside the
// arrays that align a repeating primitive with its "_name" extensions.
func checkElements(v any, path string, issues *[]Issue) {
	switch t := v.(type) {
	case object:
		if len(t) == 0 {
			*issues = append(*issues, Issue{Severity: SeverityError, Code: CodeInvalid, Expression: path, Details: "empty object (FHIR elements must have a value or children)"})
			return
		}
		for k, c := range t { // issues are sorted by the caller
			p := joinPath(path, k)
			if c == nil {
				*issues = append(*issues, Issue{Severity: SeverityError, Code: CodeInvalid, Expression: p, Details: "null value"})
				continue
			}
			if arr, ok := c.([]any); ok {
				_, aligned := t[pairKey(k)]
				checkArray(arr, p, aligned, issues)
				continue
			}
			if k == "div" {
				continue // XHTML; the parser checks it is a string
			}
			checkElements(c, p, issues)
		}
	case string:
		if t == "" {
			*issues = append(*issues, Issue{Severity: SeverityError, Code: CodeInvalid, Expression: path, Details: "empty string (FHIR primitives must have a value)"})
		}
	}
}

func checkArray(arr []any, path string, aligned bool, issues *[]Issue) {
	if len(arr) == 0 {
		*issues = append(*issues, Issue{Severity: SeverityError, Code: CodeInvalid, Expression: path, Details: "empty array (FHIR arrays must not be empty)"})
		return
	}
	nulls := 0
	for i, e := range arr {
		p := path + "[" + strconv.Itoa(i) + "]"
		if e == nil {
			nulls++
			if !aligned {
				*issues = append(*issues, Issue{Severity: SeverityError, Code: CodeInvalid, Expression: p, Details: "null array element outside a primitive extension alignment"})
			}
			continue
		}
		checkElements(e, p, issues)
	}
	if nulls == len(arr) {
		*issues = append(*issues, Issue{Severity: SeverityError, Code: CodeInvalid, Expression: path, Details: "array of nulls"})
	}
}

// pairKey returns the key that holds a primitive's extensions ("_given")
// for its value key ("given"), and the other way round.
func pairKey(k string) string {
	if strings.HasPrefix(k, "_") {
		return k[1:]
	}
	return "_" + k
}

func joinPath(path, k string) string {
	if path == "" {
		return k
	}
	return path + "." + k
}

func sortedKeys(m object) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// appendResource appends the canonical encoding of a resource: resourceType,
// id and meta first (meta always present, possibly empty, so that its
// opening brace sits at a known offset), then the other elements with keys
// in byte order, no insignificant whitespace, no HTML escaping.
func appendResource(b []byte, typ, id string, res object) []byte {
	b = append(b, `{"resourceType":`...)
	b = appendString(b, typ)
	b = append(b, `,"id":`...)
	b = appendString(b, id)
	b = append(b, `,"meta":{`...)
	if m, ok := res["meta"].(object); ok {
		first := true
		for _, k := range sortedKeys(m) {
			if k == "versionId" || k == "lastUpdated" {
				continue
			}
			if !first {
				b = append(b, ',')
			}
			first = false
			b = appendString(b, k)
			b = append(b, ':')
			b = appendValue(b, m[k])
		}
	}
	b = append(b, '}')
	for _, k := range sortedKeys(res) {
		switch k {
		case "resourceType", "id", "meta":
			continue
		}
		b = append(b, ',')
		b = appendString(b, k)
		b = append(b, ':')
		b = appendValue(b, res[k])
	}
	return append(b, '}')
}

// metaOffset returns the offset just after `"meta":{` in a resource
// encoded by appendResource.
func metaOffset(typ, id string) int {
	return len(`{"resourceType":"`) + len(typ) + len(`","id":"`) + len(id) + len(`","meta":{`)
}

// spliceMeta returns body with meta.versionId and meta.lastUpdated added;
// body must come from appendResource for typ and id, whose characters need
// no JSON escaping (FHIR ids and type names never do).
func spliceMeta(dst, body []byte, typ, id, versionID, lastUpdated string) ([]byte, error) {
	off := metaOffset(typ, id)
	if len(body) <= off || body[off-1] != '{' || !bytes.HasPrefix(body, []byte(`{"resourceType":"`+typ+`","id":"`+id+`","meta":{`)) {
		return nil, errors.New("fhir: stored resource is not in canonical form")
	}
	dst = append(dst, body[:off]...)
	dst = append(dst, `"versionId":"`...)
	dst = append(dst, versionID...)
	dst = append(dst, `","lastUpdated":"`...)
	dst = append(dst, lastUpdated...)
	dst = append(dst, '"')
	if body[off] != '}' {
		dst = append(dst, ',')
	}
	return append(dst, body[off:]...), nil
}

// appendUnordered appends the JSON encoding of a tree value with object
// keys in map order: the parser's input, where order does not matter and
// sorting would only cost.
func appendUnordered(b []byte, v any) []byte {
	switch t := v.(type) {
	case []any:
		b = append(b, '[')
		for i, e := range t {
			if i > 0 {
				b = append(b, ',')
			}
			b = appendUnordered(b, e)
		}
		return append(b, ']')
	case object:
		b = append(b, '{')
		first := true
		for k, c := range t {
			if !first {
				b = append(b, ',')
			}
			first = false
			b = appendString(b, k)
			b = append(b, ':')
			b = appendUnordered(b, c)
		}
		return append(b, '}')
	default:
		return appendValue(b, v)
	}
}

// appendValue appends the JSON encoding of a tree value. In every object
// "resourceType" comes first (contained resources read better), then the
// other keys in byte order.
func appendValue(b []byte, v any) []byte {
	switch t := v.(type) {
	case nil:
		return append(b, "null"...)
	case bool:
		if t {
			return append(b, "true"...)
		}
		return append(b, "false"...)
	case json.Number:
		return append(b, t...)
	case string:
		return appendString(b, t)
	case []any:
		b = append(b, '[')
		for i, e := range t {
			if i > 0 {
				b = append(b, ',')
			}
			b = appendValue(b, e)
		}
		return append(b, ']')
	case object:
		b = append(b, '{')
		first := true
		if rt, ok := t["resourceType"]; ok {
			b = append(b, `"resourceType":`...)
			b = appendValue(b, rt)
			first = false
		}
		for _, k := range sortedKeys(t) {
			if k == "resourceType" {
				continue
			}
			if !first {
				b = append(b, ',')
			}
			first = false
			b = appendString(b, k)
			b = append(b, ':')
			b = appendValue(b, t[k])
		}
		return append(b, '}')
	case float64: // not produced by decodeTree; kept for values built in code
		return strconv.AppendFloat(b, t, 'g', -1, 64)
	case int:
		return strconv.AppendInt(b, int64(t), 10)
	default:
		panic(fmt.Sprintf("fhir: cannot encode %T", v))
	}
}

const hexDigits = "0123456789abcdef"

// appendString appends s as a JSON string: quotes, backslashes and control
// characters escaped, everything else (including non-ASCII) as UTF-8.
func appendString(b []byte, s string) []byte {
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c >= 0x20 && c != '"' && c != '\\' && c < utf8.RuneSelf {
			i++
			continue
		}
		if c >= utf8.RuneSelf {
			r, size := utf8.DecodeRuneInString(s[i:])
			if r == utf8.RuneError && size == 1 {
				b = append(b, s[start:i]...)
				b = append(b, `\ufffd`...)
				i++
				start = i
				continue
			}
			i += size
			continue
		}
		b = append(b, s[start:i]...)
		switch c {
		case '"', '\\':
			b = append(b, '\\', c)
		case '\n':
			b = append(b, '\\', 'n')
		case '\r':
			b = append(b, '\\', 'r')
		case '\t':
			b = append(b, '\\', 't')
		default:
			b = append(b, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
		}
		i++
		start = i
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}
