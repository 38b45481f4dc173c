package policy

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func tarGz(t testing.TB, entries ...*tar.Header) []byte {
	t.Helper()
	var buf bytes.Buffer
	gz := gzip.NewWriter(&buf)
	tw := tar.NewWriter(gz)
	for _, h := range entries {
		body := bytes.Repeat([]byte("x"), int(h.Size))
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		if h.Typeflag == tar.TypeReg {
			if _, err := tw.Write(body); err != nil {
				t.Fatal(err)
			}
		}
	}
	tw.Close()
	gz.Close()
	return buf.Bytes()
}

func TestReadArchiveLimits(t *testing.T) {
	small := Limits{MaxArchiveBytes: 1 << 20, MaxBytes: 4096, MaxFiles: 3}
	reg := func(name string, size int64) *tar.Header {
		return &tar.Header{Name: name, Size: size, Mode: 0o644, Typeflag: tar.TypeReg}
	}
	tests := []struct {
		name string
		raw  []byte
		lim  Limits
		want string
	}{
		{"too many files", tarGz(t, reg("a.rego", 1), reg("b.rego", 1), reg("c.rego", 1), reg("d.rego", 1)), small, "more than 3 files"},
		{"too many bytes", tarGz(t, reg("a.rego", 3000), reg("b.rego", 3000)), small, "more than 4096 bytes uncompressed"},
		{"archive too large", tarGz(t, reg("a.rego", 10)), Limits{MaxArchiveBytes: 16}, "larger than 16 bytes"},
		{"symlink", tarGz(t, &tar.Header{Name: "a.rego", Linkname: "/etc/passwd", Typeflag: tar.TypeSymlink}), small, "not a regular file"},
		{"hard link", tarGz(t, &tar.Header{Name: "a.rego", Linkname: "b.rego", Typeflag: tar.TypeLink}), small, "not a regular file"},
		{"dot-dot", tarGz(t, reg("x/../../a.rego", 1)), small, "unsafe path"},
		{"backslash", tarGz(t, reg(`..\a.rego`, 1)), small, "unsafe path"},
		{"duplicate", tarGz(t, reg("/a.rego", 1), reg("a.rego", 1)), small, "appears twice"},
		{"truncated", tarGz(t, reg("a.rego", 100))[:40], small, "corrupt"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			files, problems := readArchive(bytes.NewReader(tt.raw), tt.lim)
			if files != nil || len(problems) == 0 {
				t.Fatalf("accepted: %v", files)
			}
			all := (&BundleError{Problems: problems}).Error()
			if !strings.Contains(all, tt.want) {
				t.Errorf("problems %q lack %q", all, tt.want)
			}
		})
	}
}

// TestReadArchiveGzipBomb: a highly compressed archive is stopped at the
// uncompressed budget, not read to its end.
func TestReadArchiveGzipBomb(t *testing.T) {
	bomb := tarGz(t, &tar.Header{Name: "data.json", Size: 16 << 20, Mode: 0o644, Typeflag: tar.TypeReg})
	if len(bomb) > 64<<10 {
		t.Fatalf("bomb is %d bytes compressed", len(bomb))
	}
	_, problems := readArchive(bytes.NewReader(bomb), Limits{MaxBytes: 1 << 20})
	if len(problems) != 1 || !strings.Contains(problems[0].Message, "uncompressed") {
		t.Errorf("problems %v", problems)
	}
}

func TestCheckDir(t *testing.T) {
	ctx := context.Background()
	rep, err := CheckDir(ctx, filepath.Join("builtin"))
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Tests) < 40 {
		t.Errorf("%d tests", len(rep.Tests))
	}
	dir := t.TempDir()
	for name, body := range builtinFiles(t) {
		p := filepath.Join(dir, filepath.FromSlash(name))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if name == "authz.rego" {
			body = strings.Replace(body, `"case.list", "case.read"`, `"case.list"`, 1)
		}
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	rep, err = CheckDir(ctx, dir)
	if !errors.Is(err, ErrInvalidBundle) {
		t.Fatalf("err = %v", err)
	}
	failed := 0
	for _, tr := range rep.Tests {
		if !tr.Pass {
			failed++
		}
	}
	if failed != 1 {
		t.Errorf("%d tests failed, want 1", failed)
	}
	archivePath := filepath.Join(t.TempDir(), "bundle.tar.gz")
	if err := os.WriteFile(archivePath, archive(t, builtinFiles(t)), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := CheckDir(ctx, archivePath); err != nil {
		t.Errorf("archive: %v", err)
	}
	if _, err := CheckDir(ctx, filepath.Join(dir, "missing")); !errors.Is(err, ErrInvalidBundle) {
		t.Errorf("missing dir: %v", err)
	}
}

// FuzzReadArchive: any bytes give files or problems, never a panic, and
// accepted paths are clean and relative.
func FuzzReadArchive(f *testing.F) {
	f.Add(archive(f, builtinFiles(f)))
	f.Add(tarGz(f, &tar.Header{Name: "../a.rego", Size: 3, Typeflag: tar.TypeReg}))
	f.Add(tarGz(f, &tar.Header{Name: "a", Linkname: "b", Typeflag: tar.TypeSymlink}))
	f.Add([]byte{0x1f, 0x8b, 0x08})
	f.Add([]byte("not an archive"))
	f.Fuzz(func(t *testing.T, raw []byte) {
		files, problems := readArchive(bytes.NewReader(raw), Limits{MaxArchiveBytes: 1 << 20, MaxBytes: 1 << 20, MaxFiles: 100})
		if files == nil && len(problems) == 0 {
			t.Fatal("neither files nor problems")
		}
		for name := range files {
			if strings.HasPrefix(name, "/") || strings.Contains(name, "..") || strings.Contains(name, `\`) {
				t.Fatalf("unsafe name %q accepted", name)
			}
		}
		if files != nil {
			files.parse(Limits{}) // must not panic
		}
	})
}
