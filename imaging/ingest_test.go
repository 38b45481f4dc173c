package imaging_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"sync"
	"testing"
	"time"

	"github.com/consilium/consilium/dicom"
	"github.com/consilium/consilium/imaging"
	"github.com/consilium/consilium/storage"
)

// TestCorpusInOneRequest stores the whole corpus, valid and invalid files
// together, in one request: each invalid file is refused with a reason
// while its siblings are stored, and every stored instance comes back
// byte for byte.
func TestCorpusInOneRequest(t *testing.T) {
	for _, backend := range []string{"fs", "minio"} {
		t.Run(backend, func(t *testing.T) {
			var store storage.Store
			if backend == "fs" {
				store = fsStore(t)
			} else {
				store, _ = minioStore(t)
			}
			a := newArchive(t, store, names(t))
			files := corpusFiles(t)
			var data [][]byte
			for _, f := range files {
				data = append(data, readCorpus(t, f))
			}
			results := ingest(t, a, imaging.IngestOptions{}, data...)
			if len(results) != len(files) {
				t.Fatalf("%d results for %d files", len(results), len(files))
			}
			first := map[string]int{} // SOP Instance UID -> first file stored under it
			stored := 0
			for i, r := range results {
				f := files[i]
				switch {
				case isInvalid(f):
					if r.Outcome != imaging.Failed || r.Status == 0 || r.Message == "" {
						t.Errorf("%s: %v %s %q, want a refusal with a reason", f, r.Outcome, r.Status, r.Message)
					}
				case refusedValid[f] != 0:
					if r.Outcome != imaging.Failed || r.Status != refusedValid[f] {
						t.Errorf("%s: %v %s, want refused with %s", f, r.Outcome, r.Status, refusedValid[f])
					}
				default:
					if j, dup := first[r.SOPInstanceUID]; dup {
						// The same SOP Instance in another transfer syntax:
						// different bytes under a stored UID.
						if r.Outcome != imaging.Failed || r.Status != imaging.StatusDuplicateInstance {
							t.Errorf("%s (same SOP Instance UID as %s): %v %s, want %s", f, files[j], r.Outcome, r.Status, imaging.StatusDuplicateInstance)
						}
						continue
					}
					if r.Outcome != imaging.Stored {
						t.Errorf("%s: %v %s %s", f, r.Outcome, r.Status, r.Message)
						continue
					}
					first[r.SOPInstanceUID] = i
					stored++
					got := retrieve(t, a, "st-marys", r.StudyInstanceUID, r.SeriesInstanceUID, r.SOPInstanceUID)
					if !bytes.Equal(got, data[i]) {
						t.Errorf("%s: retrieved %d bytes that differ from the %d stored", f, len(got), len(data[i]))
					}
					if sum := sha256.Sum256(data[i]); r.SHA256 != hex.EncodeToString(sum[:]) || r.Size != int64(len(data[i])) {
						t.Errorf("%s: size %d sha %s", f, r.Size, r.SHA256)
					}
				}
			}
			if stored < 30 {
				t.Fatalf("only %d instances stored", stored)
			}
		})
	}
}

// TestEveryFileStoredAndRetrieved stores each corpus file that is not
// refused on its own (replacing, for the files that share a SOP Instance
// UID with another one) and retrieves it byte for byte.
func TestEveryFileStoredAndRetrieved(t *testing.T) {
	a := newArchive(t, fsStore(t), names(t))
	for _, f := range corpusFiles(t) {
		if isInvalid(f) || refusedValid[f] != 0 {
			continue
		}
		t.Run(f, func(t *testing.T) {
			b := readCorpus(t, f)
			r := ingest(t, a, imaging.IngestOptions{Replace: true}, b)[0]
			if r.Outcome == imaging.Failed {
				t.Fatalf("%s %s", r.Status, r.Message)
			}
			if got := retrieve(t, a, "st-marys", r.StudyInstanceUID, r.SeriesInstanceUID, r.SOPInstanceUID); !bytes.Equal(got, b) {
				t.Fatal("retrieved bytes differ")
			}
		})
	}
}

