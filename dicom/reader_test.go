package dicom_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/consilium/consilium/internal/testenv"

	"github.com/consilium/consilium/deid"
	"github.com/consilium/consilium/dicom"
)

// strictRefusals lists every corpus file that Inspect (strict, as a
// DICOMweb store uses it) refuses, and why. Files not listed must be
// accepted.
var strictRefusals = map[string]dicom.Reason{
	// Everything under invalid/ is refused. JPEG2000-embedded-sequence-
	// delimiter.dcm has a sound item structure (a parser that follows the
	// item lengths reads it): it is refused because its JPEG 2000 SIZ
	// marker, overwritten by the planted delimiter, no longer matches
	// Rows and Columns.
	"invalid/JPEG2000-embedded-sequence-delimiter.dcm":    dicom.ReasonPixelData,
	"invalid/MR_truncated.dcm":                            dicom.ReasonTruncated,
	"invalid/MultiFrameUncompressed_missingPixelTags.dcm": dicom.ReasonPixelData,
	"invalid/MultiFrameUncompressed_nullPixelTags.dcm":    dicom.ReasonPixelData,
	"invalid/badVR.dcm":                                   dicom.ReasonInvalidValue,
	"invalid/bad_sequence.dcm":                            dicom.ReasonInvalidValue,
	"invalid/emri_small_jpeg_2k_lossless_too_short.dcm":   dicom.ReasonTruncated,
	"invalid/meta_missing_tsyntax.dcm":                    dicom.ReasonNoTransferSyntax,
	"invalid/no_meta.dcm":                                 dicom.ReasonNoPreamble,
	"invalid/rtplan_truncated.dcm":                        dicom.ReasonTruncated,

	// Well-formed test fragments that are not complete instances: a
	// store must not accept them either (de-identification still
	// handles them; see TestRewriteCorpus).
	"charset/chrSQEncoding1.dcm":                    dicom.ReasonMissingSOPClass,
	"charset/empty_charset_LEI.dcm":                 dicom.ReasonMissingSOPClass,
	"edge-cases/UN_sequence.dcm":                    dicom.ReasonMissingSOPClass,
	"edge-cases/priv_SQ.dcm":                        dicom.ReasonMissingSOPClass,
	"edge-cases/ExplicitVRBigEndianUndefLen.dcm":    dicom.ReasonPixelData, // Pixel Data without Rows/Columns
	"edge-cases/ExplicitVRLittleEndianUndefLen.dcm": dicom.ReasonPixelData,
	"edge-cases/ImplicitVRLittleEndianUndefLen.dcm": dicom.ReasonPixelData,
	"edge-cases/nested_priv_SQ.dcm":                 dicom.ReasonPixelData,
	// Real instances with defects PS3.10/PS3.5 forbid.
	"modality/rt/rtdose.dcm":   dicom.ReasonInvalidValue, // a referenced UID with a leading-zero component
	"modality/rt/rtplan.dcm":   dicom.ReasonMetaMismatch, // Media Storage SOP Instance UID differs from SOP Instance UID
	"modality/rt/rtstruct.dcm": dicom.ReasonNoPreamble,   // a bare dataset; readable only with AllowNoMeta
}

func TestInspectCorpus(t *testing.T) {
	valid, invalid := corpus(t)
	for _, p := range append(valid, invalid...) {
		name := rel(t, p)
		t.Run(name, func(t *testing.T) {
			f, err := os.Open(p)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			s, err := dicom.Inspect(f, dicom.ReaderOptions{})
			want, refused := strictRefusals[name]
			if !refused {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				if s.SOPInstanceUID == "" || s.StudyInstanceUID == "" || s.TransferSyntaxUID == "" {
					t.Errorf("summary incomplete: %+v", s)
				}
				return
			}
			var pe *dicom.ParseError
			if !errors.As(err, &pe) || !errors.Is(err, dicom.ErrInvalid) {
				t.Fatalf("err = %v, want a ParseError", err)
			}
			if pe.Reason != want {
				t.Errorf("reason = %s, want %s (%v)", pe.Reason, want, err)
			}
		})
	}
}

