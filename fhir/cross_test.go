package fhir_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/consilium/consilium/deid"
	"github.com/consilium/consilium/dicom"
)

// TestConsistentWithDICOM de-identifies a DICOM instance and a FHIR
// bundle of the same patient with one source, as the CLI does (DICOM
// Patient ID = the FHIR MR identifier): the pseudonym, the date shift and
// the new Study Instance UID must agree.
func TestConsistentWithDICOM(t *testing.T) {
	src := keyed(t)
	ctx := context.Background()
	in, err := os.ReadFile(filepath.Join(sharedDir(t), "testdata", "dicom", "modality", "ct", "CT_small.dcm"))
	if err != nil {
		t.Fatal(err)
	}
	orig, err := dicom.Inspect(bytes.NewReader(in), dicom.ReaderOptions{})
	if err != nil {
		t.Fatal(err)
	}
	p, _ := deid.ParseDICOMProfile("basic,retain-long-modified-dates")
	dd, err := dicom.NewDeidentifier(dicom.Options{Profile: p, Source: src})
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	if _, err := dd.Rewrite(ctx, &out, bytes.NewReader(in), dicom.PatientIDKey); err != nil {
		t.Fatal(err)
	}
	img, err := dicom.Inspect(bytes.NewReader(out.Bytes()), dicom.ReaderOptions{})
	if err != nil {
		t.Fatal(err)
	}

	day, err := time.Parse("20060102", orig.StudyDate)
	if err != nil {
		t.Fatal(err)
	}
	bundle := fmt.Sprintf(`{"resourceType":"Bundle","type":"collection","entry":[
	 {"fullUrl":"urn:uuid:2b2b2b2b-0000-0000-0000-000000000001","resource":{"resourceType":"Patient","id":"pat",
	  "identifier":[{"type":{"coding":[{"system":"http://terminology.hl7.org/CodeSystem/v2-0203","code":"MR"}]},"value":%q}]}},
	 {"resource":{"resourceType":"ImagingStudy","id":"is","status":"available","subject":{"reference":"urn:uuid:2b2b2b2b-0000-0000-0000-000000000001"},
	  "started":%q,"identifier":[{"system":"urn:dicom:uid","value":"urn:oid:%s"}],
	  "series":[{"uid":%q,"modality":{"system":"http://dicom.nema.org/resources/ontology/DCM","code":"CT"},
	   "instance":[{"uid":%q,"sopClass":{"system":"urn:ietf:rfc:3986","code":"urn:oid:%s"}}]}]}}]}`,
		orig.PatientID, day.Format("2006-01-02")+"T10:00:00Z", orig.StudyInstanceUID, orig.SeriesInstanceUID, orig.SOPInstanceUID, orig.SOPClassUID)
	fd := newDeid(t, "shifted", src)
	fout, _, err := fd.Deidentify(ctx, []byte(bundle))
	if err != nil {
		t.Fatal(err)
	}
	var b struct {
		Entry []struct {
			Resource struct {
				ID         string
				Started    string
				Identifier []struct{ System, Value string }
				Series     []struct {
					UID      string
					Instance []struct{ UID string }
				}
			}
		}
	}
	if err := json.Unmarshal(fout, &b); err != nil {
		t.Fatal(err)
	}
	pat, study := b.Entry[0].Resource, b.Entry[1].Resource
	if pat.ID != img.PatientID || pat.Identifier[0].Value != img.PatientID {
		t.Errorf("FHIR patient %q / %q, DICOM Patient ID %q", pat.ID, pat.Identifier[0].Value, img.PatientID)
	}
	if study.Started[:10] != img.StudyDate[:4]+"-"+img.StudyDate[4:6]+"-"+img.StudyDate[6:] {
		t.Errorf("FHIR started %s, DICOM Study Date %s", study.Started, img.StudyDate)
	}
	if study.Identifier[0].Value != "urn:oid:"+img.StudyInstanceUID || study.Series[0].UID != img.SeriesInstanceUID ||
		study.Series[0].Instance[0].UID != img.SOPInstanceUID {
		t.Errorf("UIDs disagree: FHIR %+v, DICOM %s %s %s", study, img.StudyInstanceUID, img.SeriesInstanceUID, img.SOPInstanceUID)
	}
}