const (
	ctFile  = "modality/ct/CT_small.dcm"
	ctSOP   = "1.3.6.1.4.1.5962.1.1.1.1.1.20040119072730.12322"
	ctStudy = "1.3.6.1.4.1.5962.1.2.1.20040119072730.12322"
	mrFile  = "modality/mr/MR_small.dcm"
	mrStudy = "1.3.6.1.4.1.5962.1.2.4.20040826185059.5457"
)

func TestStoreAgain(t *testing.T) {
	a := newArchive(t, fsStore(t), names(t))
	ct := readCorpus(t, ctFile)
	other := bytes.Clone(ct)
	other[len(other)-1] ^= 0xFF // same SOP Instance UID, a different pixel
	if r := ingest(t, a, imaging.IngestOptions{}, ct)[0]; r.Outcome != imaging.Stored {
		t.Fatalf("first store: %v %s", r.Outcome, r.Message)
	}
	tests := []struct {
		name    string
		data    []byte
		replace bool
		want    imaging.Outcome
		status  imaging.Status
		stored  []byte
	}{
		{"same bytes", ct, false, imaging.Unchanged, 0, ct},
		{"different bytes", other, false, imaging.Failed, imaging.StatusDuplicateInstance, ct},
		{"different bytes with replace", other, true, imaging.Replaced, 0, other},
		{"same bytes with replace", other, true, imaging.Replaced, 0, other},
		{"the first bytes again, refused", ct, false, imaging.Failed, imaging.StatusDuplicateInstance, other},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := ingest(t, a, imaging.IngestOptions{Replace: tc.replace}, tc.data)[0]
			if r.Outcome != tc.want || r.Status != tc.status {
				t.Fatalf("%v %s %q, want %v %s", r.Outcome, r.Status, r.Message, tc.want, tc.status)
			}
			if got := retrieve(t, a, "st-marys", ctStudy, "", ctSOP); !bytes.Equal(got, tc.stored) {
				t.Fatal("stored bytes are not the expected ones")
			}
		})
	}
	// The same instance twice in one request.
	rs := ingest(t, a, imaging.IngestOptions{}, other, other, ct)
	if rs[0].Outcome != imaging.Unchanged || rs[1].Outcome != imaging.Unchanged || rs[2].Status != imaging.StatusDuplicateInstance {
		t.Fatalf("%v %v %v", rs[0].Outcome, rs[1].Outcome, rs[2].Status)
	}
	st, err := a.Study(context.Background(), "st-marys", ctStudy)
	if err != nil {
		t.Fatal(err)
	}
	if ins, _ := st.Instances("", ""); len(ins) != 1 {
		t.Fatalf("%d instances listed", len(ins))
	}
}

func TestRefusals(t *testing.T) {
	a := newArchive(t, fsStore(t), names(t))
	ct := readCorpus(t, ctFile)
	if r := ingest(t, a, imaging.IngestOptions{}, ct)[0]; r.Outcome != imaging.Stored {
		t.Fatal(r.Message)
	}
	// Another instance of the CT study under another patient.
	otherPatient := withUIDs(t, ct, ctSOP, ctSOP[:len(ctSOP)-1]+"9")
	otherPatient = bytes.Replace(otherPatient, []byte("1CT1"), []byte("2CT2"), 1)
	denied := errors.New("policy says no")
	tests := []struct {
		name   string
		opts   imaging.IngestOptions
		data   []byte
		status imaging.Status
	}{
		{"another patient in the study", imaging.IngestOptions{}, otherPatient, imaging.StatusDataSetMismatch},
		{"another study than addressed", imaging.IngestOptions{Study: mrStudy}, ct, imaging.StatusDataSetMismatch},
		{"not authorized", imaging.IngestOptions{Authorize: func(ctx context.Context, s imaging.StudyRef) error {
			return fmt.Errorf("%w: %w", imaging.ErrNotAuthorized, denied)
		}}, readCorpus(t, mrFile), imaging.StatusNotAuthorized},
		{"policy failure", imaging.IngestOptions{Authorize: func(ctx context.Context, s imaging.StudyRef) error { return denied }},
			readCorpus(t, mrFile), imaging.StatusProcessingFailure},
		{"not DICOM", imaging.IngestOptions{}, []byte("hello"), imaging.StatusCannotUnderstand},
		{"truncated", imaging.IngestOptions{}, ct[:len(ct)-100], imaging.StatusCannotUnderstand},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := ingest(t, a, tc.opts, tc.data)[0]
			if r.Outcome != imaging.Failed || r.Status != tc.status {
				t.Fatalf("%v %s %q, want %s", r.Outcome, r.Status, r.Message, tc.status)
			}
		})
	}
	// Nothing of the refused ones is visible.
	if _, err := a.Study(context.Background(), "st-marys", mrStudy); !errors.Is(err, imaging.ErrNotFound) {
		t.Fatalf("refused study is visible: %v", err)
	}
	st, _ := a.Study(context.Background(), "st-marys", ctStudy)
	if ins, _ := st.Instances("", ""); len(ins) != 1 {
		t.Fatalf("%d instances", len(ins))
	}
}

