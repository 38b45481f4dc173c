// Package dicomweb_test checks Consilium's DICOMweb API with a client
// written by others: the dicomweb-client npm package (the library the
// OHIF viewer uses) stores, searches and retrieves over mutual TLS, and
// dcmtk's dcmdump parses every instance it retrieved.
package dicomweb_test

import (
	"bytes"
	"encoding/json"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/consilium/consilium/dicom"
	"github.com/consilium/consilium/gateway/gatewaytest"
	"github.com/consilium/consilium/internal/testenv"
)

// moduleRoot is the folder holding go.mod.
func moduleRoot(t *testing.T) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatal("go.mod not found")
		}
		dir = parent
	}
}

// acceptedCorpus returns the corpus files a DICOM store accepts, one per
// SOP Instance UID, with their UIDs.
func acceptedCorpus(t *testing.T, root string) map[string]string {
	t.Helper()
	files := map[string]string{} // SOP Instance UID -> path
	err := filepath.WalkDir(root, func(p string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() || strings.Contains(p, "/invalid/") {
			return err
		}
		f, err := os.Open(p)
		if err != nil {
			return err
		}
		defer f.Close()
		res, err := dicom.Check(f, dicom.CheckOptions{})
		if err != nil {
			return nil // refused by the gateway too (see gateway tests)
		}
		if _, dup := files[res.Summary.SOPInstanceUID]; !dup {
			files[res.Summary.SOPInstanceUID] = p
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return files
}

type roundTrip struct {
	Stored map[string]string `json:"stored"`
	Failed []struct {
		SOP    string `json:"sop"`
		Reason int    `json:"reason"`
	} `json:"failed"`
	Studies []struct {
		Study      string   `json:"study"`
		PatientID  string   `json:"patientID"`
		Modalities []string `json:"modalities"`
		Series     []struct {
			Series    string   `json:"series"`
			Instances []string `json:"instances"`
		} `json:"series"`
	} `json:"studies"`
	Retrieved  map[string]string `json:"retrieved"`
	BulkData   map[string]int    `json:"bulkData"`
	WholeStudy struct {
		Study     string `json:"study"`
		Instances int    `json:"instances"`
	} `json:"wholeStudy"`
	ByPatientID struct {
		PatientID string `json:"patientID"`
		Studies   int    `json:"studies"`
	} `json:"byPatientID"`
}

func TestDICOMwebClient(t *testing.T) {
	node := testenv.LookPath(t, "node", "apt-get install nodejs npm")
	dcmdump := testenv.LookPath(t, "dcmdump", "apt-get install dcmtk")
	root := moduleRoot(t)
	dir := filepath.Join(root, "interop", "dicomweb")
	if _, err := os.Stat(filepath.Join(dir, "node_modules", "dicomweb-client")); err != nil {
		testenv.Missing(t, "the dicomweb-client npm package", "run scripts/deps.sh (npm ci in interop/dicomweb)")
	}
	corpus := filepath.Join(root, "..", "shared", "testdata", "dicom")
	if _, err := os.Stat(corpus); err != nil {
		testenv.Missing(t, "../shared/testdata", "the shared test corpus must sit next to the repository")
	}
	files := acceptedCorpus(t, corpus)
	if len(files) < 30 {
		t.Fatalf("only %d corpus files accepted", len(files))
	}
	var args []string
	for _, p := range files {
		args = append(args, p)
	}
	sort.Strings(args)
	invalid := []string{filepath.Join(corpus, "invalid", "no_meta.dcm"), filepath.Join(corpus, "invalid", "MR_truncated.dcm")}
	args = append(append(append([]string{"roundtrip.js"}, args...), "--invalid"), invalid...)

	g := gatewaytest.Start(t, nil, gatewaytest.Config{})
	out := t.TempDir()
	cmd := exec.Command(node, args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(),
		"CONSILIUM_URL="+g.URL, "CONSILIUM_CERT="+g.Layout.ClientCert("st-marys"),
		"CONSILIUM_KEY="+g.Layout.ClientKey("st-marys"), "CONSILIUM_CA="+g.Layout.CAFile(), "OUT_DIR="+out)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("node roundtrip.js: %v\n%s", err, stderr.String())
	}
	var rt roundTrip
	if err := json.Unmarshal(stdout.Bytes(), &rt); err != nil {
		t.Fatalf("%v: %s", err, stdout.String())
	}

	t.Logf("dicomweb-client stored %d instances (refused %d), found %d studies, retrieved %d instances and %d pixel data bulk data",
		len(rt.Stored), len(rt.Failed), len(rt.Studies), len(rt.Retrieved), len(rt.BulkData))
	// STOW-RS through the client: all stored, the two invalid ones refused.
	if len(rt.Stored) != len(files) {
		t.Errorf("%d stored, want %d", len(rt.Stored), len(files))
	}
	if len(rt.Failed) != 2 || rt.Failed[0].Reason != 0xC000 || rt.Failed[1].Reason != 0xC000 {
		t.Errorf("failed: %+v", rt.Failed)
	}
	// QIDO-RS found every instance, and the Patient ID search its study.
	found := 0
	for _, st := range rt.Studies {
		for _, se := range st.Series {
			found += len(se.Instances)
		}
	}
	if found != len(files) || rt.ByPatientID.Studies < 1 || rt.WholeStudy.Instances < 1 {
		t.Errorf("QIDO found %d instances of %d; by Patient ID %+v; whole study %+v", found, len(files), rt.ByPatientID, rt.WholeStudy)
	}
	// WADO-RS: byte for byte, and dcmdump reads every instance.
	for sop, orig := range files {
		got, ok := rt.Retrieved[sop]
		if !ok {
			t.Errorf("%s not retrieved", filepath.Base(orig))
			continue
		}
		a, _ := os.ReadFile(orig)
		b, _ := os.ReadFile(got)
		if !bytes.Equal(a, b) {
			t.Errorf("%s: retrieved %d bytes that differ from the %d stored", filepath.Base(orig), len(b), len(a))
		}
		var errOut bytes.Buffer
		dump := exec.Command(dcmdump, "-q", got)
		dump.Stdout, dump.Stderr = io.Discard, &errOut
		if err := dump.Run(); err != nil || errOut.Len() > 0 {
			t.Errorf("dcmdump %s: %v %s", filepath.Base(orig), err, errOut.String())
		}
	}
	if len(rt.BulkData) < 25 {
		t.Errorf("pixel data bulk data retrieved for only %d instances", len(rt.BulkData))
	}
	for sop, n := range rt.BulkData {
		if n == 0 {
			t.Errorf("empty bulk data for %s", filepath.Base(files[sop]))
		}
	}
}
