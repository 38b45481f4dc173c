package audit

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strconv"
	"unicode/utf16"
	"unicode/utf8"
)

// maxSafeInteger is the largest integer that RFC 8785 (which prints
// numbers as ECMAScript does) and every JSON reader represent exactly.
const maxSafeInteger = 1<<53 - 1

// errCanonical is wrapped by every canonicalisation error.
var errCanonical = errors.New("not canonicalisable JSON")

// canonicalJSON returns the RFC 8785 (JSON Canonicalization Scheme)
// form of the JSON text in data, restricted to what audit records use:
// objects, arrays, strings, booleans, null and integers of magnitude at
// most 2^53-1. Members are sorted by the UTF-16 code units of their
// names, there is no whitespace, strings escape only '"', '\\' and
// control characters (\b \t \n \f \r, others as lower-case \u00xx), and
// every other character is written as UTF-8. Duplicate member names,
// invalid UTF-8, fractions and exponents are refused.
func canonicalJSON(data []byte) ([]byte, error) {
	if !utf8.Valid(data) {
		return nil, fmt.Errorf("%w: invalid UTF-8", errCanonical)
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	var buf bytes.Buffer
	if err := canonicalValue(dec, &buf, 0); err != nil {
		return nil, err
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("%w: data after the value", errCanonical)
	}
	return buf.Bytes(), nil
}

// maxDepth bounds nesting, so hostile input cannot exhaust the stack.
const maxDepth = 32

func canonicalValue(dec *json.Decoder, buf *bytes.Buffer, depth int) error {
	if depth > maxDepth {
		return fmt.Errorf("%w: nested deeper than %d", errCanonical, maxDepth)
	}
	tok, err := dec.Token()
	if err != nil {
		return fmt.Errorf("%w: %v", errCanonical, err)
	}
	switch t := tok.(type) {
	case json.Delim:
		switch t {
		case '{':
			return canonicalObject(dec, buf, depth)
		case '[':
			buf.WriteByte('[')
			for i := 0; dec.More(); i++ {
				if i > 0 {
					buf.WriteByte(',')
				}
				if err := canonicalValue(dec, buf, depth+1); err != nil {
					return err
				}
			}
			if _, err := dec.Token(); err != nil { // ']'
				return fmt.Errorf("%w: %v", errCanonical, err)
			}
			buf.WriteByte(']')
			return nil
		}
		return fmt.Errorf("%w: unexpected %v", errCanonical, t)
	case string:
		writeCanonicalString(buf, t)
	case json.Number:
		n, err := strconv.ParseInt(string(t), 10, 64)
		if err != nil || n > maxSafeInteger || n < -maxSafeInteger {
			return fmt.Errorf("%w: number %s is not an integer of at most 2^53-1", errCanonical, t)
		}
		buf.WriteString(strconv.FormatInt(n, 10))
	case bool:
		buf.WriteString(strconv.FormatBool(t))
	case nil:
		buf.WriteString("null")
	default:
		return fmt.Errorf("%w: unexpected token %T", errCanonical, tok)
	}
	return nil
}

func canonicalObject(dec *json.Decoder, buf *bytes.Buffer, depth int) error {
	type member struct {
		name  string
		key   []uint16
		value []byte
	}
	var members []member
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return fmt.Errorf("%w: %v", errCanonical, err)
		}
		name, ok := tok.(string)
		if !ok {
			return fmt.Errorf("%w: member name %v", errCanonical, tok)
		}
		var vb bytes.Buffer
		if err := canonicalValue(dec, &vb, depth+1); err != nil {
			return err
		}
		members = append(members, member{name, utf16.Encode([]rune(name)), vb.Bytes()})
	}
	if _, err := dec.Token(); err != nil { // '}'
		return fmt.Errorf("%w: %v", errCanonical, err)
	}
	slices.SortFunc(members, func(a, b member) int { return slices.Compare(a.key, b.key) })
	buf.WriteByte('{')
	for i, m := range members {
		if i > 0 {
			if members[i-1].name == m.name {
				return fmt.Errorf("%w: duplicate member %q", errCanonical, m.name)
			}
			buf.WriteByte(',')
		}
		writeCanonicalString(buf, m.name)
		buf.WriteByte(':')
		buf.Write(m.value)
	}
	buf.WriteByte('}')
	return nil
}

func writeCanonicalString(buf *bytes.Buffer, s string) {
	const hex = "0123456789abcdef"
	buf.WriteByte('"')
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '"' || c == '\\':
			buf.WriteByte('\\')
			buf.WriteByte(c)
		case c == '\b':
			buf.WriteString(`\b`)
		case c == '\t':
			buf.WriteString(`\t`)
		case c == '\n':
			buf.WriteString(`\n`)
		case c == '\f':
			buf.WriteString(`\f`)
		case c == '\r':
			buf.WriteString(`\r`)
		case c < 0x20:
			buf.WriteString(`\u00`)
			buf.WriteByte(hex[c>>4])
			buf.WriteByte(hex[c&0xf])
		default:
			buf.WriteByte(c)
		}
	}
	buf.WriteByte('"')
}
