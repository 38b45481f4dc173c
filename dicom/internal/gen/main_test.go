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

// TestDictUpToDate fails when dicom/dict_gen.go differs from the
// dictionary of the github.com/suyashkumar/dicom version in go.mod.
func TestDictUpToDate(t *testing.T) {
	testenv.LookPath(t, "go", "install Go")
	want, err := generateDict()
	if err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(filepath.Join("..", "..", "dict_gen.go"))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatal("dicom/dict_gen.go is out of date: run go generate ./dicom/")
	}
}
