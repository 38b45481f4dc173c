package storage

import (
	"fmt"
	"strings"
)

// MaxNameLen is the longest valid object name, in bytes.
const MaxNameLen = 512

// Limits on what is stored next to an object. They follow what S3 allows
// for user metadata (2 KiB in all), so that every backend accepts the same
// inputs.
const (
	// MaxMetadataSize is the total size of metadata keys and values.
	MaxMetadataSize = 2048
	// MaxContentTypeLen is the longest content type.
	MaxContentTypeLen = 256
)

// ValidName reports whether name is a valid object name: slash-separated
// segments of lower-case letters, digits and "._-", with no empty, "." or
// ".." segment, no leading or trailing slash, at most [MaxNameLen] bytes.
// The error wraps [ErrInvalidName]. Every backend checks names with it.
//
// One rule cannot be checked one name at a time: a name must not also be
// a folder of other names (objects "a" and "a/b" together), because
// MinIO cannot hold both; the filesystem backend can, but portable
// callers must not rely on it.
func ValidName(name string) error {
	if name == "" {
		return fmt.Errorf("%w: empty", ErrInvalidName)
	}
	if len(name) > MaxNameLen {
		return fmt.Errorf("%w: longer than %d bytes", ErrInvalidName, MaxNameLen)
	}
	for seg := range strings.SplitSeq(name, "/") {
		if err := validSegment(seg); err != nil {
			return err
		}
	}
	return nil
}

// ValidSegment reports whether seg is valid as one segment of a name.
func validSegment(seg string) error {
	switch seg {
	case "":
		return fmt.Errorf("%w: empty segment", ErrInvalidName)
	case ".", "..":
		return fmt.Errorf("%w: %q segment", ErrInvalidName, seg)
	}
	for i := 0; i < len(seg); i++ {
		if !nameByte(seg[i]) {
			return fmt.Errorf("%w: byte 0x%02x not allowed", ErrInvalidName, seg[i])
		}
	}
	return nil
}

func nameByte(c byte) bool {
	return 'a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '.' || c == '_' || c == '-'
}

// ValidPrefix reports whether prefix can be given to [Store.List]: empty,
// or made only of bytes allowed in names and slashes, with no leading or
// doubled slash, at most [MaxNameLen] bytes. A prefix need not end at a segment boundary. The
// error wraps [ErrInvalidName].
func ValidPrefix(prefix string) error {
	if len(prefix) > MaxNameLen {
		return fmt.Errorf("%w: prefix longer than %d bytes", ErrInvalidName, MaxNameLen)
	}
	for i := 0; i < len(prefix); i++ {
		if c := prefix[i]; !nameByte(c) && c != '/' {
			return fmt.Errorf("%w: prefix byte 0x%02x not allowed", ErrInvalidName, c)
		}
	}
	if strings.HasPrefix(prefix, "/") || strings.Contains(prefix, "//") {
		return fmt.Errorf("%w: prefix has an empty segment", ErrInvalidName)
	}
	return nil
}

// ValidMetadata reports whether meta and contentType can be stored with an
// object on every backend: keys of lower-case letters, digits and '-'
// (starting with a letter or digit), values of printable ASCII without
// leading or trailing spaces (they travel as HTTP headers on MinIO), at
// most [MaxMetadataSize] bytes in all, and a content type of printable
// ASCII of at most [MaxContentTypeLen] bytes. The error wraps
// [ErrInvalidMetadata].
func ValidMetadata(contentType string, meta map[string]string) error {
	if len(contentType) > MaxContentTypeLen {
		return fmt.Errorf("%w: content type longer than %d bytes", ErrInvalidMetadata, MaxContentTypeLen)
	}
	if !printable(contentType) {
		return fmt.Errorf("%w: content type is not printable ASCII", ErrInvalidMetadata)
	}
	total := 0
	for k, v := range meta {
		total += len(k) + len(v)
		if k == "" || k[0] == '-' {
			return fmt.Errorf("%w: key %q", ErrInvalidMetadata, k)
		}
		for i := 0; i < len(k); i++ {
			if c := k[i]; !('a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '-') {
				return fmt.Errorf("%w: key %q has byte 0x%02x", ErrInvalidMetadata, k, c)
			}
		}
		if !printable(v) || strings.TrimSpace(v) != v {
			// Values are not echoed: they might hold something the
			// caller should not have put there.
			return fmt.Errorf("%w: value of key %q is not trimmed printable ASCII", ErrInvalidMetadata, k)
		}
	}
	if total > MaxMetadataSize {
		return fmt.Errorf("%w: %d bytes, more than %d", ErrInvalidMetadata, total, MaxMetadataSize)
	}
	return nil
}

func printable(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < 0x20 || s[i] > 0x7e {
			return false
		}
	}
	return true
}

// checkPut validates the arguments common to every backend's Put.
func checkPut(name string, opts PutOptions) error {
	if err := ValidName(name); err != nil {
		return err
	}
	if opts.Size < 0 {
		return fmt.Errorf("storage: put %s: negative size %d", name, opts.Size)
	}
	if opts.IfAbsent && opts.IfMatch != "" {
		return fmt.Errorf("storage: put %s: IfAbsent and IfMatch are exclusive", name)
	}
	if err := ValidMetadata(opts.ContentType, opts.Metadata); err != nil {
		return fmt.Errorf("storage: put %s: %w", name, err)
	}
	if r := opts.Retention; r != nil {
		if r.Mode != Governance && r.Mode != Compliance {
			return fmt.Errorf("storage: put %s: unknown retention mode %q", name, r.Mode)
		}
		if r.Until.IsZero() {
			return fmt.Errorf("storage: put %s: retention without an end", name)
		}
	}
	return nil
}

// checkRange validates GetOptions against an object of the given size and
// returns the byte range [off, off+n) to serve. A range that runs past
// the end is cut at the end, as HTTP does; one that starts past the end
// is ErrInvalidRange.
func checkRange(opts GetOptions, size int64) (off, n int64, err error) {
	if opts.Offset < 0 || opts.Length < 0 {
		return 0, 0, fmt.Errorf("%w: negative offset or length", ErrInvalidRange)
	}
	if opts.Offset > size {
		return 0, 0, fmt.Errorf("%w: offset %d past the end (%d bytes)", ErrInvalidRange, opts.Offset, size)
	}
	n = size - opts.Offset
	if opts.Length > 0 && opts.Length < n {
		n = opts.Length
	}
	return opts.Offset, n, nil
}

// DefaultContentType is the content type reported for objects stored
// without one, as S3 does.
const DefaultContentType = "application/octet-stream"

func contentTypeOrDefault(ct string) string {
	if ct == "" {
		return DefaultContentType
	}
	return ct
}
