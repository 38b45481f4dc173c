package imaging_test

import (
	"bytes"
	"context"
	"errors"
	"net/url"
	"testing"

	"github.com/consilium/consilium/imaging"
)

const fuzzMaxInput = 1 << 20

// FuzzIngest: whatever a sender sends, Add gives a result (never a panic,
// never a request error for an in-memory body), and a stored instance
// reads back byte for byte.
func FuzzIngest(f *testing.F) {
	for _, rel := range corpusFiles(f) {
		b := readCorpus(f, rel)
		if len(b) > 256<<10 {
			b = b[:64<<10]
		}
		f.Add(b)
	}
	a := newArchive(f, fsStore(f), names(f))
	f.Fuzz(func(t *testing.T, b []byte) {
		if len(b) > fuzzMaxInput {
			return
		}
		ctx := context.Background()
		in, err := a.Begin(imaging.IngestOptions{Org: "fuzz", Replace: true})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := in.Add(ctx, bytes.NewReader(b)); err != nil {
			t.Fatalf("request error for an in-memory body: %v", err)
		}
		r := in.Commit(ctx)[0]
		if r.Outcome == imaging.Failed {
			if r.Status == 0 || r.Message == "" {
				t.Fatalf("failure without a reason: %+v", r)
			}
			return
		}
		st, err := a.Study(ctx, "fuzz", r.StudyInstanceUID)
		if err != nil {
			t.Fatal(err)
		}
		ins, err := st.Instances(r.SeriesInstanceUID, r.SOPInstanceUID)
		if err != nil {
			t.Fatal(err)
		}
		rc, err := a.Open(ctx, ins[0])
		if err != nil {
			t.Fatal(err)
		}
		defer rc.Close()
		var got bytes.Buffer
		if _, err := got.ReadFrom(rc); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got.Bytes(), b) {
			t.Fatal("stored bytes differ")
		}
	})
}

// FuzzParseQuery: any query string parses or is ErrBadQuery, and a parsed
// one runs.
func FuzzParseQuery(f *testing.F) {
	for _, s := range []string{"PatientID=1CT1", "StudyDate=20040101-20041231&limit=3", "ModalitiesInStudy=CT,MR&includefield=all",
		"PatientName=*a?b[c]", "StudyTime=-1030", "00100020=x&offset=2", "limit=-1", "includefield=NoSuch"} {
		f.Add(s)
	}
	a := newArchive(f, fsStore(f), names(f))
	ingest(f, a, imaging.IngestOptions{}, readCorpus(f, ctFile), readCorpus(f, mrFile))
	f.Fuzz(func(t *testing.T, raw string) {
		params, err := url.ParseQuery(raw)
		if err != nil {
			return
		}
		for _, level := range []imaging.Level{imaging.StudyLevel, imaging.SeriesLevel, imaging.InstanceLevel} {
			q, _, err := imaging.ParseQuery(level, params)
			if err != nil {
				if !errors.Is(err, imaging.ErrBadQuery) {
					t.Fatalf("error is not ErrBadQuery: %v", err)
				}
				continue
			}
			q.StudyUID = ctStudy
			res, err := a.Search(context.Background(), "st-marys", q)
			if err != nil {
				t.Fatal(err)
			}
			if len(res.Matches) > q.Limit {
				t.Fatalf("%d matches over the limit of %d", len(res.Matches), q.Limit)
			}
		}
	})
}
