package dicom_test

import (
	"bytes"
	"compress/flate"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/consilium/consilium/deid"
	"github.com/consilium/consilium/dicom"
	"github.com/consilium/consilium/internal/testenv"
)

// sharedDir finds ../shared next to the directory holding go.mod.
func sharedDir(t testing.TB) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			break
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatal("go.mod not found")
		}
		dir = parent
	}
	shared := filepath.Join(dir, "..", "shared")
	if _, err := os.Stat(filepath.Join(shared, "testdata", "dicom")); err != nil {
		testenv.Missing(t, "../shared/testdata", "the shared test corpus must sit next to the repository")
	}
	return shared
}

// corpus lists the DICOM test files: valid ones and those under invalid/.
func corpus(t testing.TB) (valid, invalid []string) {
	t.Helper()
	root := filepath.Join(sharedDir(t), "testdata", "dicom")
	err := filepath.WalkDir(root, func(p string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		if strings.Contains(p, string(filepath.Separator)+"invalid"+string(filepath.Separator)) {
			invalid = append(invalid, p)
		} else {
			valid = append(valid, p)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	sort.Strings(valid)
	sort.Strings(invalid)
	if len(valid) < 40 || len(invalid) < 10 {
		t.Fatalf("corpus too small: %d valid, %d invalid", len(valid), len(invalid))
	}
	return valid, invalid
}

func rel(t testing.TB, p string) string {
	r, err := filepath.Rel(filepath.Join(sharedDir(t), "testdata", "dicom"), p)
	if err != nil {
		return p
	}
	return filepath.ToSlash(r)
}

var testSecret = bytes.Repeat([]byte{0x5a}, 32)

func keyedSource(t testing.TB) *deid.Keyed {
	t.Helper()
	k, err := deid.NewKeyed(testSecret, deid.KeyedOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// testKey is the CLI's rule: Patient ID, else the study.
func testKey(s dicom.Summary) (string, error) {
	if s.PatientID != "" {
		return "pid|" + s.PatientID, nil
	}
	return "study|" + s.StudyInstanceUID + s.SOPInstanceUID, nil
}

func newDeidentifier(t testing.TB, profile string, src deid.Source) *dicom.Deidentifier {
	t.Helper()
	p, err := deid.ParseDICOMProfile(profile)
	if err != nil {
		t.Fatal(err)
	}
	d, err := dicom.NewDeidentifier(dicom.Options{Profile: p, Source: src, Reader: dicom.ReaderOptions{AllowNoMeta: true}})
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// datasetBytes returns the dataset part of a Part 10 file (after the File
// Meta), inflated when deflated, so that byte scans see every value.
func datasetBytes(t testing.TB, file []byte) []byte {
	t.Helper()
	rd, err := dicom.NewReader(bytes.NewReader(file), dicom.ReaderOptions{AllowNoMeta: true})
	if err != nil {
		t.Fatal(err)
	}
	start := rd.Offset()
	if !rd.TransferSyntax().Deflated {
		return file[start:]
	}
	b, err := io.ReadAll(flate.NewReader(bytes.NewReader(file[start:])))
	if err != nil {
		t.Fatalf("inflating: %v", err)
	}
	return b
}

// pixelRange returns where the top-level Pixel Data value sits in the
// (inflated) dataset bytes returned by datasetBytes, or ok false.
func pixelRange(t testing.TB, file []byte) (start, end int64, ok bool) {
	t.Helper()
	rd, err := dicom.NewReader(bytes.NewReader(file), dicom.ReaderOptions{AllowNoMeta: true})
	if err != nil {
		t.Fatal(err)
	}
	base := rd.Offset()
	for {
		e, err := rd.Next()
		if err == io.EOF {
			return 0, 0, false
		}
		if err != nil {
			t.Fatal(err)
		}
		if e.Tag == dicom.NewTag(0x7FE0, 0x0010) && e.Value == nil {
			start = rd.Offset()
			if _, err := io.Copy(io.Discard, rd.PixelData()); err != nil {
				t.Fatal(err)
			}
			return start - base, rd.Offset() - base, true
		}
	}
}
