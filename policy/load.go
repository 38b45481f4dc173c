package policy

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"path"
	"slices"
	"strings"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/bundle"
	"github.com/open-policy-agent/opa/v1/loader/filter"
)

// Limits bound what a bundle may hold. The zero value of a field means its
// default.
type Limits struct {
	// MaxArchiveBytes bounds the compressed tar.gz. Default 4 MiB.
	MaxArchiveBytes int64
	// MaxBytes bounds the sum of the uncompressed files. Default 32 MiB.
	MaxBytes int64
	// MaxFiles bounds the number of files. Default 1000.
	MaxFiles int
}

func (l Limits) withDefaults() Limits {
	if l.MaxArchiveBytes <= 0 {
		l.MaxArchiveBytes = 4 << 20
	}
	if l.MaxBytes <= 0 {
		l.MaxBytes = 32 << 20
	}
	if l.MaxFiles <= 0 {
		l.MaxFiles = 1000
	}
	return l
}

// bundleFiles are the regular files of a bundle, by clean slash path without
// a leading slash. Every bundle, whether uploaded, on disk or embedded,
// becomes one of these first, so all go through the same checks.
type bundleFiles map[string][]byte

// readArchive reads an OPA bundle archive (gzip-compressed tar, as `opa
// build` writes) within the limits. Problems it finds are all returned; it
// never writes anything to disk.
func readArchive(r io.Reader, lim Limits) (bundleFiles, []Problem) {
	lim = lim.withDefaults()
	raw, err := io.ReadAll(io.LimitReader(r, lim.MaxArchiveBytes+1))
	if err != nil {
		return nil, []Problem{{Message: fmt.Sprintf("read bundle: %v", err)}}
	}
	if int64(len(raw)) > lim.MaxArchiveBytes {
		return nil, []Problem{{Message: fmt.Sprintf("bundle archive is larger than %d bytes", lim.MaxArchiveBytes)}}
	}
	return parseArchive(raw, lim)
}

func parseArchive(raw []byte, lim Limits) (bundleFiles, []Problem) {
	gz, err := gzip.NewReader(bytes.NewReader(raw))
	if err != nil {
		return nil, []Problem{{Message: fmt.Sprintf("bundle is not a gzip-compressed tar archive: %v", err)}}
	}
	tr := tar.NewReader(gz)
	files := bundleFiles{}
	var problems []Problem
	var total int64
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, append(problems, Problem{Message: fmt.Sprintf("bundle archive is corrupt: %v", err)})
		}
		switch h.Typeflag {
		case tar.TypeDir:
			continue
		case tar.TypeReg:
		case tar.TypeXGlobalHeader:
			continue
		default:
			problems = append(problems, Problem{File: h.Name, Message: "not a regular file (links and devices are refused)"})
			continue
		}
		name, ok := cleanBundlePath(h.Name)
		if !ok {
			problems = append(problems, Problem{File: h.Name, Message: "unsafe path (absolute after cleaning, '..', backslash or control character)"})
			continue
		}
		if _, dup := files[name]; dup {
			problems = append(problems, Problem{File: name, Message: "appears twice in the archive"})
			continue
		}
		if len(files) >= lim.MaxFiles {
			return nil, append(problems, Problem{Message: fmt.Sprintf("bundle has more than %d files", lim.MaxFiles)})
		}
		// Read at most what is left of the budget, plus one byte to
		// notice going over; the header's size is not trusted.
		b, err := io.ReadAll(io.LimitReader(tr, lim.MaxBytes-total+1))
		if err != nil {
			return nil, append(problems, Problem{File: name, Message: fmt.Sprintf("read: %v", err)})
		}
		total += int64(len(b))
		if total > lim.MaxBytes {
			return nil, append(problems, Problem{Message: fmt.Sprintf("bundle holds more than %d bytes uncompressed", lim.MaxBytes)})
		}
		files[name] = b
	}
	if len(problems) > 0 {
		return nil, problems
	}
	return files, nil
}

// cleanBundlePath turns an archive entry name into a clean relative path.
// OPA writes names with a leading slash; that is accepted, anything that
// climbs out of the bundle is not.
func cleanBundlePath(name string) (string, bool) {
	if name == "" || strings.ContainsAny(name, "\\\x00") {
		return "", false
	}
	for _, r := range name {
		if r < 0x20 || r == 0x7f {
			return "", false
		}
	}
	rel := strings.TrimPrefix(name, "/")
	if slices.Contains(strings.Split(rel, "/"), "..") {
		return "", false
	}
	clean := path.Clean(rel)
	if clean == "." || strings.HasPrefix(clean, "/") {
		return "", false
	}
	return clean, true
}