// TestReadCorpus reads every valid file to the end, element by element,
// pixel data streamed, in the lenient mode de-identification uses.
func TestReadCorpus(t *testing.T) {
	valid, _ := corpus(t)
	for _, p := range valid {
		t.Run(rel(t, p), func(t *testing.T) {
			b, err := os.ReadFile(p)
			if err != nil {
				t.Fatal(err)
			}
			rd, err := dicom.NewReader(bytes.NewReader(b), dicom.ReaderOptions{AllowNoMeta: true})
			if err != nil {
				t.Fatal(err)
			}
			n := 0
			for {
				e, err := rd.Next()
				if err == io.EOF {
					break
				}
				if err != nil {
					t.Fatal(err)
				}
				n++
				if pd := rd.PixelData(); pd != nil {
					if _, err := io.Copy(io.Discard, pd); err != nil {
						t.Fatalf("pixel data of %v: %v", e.Tag, err)
					}
				}
			}
			if want := dcmdumpTopLevel(t, p); n != want {
				t.Errorf("read %d top-level elements, dcmdump sees %d", n, want)
			}
		})
	}
}

// dcmdumpTopLevel counts the top-level dataset elements dcmdump finds.
func dcmdumpTopLevel(t *testing.T, path string) int {
	t.Helper()
	dcmdump := testenv.LookPath(t, "dcmdump", "apt-get install dcmtk")
	out, err := exec.Command(dcmdump, "-q", "+L", path).CombinedOutput()
	if err != nil {
		t.Fatalf("dcmdump: %v\n%s", err, out)
	}
	n, inData := 0, false
	for _, line := range strings.Split(string(out), "\n") {
		if strings.HasPrefix(line, "# Dicom-Data-Set") {
			inData = true
		}
		if inData && strings.HasPrefix(line, "(") && !strings.HasPrefix(line, "(fffe,") {
			n++
		}
	}
	if !inData { // a bare dataset: dcmdump prints no section headers
		for _, line := range strings.Split(string(out), "\n") {
			if strings.HasPrefix(line, "(") && !strings.HasPrefix(line, "(fffe,") {
				n++
			}
		}
	}
	return n
}

func TestReaderSummary(t *testing.T) {
	p := sharedDir(t) + "/testdata/dicom/modality/ct/CT_small.dcm"
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	s, err := dicom.Inspect(f, dicom.ReaderOptions{})
	if err != nil {
		t.Fatal(err)
	}
	got := fmt.Sprintf("%s|%s|%s|%s|%d|%d|%d|%v", s.TransferSyntaxUID, s.PatientID, s.PatientName, s.Modality, s.Rows, s.Columns, s.BitsAllocated, s.HasPixelData)
	want := "1.2.840.10008.1.2.1|1CT1|CompressedSamples^CT1|CT|128|128|16|true"
	if got != want {
		t.Errorf("summary = %s, want %s", got, want)
	}
	if s.SOPClassUID != "1.2.840.10008.5.1.4.1.1.2" || s.StudyInstanceUID == "" || s.SeriesInstanceUID == "" {
		t.Errorf("UIDs: %+v", s)
	}
}