func TestAuthorizeOncePerStudy(t *testing.T) {
	a := newArchive(t, fsStore(t), names(t))
	var refs []imaging.StudyRef
	ct := readCorpus(t, ctFile)
	ct2 := withUIDs(t, ct, ctSOP, ctSOP[:len(ctSOP)-1]+"9")
	ingest(t, a, imaging.IngestOptions{Authorize: func(ctx context.Context, s imaging.StudyRef) error {
		refs = append(refs, s)
		return nil
	}}, ct, ct2, readCorpus(t, mrFile))
	if len(refs) != 2 {
		t.Fatalf("asked %d times: %+v", len(refs), refs)
	}
	if refs[0].UID != ctStudy || refs[0].Key != a.StudyKey(ctStudy) || refs[0].PatientKey != a.PatientKey("st-marys", "1CT1") || refs[0].PatientKey == "" {
		t.Fatalf("%+v", refs[0])
	}
}

// TestOrganisationsApart: a study stored by one organisation is not found
// by another, even under the same UID.
func TestOrganisationsApart(t *testing.T) {
	a := newArchive(t, fsStore(t), names(t))
	ingest(t, a, imaging.IngestOptions{Org: "st-marys"}, readCorpus(t, ctFile))
	if _, err := a.Study(context.Background(), "charite", ctStudy); !errors.Is(err, imaging.ErrNotFound) {
		t.Fatalf("err = %v", err)
	}
	res, err := a.Search(context.Background(), "charite", imaging.Query{Level: imaging.StudyLevel, Limit: 10})
	if err != nil || len(res.Matches) != 0 {
		t.Fatalf("%v %d", err, len(res.Matches))
	}
	// The other organisation may store the same study for itself.
	if r := ingest(t, a, imaging.IngestOptions{Org: "charite"}, readCorpus(t, ctFile))[0]; r.Outcome != imaging.Stored {
		t.Fatalf("%v", r.Outcome)
	}
}

// TestReplaceMovesBetweenStudies: a replacement whose Study UID differs
// leaves the old study's index.
func TestReplaceMovesBetweenStudies(t *testing.T) {
	a := newArchive(t, fsStore(t), names(t))
	ct := readCorpus(t, ctFile)
	ingest(t, a, imaging.IngestOptions{}, ct)
	newStudy := ctStudy[:len(ctStudy)-1] + "9"
	moved := withUIDs(t, ct, ctStudy, newStudy)
	r := ingest(t, a, imaging.IngestOptions{Replace: true}, moved)[0]
	if r.Outcome != imaging.Replaced {
		t.Fatalf("%v %s", r.Outcome, r.Message)
	}
	if _, err := a.Study(context.Background(), "st-marys", ctStudy); !errors.Is(err, imaging.ErrNotFound) {
		t.Fatalf("old study still lists the instance: %v", err)
	}
	if got := retrieve(t, a, "st-marys", newStudy, "", ctSOP); !bytes.Equal(got, moved) {
		t.Fatal("moved instance differs")
	}
	res, err := a.Search(context.Background(), "st-marys", imaging.Query{Level: imaging.StudyLevel, Limit: 10})
	if err != nil || len(res.Matches) != 1 {
		t.Fatalf("%v %d studies", err, len(res.Matches))
	}
}

