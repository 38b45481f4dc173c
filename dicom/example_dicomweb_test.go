package dicom_test

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/consilium/consilium/dicom"
)

// A store checks an instance as it arrives and decides where it goes once
// the header is read, before Pixel Data streams through.
func ExampleCheck() {
	f, err := os.Open(filepath.Join("..", "..", "shared", "testdata", "dicom", "modality", "rt", "rtplan.dcm"))
	if err != nil {
		fmt.Println(err)
		return
	}
	defer f.Close()
	res, err := dicom.Check(f, dicom.CheckOptions{
		Header: func(s dicom.Summary) error {
			fmt.Println("header read; modality", s.Modality)
			return nil
		},
	})
	if err != nil {
		fmt.Println("refused:", err)
		return
	}
	fmt.Println("stored as", res.Summary.SOPClassUID)
	for _, w := range res.Warnings {
		fmt.Println("warning:", w.Reason)
	}
	// Output:
	// header read; modality RTPLAN
	// stored as 1.2.840.10008.5.1.4.1.1.481.5
	// warning: meta-mismatch
}

// EncodeJSON gives a header in the DICOM JSON Model, as WADO-RS metadata
// answers carry it.
func ExampleEncodeJSON() {
	f, err := os.Open(filepath.Join("..", "..", "shared", "testdata", "dicom", "modality", "mr", "MR_small.dcm"))
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
	var elems []*dicom.Element
	for {
		e, err := rd.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			fmt.Println(err)
			return
		}
		elems = append(elems, e)
	}
	ds := dicom.EncodeJSON(elems, dicom.JSONOptions{
		CharacterSet: rd.Summary().SpecificCharacterSet,
		BulkDataURI:  func(t dicom.Tag) string { return "bulkdata/" + dicom.JSONKey(t) },
	})
	for _, t := range []dicom.Tag{0x00080060, 0x00280010, 0x7FE00010} {
		b, _ := json.Marshal(ds[dicom.JSONKey(t)])
		fmt.Println(dicom.JSONKey(t), string(b))
	}
	// Output:
	// 00080060 {"vr":"CS","Value":["MR"]}
	// 00280010 {"vr":"US","Value":[64]}
	// 7FE00010 {"vr":"OW","BulkDataURI":"bulkdata/7FE00010"}
}