// bundleFileNames are the files OPA reads from a bundle; others in a
// directory (Go files, READMEs) are left alone.
func isBundleFile(name string) bool {
	base := path.Base(name)
	return strings.HasSuffix(base, ".rego") || base == "data.json" || base == "data.yaml" ||
		base == "data.yml" || base == ".manifest"
}

// readFS reads a bundle directory (for example one checked out from a
// repository, or the embedded default) within the limits.
func readFS(fsys fs.FS, lim Limits) (bundleFiles, []Problem) {
	lim = lim.withDefaults()
	files := bundleFiles{}
	var total int64
	err := fs.WalkDir(fsys, ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() || !isBundleFile(p) {
			return nil
		}
		if !d.Type().IsRegular() {
			return fmt.Errorf("%s: not a regular file", p)
		}
		if len(files) >= lim.MaxFiles {
			return fmt.Errorf("bundle has more than %d files", lim.MaxFiles)
		}
		b, err := fs.ReadFile(fsys, p)
		if err != nil {
			return err
		}
		total += int64(len(b))
		if total > lim.MaxBytes {
			return fmt.Errorf("bundle holds more than %d bytes", lim.MaxBytes)
		}
		files[p] = b
		return nil
	})
	if err != nil {
		return nil, []Problem{{Message: fmt.Sprintf("read bundle directory: %v", err)}}
	}
	return files, nil
}

// parse turns the files into an OPA bundle. Every module is parsed on its
// own first so that all syntax errors are reported, not just the first.
func (files bundleFiles) parse(lim Limits) (*bundle.Bundle, []Problem) {
	lim = lim.withDefaults()
	var problems []Problem
	popts := ast.ParserOptions{RegoVersion: ast.RegoV1, ProcessAnnotation: true, Capabilities: capabilities()}
	for _, name := range files.names() {
		if !strings.HasSuffix(name, ".rego") {
			continue
		}
		if _, err := ast.ParseModuleWithOpts("/"+name, string(files[name]), popts); err != nil {
			problems = append(problems, astProblems(err)...)
		}
	}
	if len(problems) > 0 {
		return nil, problems
	}
	b, err := bundle.NewCustomReader(&memLoader{files: files, names: files.names()}).
		WithRegoVersion(ast.RegoV1).
		WithCapabilities(capabilities()).
		WithProcessAnnotations(true).
		WithSkipBundleVerification(true).
		WithSizeLimitBytes(lim.MaxBytes).
		Read()
	if err != nil {
		return nil, astProblems(err)
	}
	return &b, nil
}

func (files bundleFiles) names() []string {
	names := make([]string, 0, len(files))
	for n := range files {
		names = append(names, n)
	}
	slices.Sort(names)
	return names
}

// memLoader hands bundleFiles to OPA's bundle reader, in name order and
// with the leading slash OPA's own archive loader gives them.
type memLoader struct {
	files bundleFiles
	names []string
	next  int
}

var _ bundle.DirectoryLoader = (*memLoader)(nil)

func (l *memLoader) NextFile() (*bundle.Descriptor, error) {
	if l.next >= len(l.names) {
		return nil, io.EOF
	}
	name := l.names[l.next]
	l.next++
	return bundle.NewDescriptor("/"+name, "/"+name, bytes.NewBuffer(l.files[name])), nil
}

// The options below are for loaders that walk real files; the files here
// are already read and checked.
func (l *memLoader) WithFilter(filter.LoaderFilter) bundle.DirectoryLoader   { return l }
func (l *memLoader) WithPathFormat(bundle.PathFormat) bundle.DirectoryLoader { return l }
func (l *memLoader) WithSizeLimitBytes(int64) bundle.DirectoryLoader         { return l }
func (l *memLoader) WithFollowSymlinks(bool) bundle.DirectoryLoader          { return l }

// astProblems turns OPA errors (one error or a list with locations) into
// problems.
func astProblems(err error) []Problem {
	var errs ast.Errors
	if errors.As(err, &errs) {
		out := make([]Problem, 0, len(errs))
		for _, e := range errs {
			out = append(out, astProblem(e))
		}
		return out
	}
	var one *ast.Error
	if errors.As(err, &one) {
		return []Problem{astProblem(one)}
	}
	return []Problem{{Message: err.Error()}}
}

func astProblem(e *ast.Error) Problem {
	p := Problem{Message: e.Code + ": " + e.Message}
	if e.Location != nil {
		p.File = strings.TrimPrefix(e.Location.File, "/")
		p.Row = e.Location.Row
	}
	return p
}