// failingIndex fails every write of study index objects.
type failingIndex struct {
	storage.Store
	fail bool
}

func (f *failingIndex) Put(ctx context.Context, name string, r io.Reader, opts storage.PutOptions) (storage.Info, error) {
	if f.fail && bytes.Contains([]byte(name), []byte("/studies/")) {
		return storage.Info{}, errors.New("injected failure")
	}
	return f.Store.Put(ctx, name, r, opts)
}

// TestFailedIndexUpdateIsRepaired: an instance whose index update failed
// is reported as failed and invisible; sending it again adopts it.
func TestFailedIndexUpdateIsRepaired(t *testing.T) {
	store := &failingIndex{Store: fsStore(t), fail: true}
	a := newArchive(t, store, names(t))
	ct := readCorpus(t, ctFile)
	r := ingest(t, a, imaging.IngestOptions{}, ct)[0]
	if r.Outcome != imaging.Failed || r.Status != imaging.StatusProcessingFailure {
		t.Fatalf("%v %s", r.Outcome, r.Status)
	}
	if _, err := a.Study(context.Background(), "st-marys", ctStudy); !errors.Is(err, imaging.ErrNotFound) {
		t.Fatalf("unindexed instance visible: %v", err)
	}
	store.fail = false
	if r := ingest(t, a, imaging.IngestOptions{}, ct)[0]; r.Outcome != imaging.Unchanged {
		t.Fatalf("%v %s", r.Outcome, r.Message)
	}
	if got := retrieve(t, a, "st-marys", ctStudy, "", ctSOP); !bytes.Equal(got, ct) {
		t.Fatal("differs")
	}
}

