package imaging_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/consilium/consilium/imaging"
	"github.com/consilium/consilium/internal/miniotest"
	"github.com/consilium/consilium/internal/testenv"
	"github.com/consilium/consilium/storage"
)

func TestMain(m *testing.M) { os.Exit(miniotest.Main(m)) }

// corpusDir finds ../shared/testdata/dicom next to the directory holding
// go.mod.
func corpusDir(t testing.TB) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			break
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatal("go.mod not found")
		}
		dir = parent
	}
	root := filepath.Join(dir, "..", "shared", "testdata", "dicom")
	if _, err := os.Stat(root); err != nil {
		testenv.Missing(t, "../shared/testdata", "the shared test corpus must sit next to the repository")
	}
	return root
}

// corpusFiles returns the corpus files relative to its root.
func corpusFiles(t testing.TB) []string {
	t.Helper()
	root := corpusDir(t)
	var files []string
	err := filepath.WalkDir(root, func(p string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		files = append(files, filepath.ToSlash(rel))
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	sort.Strings(files)
	return files
}

func readCorpus(t testing.TB, rel string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(corpusDir(t), filepath.FromSlash(rel)))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// refusedValid are the corpus files outside invalid/ that a store must
// refuse, and why: parser test fragments without any key UID, and a bare
// dataset that is not a Part 10 file.
var refusedValid = map[string]imaging.Status{
	"charset/chrSQEncoding1.dcm":                    imaging.StatusDataSetMismatch,
	"charset/empty_charset_LEI.dcm":                 imaging.StatusDataSetMismatch,
	"edge-cases/ExplicitVRBigEndianUndefLen.dcm":    imaging.StatusDataSetMismatch,
	"edge-cases/ExplicitVRLittleEndianUndefLen.dcm": imaging.StatusDataSetMismatch,
	"edge-cases/ImplicitVRLittleEndianUndefLen.dcm": imaging.StatusDataSetMismatch,
	"edge-cases/UN_sequence.dcm":                    imaging.StatusDataSetMismatch,
	"edge-cases/nested_priv_SQ.dcm":                 imaging.StatusDataSetMismatch,
	"edge-cases/priv_SQ.dcm":                        imaging.StatusDataSetMismatch,
	"modality/rt/rtstruct.dcm":                      imaging.StatusCannotUnderstand,
}

// names is a name hasher with a fresh key, as a keyring gives.
func names(t testing.TB) func(kind, value string) string {
	kr, err := storage.GenerateKeyring(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return kr.NameHash
}

// fsStore is an encrypted filesystem store.
func fsStore(t testing.TB) storage.Store {
	t.Helper()
	fs, err := storage.NewFilesystem(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	kr, err := storage.GenerateKeyring(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return storage.NewEncrypted(fs, kr)
}

// minioStore is an encrypted store in a fresh MinIO bucket, with the
// keyring (shared by gateways on the same bucket).
func minioStore(t testing.TB) (storage.Store, *storage.Keyring) {
	t.Helper()
	srv := miniotest.Start(t)
	m, err := storage.NewMinIO(context.Background(), storage.MinIOConfig{
		Endpoint: srv.Endpoint, AccessKey: srv.AccessKey, SecretKey: srv.SecretKey, Bucket: srv.Bucket, UseTLS: srv.UseTLS,
	})
	if err != nil {
		t.Fatal(err)
	}
	kr, err := storage.GenerateKeyring(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return storage.NewEncrypted(m, kr), kr
}

func newArchive(t testing.TB, store storage.Store, nameHash func(kind, value string) string) *imaging.Archive {
	t.Helper()
	a, err := imaging.New(store, imaging.Options{Names: nameHash})
	if err != nil {
		t.Fatal(err)
	}
	// Deferred catalog counts are written before the store goes.
	t.Cleanup(func() {
		if err := a.Flush(context.Background()); err != nil {
			t.Errorf("flush: %v", err)
		}
	})
	return a
}

// ingest stores instances in one request and returns the results.
func ingest(t testing.TB, a *imaging.Archive, opts imaging.IngestOptions, instances ...[]byte) []*imaging.Result {
	t.Helper()
	ctx := context.Background()
	if opts.Org == "" {
		opts.Org = "st-marys"
	}
	in, err := a.Begin(opts)
	if err != nil {
		t.Fatal(err)
	}
	for _, b := range instances {
		if _, err := in.Add(ctx, bytes.NewReader(b)); err != nil {
			t.Fatal(err)
		}
	}
	return in.Commit(ctx)
}

func retrieve(t testing.TB, a *imaging.Archive, org, study, series, sop string) []byte {
	t.Helper()
	ctx := context.Background()
	st, err := a.Study(ctx, org, study)
	if err != nil {
		t.Fatal(err)
	}
	ins, err := st.Instances(series, sop)
	if err != nil {
		t.Fatal(err)
	}
	if len(ins) != 1 {
		t.Fatalf("%d instances", len(ins))
	}
	rc, err := a.Open(ctx, ins[0])
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// withUIDs returns a corpus instance with its SOP Instance UID (in the
// File Meta and the dataset) replaced by one of the same length, and
// optionally its Study UID, so that tests can make distinct instances.
func withUIDs(t testing.TB, b []byte, oldSOP, newSOP string) []byte {
	t.Helper()
	if len(oldSOP) != len(newSOP) {
		t.Fatalf("UIDs of different lengths")
	}
	if !bytes.Contains(b, []byte(oldSOP)) {
		t.Fatalf("UID not found")
	}
	return bytes.ReplaceAll(b, []byte(oldSOP), []byte(newSOP))
}

func isInvalid(rel string) bool { return strings.HasPrefix(rel, "invalid/") }