// TestReaderErrors covers refusals that the corpus does not.
func TestReaderErrors(t *testing.T) {
	good, err := os.ReadFile(sharedDir(t) + "/testdata/dicom/modality/mr/MR_small.dcm")
	if err != nil {
		t.Fatal(err)
	}
	withTS := func(uid string) []byte {
		// Rewrite the transfer syntax in place (same length, padded).
		i := bytes.Index(good, []byte("1.2.840.10008.1.2.1\x00"))
		if i < 0 {
			t.Fatal("transfer syntax not found")
		}
		b := bytes.Clone(good)
		v := []byte(uid)
		for len(v) < 20 {
			v = append(v, 0)
		}
		copy(b[i:], v)
		return b
	}
	tests := []struct {
		name string
		in   []byte
		opts dicom.ReaderOptions
		want dicom.Reason
	}{
		{"empty", nil, dicom.ReaderOptions{}, dicom.ReasonNoPreamble},
		{"preamble only", append(make([]byte, 128), "DICM"...), dicom.ReaderOptions{}, dicom.ReasonNoMeta},
		{"private transfer syntax", withTS("1.2.3.4.5.6.7"), dicom.ReaderOptions{}, dicom.ReasonUnsupportedSyntax},
		{"truncated header", good[:200], dicom.ReaderOptions{}, dicom.ReasonTruncated},
		{"tiny header limit", good, dicom.ReaderOptions{MaxHeaderBytes: 100}, dicom.ReasonTooLarge},
		{"cut in pixel data", good[:len(good)-10], dicom.ReaderOptions{}, dicom.ReasonTruncated},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := dicom.Inspect(bytes.NewReader(tt.in), tt.opts)
			var pe *dicom.ParseError
			if !errors.As(err, &pe) || pe.Reason != tt.want {
				t.Fatalf("err = %v, want reason %s", err, tt.want)
			}
			if bytes.Contains([]byte(err.Error()), []byte("MR1")) {
				t.Errorf("error shows a value: %v", err)
			}
		})
	}
}

func ExampleInspect() {
	f, err := os.Open("../../shared/testdata/dicom/modality/mr/MR_small.dcm")
	if err != nil {
		fmt.Println(err)
		return
	}
	defer f.Close()
	s, err := dicom.Inspect(f, dicom.ReaderOptions{})
	if err != nil {
		fmt.Println("refused:", err)
		return
	}
	fmt.Println(s.Modality, s.Rows, s.Columns, s.TransferSyntaxUID)
	// Output: MR 64 64 1.2.840.10008.1.2.1
}

func ExampleReader() {
	f, err := os.Open("../../shared/testdata/dicom/modality/ct/CT_small.dcm")
	if err != nil {
		fmt.Println(err)
		return
	}
	defer f.Close()
	rd, err := dicom.NewReader(f, dicom.ReaderOptions{})
	if err != nil {
		fmt.Println(err)
		return
	}
	for {
		e, err := rd.Next()
		if err != nil {
			break // io.EOF at the end
		}
		if pd := rd.PixelData(); pd != nil {
			n, _ := io.Copy(io.Discard, pd) // stream it anywhere
			fmt.Println(e.Tag, "streamed", n, "bytes")
		}
	}
	fmt.Println(rd.Summary().Modality)
	// Output:
	// (7FE0,0010) streamed 32768 bytes
	// CT
}

func ExampleDeidentifier_Rewrite() {
	// The gateway passes keyring.Derive("pseudonyms"); the CLI reads a file.
	src, err := deid.NewKeyed(bytes.Repeat([]byte{7}, 32), deid.KeyedOptions{})
	if err != nil {
		fmt.Println(err)
		return
	}
	profile, _ := deid.ParseDICOMProfile("basic,retain-long-modified-dates")
	d, err := dicom.NewDeidentifier(dicom.Options{Profile: profile, Source: src})
	if err != nil {
		fmt.Println(err)
		return
	}
	in, err := os.Open("../../shared/testdata/dicom/modality/ct/CT_small.dcm")
	if err != nil {
		fmt.Println(err)
		return
	}
	defer in.Close()
	var out bytes.Buffer
	rep, err := d.Rewrite(context.Background(), &out, in, dicom.PatientKey("ACME|patient-42"))
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(rep.PixelBytes, rep.BurnedIn, strings.HasPrefix(rep.StudyInstanceUID, "2.25."), deid.IsPseudonym(rep.Pseudonym))
	// Output: 32768 false true true
}