// TestConcurrentWritersShareIndex: two archives (two gateway instances)
// on the same MinIO bucket store instances of one study at the same time;
// both indexes end complete, and each archive sees the other's studies.
func TestConcurrentWritersShareIndex(t *testing.T) {
	store, kr := minioStore(t)
	a1 := newArchive(t, store, kr.NameHash)
	a2 := newArchive(t, store, kr.NameHash)
	ct := readCorpus(t, ctFile)
	const n = 24
	var wg sync.WaitGroup
	errs := make(chan string, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			a := a1
			if i%2 == 1 {
				a = a2
			}
			sop := fmt.Sprintf("%s%02d", ctSOP[:len(ctSOP)-2], i)
			r := ingest(t, a, imaging.IngestOptions{}, withUIDs(t, ct, ctSOP, sop))[0]
			if r.Outcome != imaging.Stored {
				errs <- fmt.Sprintf("%d: %v %s", i, r.Outcome, r.Message)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Error(e)
	}
	for _, a := range []*imaging.Archive{a1, a2} {
		if err := a.Flush(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	for _, a := range []*imaging.Archive{a1, a2} {
		st, err := a.Study(context.Background(), "st-marys", ctStudy)
		if err != nil {
			t.Fatal(err)
		}
		if ins, _ := st.Instances("", ""); len(ins) != n {
			t.Fatalf("%d instances listed, want %d", len(ins), n)
		}
		res, err := a.Search(context.Background(), "st-marys", imaging.Query{Level: imaging.StudyLevel, Limit: 10})
		if err != nil || len(res.Matches) != 1 {
			t.Fatalf("%v %d", err, len(res.Matches))
		}
		if got := res.Matches[0][dicom.JSONKey(0x00201208)].Value[0]; fmt.Sprint(got) != fmt.Sprint(n) {
			t.Fatalf("NumberOfStudyRelatedInstances = %v", got)
		}
	}
}

func TestInstanceTooLarge(t *testing.T) {
	a, err := imaging.New(fsStore(t), imaging.Options{Names: names(t), MaxInstanceBytes: 1000})
	if err != nil {
		t.Fatal(err)
	}
	r := ingest(t, a, imaging.IngestOptions{}, readCorpus(t, ctFile))[0]
	if r.Status != imaging.StatusOutOfResources {
		t.Fatalf("%v %s %s", r.Outcome, r.Status, r.Message)
	}
}

// brokenReader fails after some bytes, like a sender whose connection
// dropped.
type brokenReader struct {
	r    io.Reader
	left int
}

var errConnection = errors.New("connection reset")

func (b *brokenReader) Read(p []byte) (int, error) {
	if b.left <= 0 {
		return 0, errConnection
	}
	if len(p) > b.left {
		p = p[:b.left]
	}
	n, err := b.r.Read(p)
	b.left -= n
	return n, err
}

// TestBrokenRequest: a sender's read error is the request's error, not a
// refusal of the instance, and leaves nothing visible.
func TestBrokenRequest(t *testing.T) {
	a := newArchive(t, fsStore(t), names(t))
	in, err := a.Begin(imaging.IngestOptions{Org: "st-marys"})
	if err != nil {
		t.Fatal(err)
	}
	ct := readCorpus(t, ctFile)
	for _, cut := range []int{100, len(ct) - 10} {
		_, err = in.Add(context.Background(), &brokenReader{r: bytes.NewReader(ct), left: cut})
		var re *imaging.RequestError
		if !errors.As(err, &re) || !errors.Is(err, errConnection) {
			t.Fatalf("cut at %d: err = %v, want a RequestError", cut, err)
		}
	}
	if _, err := a.Study(context.Background(), "st-marys", ctStudy); !errors.Is(err, imaging.ErrNotFound) {
		t.Fatalf("visible after a broken request: %v", err)
	}
}

func TestHeaderTooLarge(t *testing.T) {
	a, err := imaging.New(fsStore(t), imaging.Options{Names: names(t), MaxHeaderBytes: 64})
	if err != nil {
		t.Fatal(err)
	}
	r := ingest(t, a, imaging.IngestOptions{}, readCorpus(t, ctFile))[0]
	if r.Status != imaging.StatusOutOfResources {
		t.Fatalf("%v %s %s", r.Outcome, r.Status, r.Message)
	}
}

// TestCountsCatchUp: a new study is in the catalog when its first store
// request is answered; later counts follow within CatalogLag (or at once
// with Flush).
func TestCountsCatchUp(t *testing.T) {
	a := newArchive(t, fsStore(t), names(t))
	ct := readCorpus(t, ctFile)
	count := func() string {
		res, err := a.Search(context.Background(), "st-marys", imaging.Query{Level: imaging.StudyLevel, Limit: 10})
		if err != nil || len(res.Matches) != 1 {
			t.Fatalf("%v, %d studies", err, len(res.Matches))
		}
		return fmt.Sprint(res.Matches[0][dicom.JSONKey(0x00201208)].Value[0])
	}
	ingest(t, a, imaging.IngestOptions{}, ct)
	if got := count(); got != "1" {
		t.Fatalf("new study: %s instances", got)
	}
	for i := 2; i <= 4; i++ {
		ingest(t, a, imaging.IngestOptions{}, withUIDs(t, ct, ctSOP, fmt.Sprintf("%s%02d", ctSOP[:len(ctSOP)-2], i)))
	}
	deadline := time.Now().Add(10 * imaging.CatalogLag)
	for count() != "4" {
		if time.Now().After(deadline) {
			t.Fatalf("counts did not catch up: %s", count())
		}
		time.Sleep(imaging.CatalogLag / 4)
	}
	ingest(t, a, imaging.IngestOptions{}, withUIDs(t, ct, ctSOP, ctSOP[:len(ctSOP)-2]+"05"))
	if err := a.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got := count(); got != "5" {
		t.Fatalf("after Flush: %s", got)
	}
}
