package dicom_test

import (
	"bytes"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/consilium/consilium/dicom"
)

// TestCheckCorpus pins how Check sorts the corpus: what a store refuses
// (with which reason) and what it accepts with warnings.
func TestCheckCorpus(t *testing.T) {
	refused := map[string]dicom.Reason{
		// Parser test fragments without any key UID: nothing to file
		// them under.
		"charset/chrSQEncoding1.dcm":                    dicom.ReasonMissingSOPClass,
		"charset/empty_charset_LEI.dcm":                 dicom.ReasonMissingSOPClass,
		"edge-cases/ExplicitVRBigEndianUndefLen.dcm":    dicom.ReasonMissingSOPClass,
		"edge-cases/ExplicitVRLittleEndianUndefLen.dcm": dicom.ReasonMissingSOPClass,
		"edge-cases/ImplicitVRLittleEndianUndefLen.dcm": dicom.ReasonMissingSOPClass,
		"edge-cases/UN_sequence.dcm":                    dicom.ReasonMissingSOPClass,
		"edge-cases/nested_priv_SQ.dcm":                 dicom.ReasonMissingSOPClass,
		"edge-cases/priv_SQ.dcm":                        dicom.ReasonMissingSOPClass,
		// A bare dataset: not a Part 10 file.
		"modality/rt/rtstruct.dcm": dicom.ReasonNoPreamble,

		"invalid/JPEG2000-embedded-sequence-delimiter.dcm":    dicom.ReasonPixelData,
		"invalid/MR_truncated.dcm":                            dicom.ReasonTruncated,
		"invalid/MultiFrameUncompressed_missingPixelTags.dcm": dicom.ReasonMissingSOPClass,
		"invalid/MultiFrameUncompressed_nullPixelTags.dcm":    dicom.ReasonMissingSOPClass,
		"invalid/badVR.dcm":                                   dicom.ReasonInvalidValue,
		"invalid/bad_sequence.dcm":                            dicom.ReasonInvalidValue,
		"invalid/emri_small_jpeg_2k_lossless_too_short.dcm":   dicom.ReasonTruncated,
		"invalid/meta_missing_tsyntax.dcm":                    dicom.ReasonNoTransferSyntax,
		"invalid/no_meta.dcm":                                 dicom.ReasonNoPreamble,
		"invalid/rtplan_truncated.dcm":                        dicom.ReasonTruncated,
	}
	warned := map[string][]dicom.Reason{
		"modality/rt/rtdose.dcm": {dicom.ReasonInvalidValue, dicom.ReasonMetaMismatch},
		"modality/rt/rtplan.dcm": {dicom.ReasonMetaMismatch},
	}
	valid, invalid := corpus(t)
	root := filepath.Join(sharedDir(t), "testdata", "dicom") + string(filepath.Separator)
	for _, p := range append(valid, invalid...) {
		name := filepath.ToSlash(strings.TrimPrefix(p, root))
		t.Run(name, func(t *testing.T) {
			f, err := os.Open(p)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			headers := 0
			res, err := dicom.Check(struct{ io.Reader }{f}, dicom.CheckOptions{
				Header: func(s dicom.Summary) error { headers++; return nil },
			})
			if want, ok := refused[name]; ok {
				var pe *dicom.ParseError
				if !errors.As(err, &pe) || pe.Reason != want {
					t.Fatalf("err = %v, want a ParseError with reason %s", err, want)
				}
				return
			}
			if err != nil {
				t.Fatalf("refused: %v", err)
			}
			if headers != 1 {
				t.Errorf("Header called %d times", headers)
			}
			if res.Summary.SOPInstanceUID == "" || res.Summary.StudyInstanceUID == "" {
				t.Errorf("summary without keys: %+v", res.Summary)
			}
			if res.Summary.HasPixelData && res.Summary.PixelDataLength != dicom.UndefinedLength &&
				res.PixelDataEnd-res.PixelData != int64(res.Summary.PixelDataLength) {
				t.Errorf("pixel data at %d-%d, length %d", res.PixelData, res.PixelDataEnd, res.Summary.PixelDataLength)
			}
			var got []dicom.Reason
			for _, w := range res.Warnings {
				got = append(got, w.Reason)
			}
			if strings.Join(reasons(got), ",") != strings.Join(reasons(warned[name]), ",") {
				t.Errorf("warnings %v, want %v", res.Warnings, warned[name])
			}
		})
	}
}

func reasons(r []dicom.Reason) []string {
	var s []string
	for _, x := range r {
		s = append(s, string(x))
	}
	return s
}

// TestCheckHeaderStops: an error from Header ends Check before Pixel Data
// is read, so a store can refuse an instance early.
func TestCheckHeaderStops(t *testing.T) {
	b, err := os.ReadFile(filepath.Join(sharedDir(t), "testdata", "dicom", "modality", "cr", "CR_COVID-19-AR-16406488.dcm"))
	if err != nil {
		t.Fatal(err)
	}
	stop := errors.New("not here")
	r := &countingReader{r: bytes.NewReader(b)}
	_, err = dicom.Check(r, dicom.CheckOptions{Header: func(s dicom.Summary) error {
		if s.Modality != "CR" || !s.HasPixelData {
			t.Errorf("summary at the header: %+v", s)
		}
		return stop
	}})
	if !errors.Is(err, stop) {
		t.Fatalf("err = %v", err)
	}
	if r.n > int64(len(b))/2 {
		t.Fatalf("read %d of %d bytes before stopping", r.n, len(b))
	}
}

type countingReader struct {
	r io.Reader
	n int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}
