package imaging

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"

	"github.com/consilium/consilium/dicom"
	"github.com/consilium/consilium/storage"
)

// Study is a stored study as its index lists it.
type Study struct {
	// UID is the Study Instance UID; Key its keyed hash (policy inputs,
	// audit) and PatientKey the pseudonymous key of its patient.
	UID, Key, PatientKey string
	Series               []Series
}

// Series is one series of a [Study].
type Series struct {
	UID, Modality string
	Instances     []Instance
}

// Instance is one stored instance. Open it with [Archive.Open].
type Instance struct {
	SOPInstanceUID, SOPClassUID, TransferSyntaxUID string
	StudyInstanceUID, SeriesInstanceUID            string
	// Size and SHA256 are those of the bytes as received.
	Size   int64
	SHA256 string

	name  string
	entry instanceEntry
}

// Study returns the study of org with Study Instance UID uid, or
// ErrNotFound. Another organisation's study of the same UID is never
// found: each organisation's studies are apart.
func (a *Archive) Study(ctx context.Context, org, uid string) (*Study, error) {
	key := a.StudyKey(uid)
	var x studyIndex
	_, exists, err := a.loadJSON(ctx, a.studyName(org, key), &x)
	if err != nil {
		return nil, fmt.Errorf("imaging: reading a study index: %w", err)
	}
	if !exists || x.Study.UID != uid || len(x.Series) == 0 {
		return nil, ErrNotFound
	}
	st := &Study{UID: uid, Key: key, PatientKey: x.Study.PatientKey}
	for _, se := range x.Series {
		s := Series{UID: se.UID, Modality: se.Modality}
		for _, in := range se.Instances {
			s.Instances = append(s.Instances, Instance{
				SOPInstanceUID: in.UID, SOPClassUID: in.SOPClassUID, TransferSyntaxUID: in.TransferSyntax,
				StudyInstanceUID: uid, SeriesInstanceUID: se.UID, Size: in.Size, SHA256: in.SHA256,
				name: a.instanceName(org, in.Key), entry: *in,
			})
		}
		st.Series = append(st.Series, s)
	}
	return st, nil
}

// Instances returns the study's instances, or those of one series
// (seriesUID), or one instance (seriesUID and sopUID); ErrNotFound when
// none match.
func (s *Study) Instances(seriesUID, sopUID string) ([]Instance, error) {
	var out []Instance
	for _, se := range s.Series {
		if seriesUID != "" && se.UID != seriesUID {
			continue
		}
		for _, in := range se.Instances {
			if sopUID == "" || in.SOPInstanceUID == sopUID {
				out = append(out, in)
			}
		}
	}
	if len(out) == 0 {
		return nil, ErrNotFound
	}
	return out, nil
}

// Open streams an instance's bytes exactly as they were received. Reads
// fail (with storage.ErrIntegrity) if the stored bytes were tampered with.
func (a *Archive) Open(ctx context.Context, in Instance) (io.ReadCloser, error) {
	rc, _, err := a.store.Get(ctx, in.name, storage.GetOptions{})
	if errors.Is(err, storage.ErrNotFound) {
		return nil, ErrNotFound
	}
	return rc, err
}

// header reads an instance's top-level elements up to Pixel Data (or all
// of them, when elements follow Pixel Data); Pixel Data comes without its
// value. done releases the stored object.
func (a *Archive) header(ctx context.Context, in Instance, stopAt dicom.Tag) (*dicom.Reader, []*dicom.Element, func(), error) {
	rc, err := a.Open(ctx, in)
	if err != nil {
		return nil, nil, nil, err
	}
	rd, err := dicom.NewReader(rc, dicom.ReaderOptions{MaxHeaderBytes: a.maxHeader})
	if err != nil {
		rc.Close()
		return nil, nil, nil, fmt.Errorf("imaging: reading a stored instance: %w", err)
	}
	var elems []*dicom.Element
	for {
		e, err := rd.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			rc.Close()
			return nil, nil, nil, fmt.Errorf("imaging: reading a stored instance: %w", err)
		}
		elems = append(elems, e)
		if e.Tag == stopAt || isBulkPixelData(e) && !in.entry.Trailing {
			break
		}
	}
	return rd, elems, func() { rc.Close() }, nil
}

func isBulkPixelData(e *dicom.Element) bool {
	switch e.Tag {
	case tagPixelData, tagFloatPixelData, tagDoubleFloatPixelData:
		return e.Value == nil
	}
	return false
}

const (
	tagSpecificCharacterSet dicom.Tag = 0x00080005
	tagTransferSyntaxUID    dicom.Tag = 0x00020010
	tagPixelData            dicom.Tag = 0x7FE00010
	tagFloatPixelData       dicom.Tag = 0x7FE00008
	tagDoubleFloatPixelData dicom.Tag = 0x7FE00009
)

// InlineBinaryMax is the longest top-level binary value that metadata
// answers give inline; longer ones are served by [Archive.BulkData].
const InlineBinaryMax = 1024

// Metadata returns an instance's header in the DICOM JSON Model: every
// attribute but Pixel Data and top-level binary values longer than
// [InlineBinaryMax], which carry the URI bulk returns for their tag. The
// Transfer Syntax UID (0002,0010) is included (viewers need it); text is
// UTF-8, so Specific Character Set says ISO_IR 192.
func (a *Archive) Metadata(ctx context.Context, in Instance, bulk func(dicom.Tag) string) (dicom.JSONDataset, error) {
	rd, elems, done, err := a.header(ctx, in, 0)
	if err != nil {
		return nil, err
	}
	defer done()
	ds := dicom.EncodeJSON(elems, dicom.JSONOptions{
		CharacterSet: rd.Summary().SpecificCharacterSet, BulkDataURI: bulk, InlineBinaryMax: InlineBinaryMax,
	})
	ds.Set(tagTransferSyntaxUID, "UI", in.TransferSyntaxUID)
	if _, ok := ds[dicom.JSONKey(tagSpecificCharacterSet)]; ok {
		ds.Set(tagSpecificCharacterSet, "CS", "ISO_IR 192")
	}
	return ds, nil
}

// BulkData streams the value of a top-level element of an instance, as
// encoded (the dataset's byte order; for encapsulated Pixel Data, the item
// stream with its fragments and delimiter). Pixel Data is read by range
// where the index knows its offsets. ErrNotFound when the instance has no
// such element.
func (a *Archive) BulkData(ctx context.Context, in Instance, t dicom.Tag) (io.ReadCloser, error) {
	e := in.entry
	if t == tagPixelData && e.PixelDataEnd > e.PixelData && !e.Deflated {
		rc, _, err := a.store.Get(ctx, in.name, storage.GetOptions{Offset: e.PixelData, Length: e.PixelDataEnd - e.PixelData})
		return rc, err
	}
	rd, elems, done, err := a.header(ctx, in, t)
	if err != nil {
		return nil, err
	}
	if len(elems) == 0 || elems[len(elems)-1].Tag != t || elems[len(elems)-1].IsSequence() {
		done()
		return nil, ErrNotFound
	}
	last := elems[len(elems)-1]
	if isBulkPixelData(last) {
		return readCloser{rd.PixelData(), done}, nil
	}
	done()
	return io.NopCloser(bytes.NewReader(last.Value)), nil
}

type readCloser struct {
	io.Reader
	close func()
}

func (r readCloser) Close() error { r.close(); return nil }
