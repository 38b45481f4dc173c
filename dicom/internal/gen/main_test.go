package main

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"

	"github.com/consilium/consilium/internal/testenv"
)

// TestGeneratedUpToDate fails when dicom/tables_gen.go differs from what
// the reference CSVs generate: run go generate ./dicom/.
func TestGeneratedUpToDate(t *testing.T) {
	ref, err := defaultRef()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(ref); err != nil {
		testenv.Missing(t, "../shared/reference", "the shared reference data must sit next to the repository")
	}
	want, err := generate(ref)
	if err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(filepath.Join("..", "..", "tables_gen.go"))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatal("dicom/tables_gen.go is out of date: run go generate ./dicom/")
	}
}
