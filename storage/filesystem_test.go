package storage_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/consilium/consilium/storage"
	"github.com/consilium/consilium/storage/internal/objfile"
	"github.com/consilium/consilium/storage/storagetest"
)

func newFilesystem(t testing.TB, opts ...storage.FilesystemOption) *storage.Filesystem {
	t.Helper()
	s, err := storage.NewFilesystem(filepath.Join(t.TempDir(), "store"), opts...)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestFilesystemContract(t *testing.T) {
	storagetest.Run(t, func(t *testing.T) storage.Store {
		s := newFilesystem(t)
		t.Cleanup(func() { checkNoTemp(t, s.Root()) })
		return s
	})
}

// checkNoTemp fails if a temporary file was left behind.
func checkNoTemp(t *testing.T, root string) {
	t.Helper()
	filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err == nil && strings.HasPrefix(d.Name(), "@tmp-") {
			t.Errorf("temporary file left behind: %s", p)
		}
		return nil
	})
}

func TestNewFilesystemRefusesForeignFolder(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "notes.txt"), []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := storage.NewFilesystem(dir); err == nil {
		t.Fatal("NewFilesystem accepted a non-empty folder that holds no store")
	}
	// Reopening a store is fine and keeps its objects.
	s := newFilesystem(t)
	storagetest.Put(t, s, "a/b", []byte("x"), storage.PutOptions{})
	s2, err := storage.NewFilesystem(s.Root())
	if err != nil {
		t.Fatal(err)
	}
	if got, _ := storagetest.Get(t, s2, "a/b", storage.GetOptions{}); string(got) != "x" {
		t.Errorf("reopened store returned %q", got)
	}
}

func TestFilesystemRetention(t *testing.T) {
	ctx := context.Background()
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	var mu sync.Mutex
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	s := newFilesystem(t, storage.WithFilesystemClock(clock))
	until := now.Add(time.Hour)
	storagetest.Put(t, s, "audit/0001", []byte("entry"), storage.PutOptions{
		Retention: &storage.Retention{Mode: storage.Compliance, Until: until},
	})
	st, err := os.Stat(filepath.Join(s.Root(), "audit", "0001@obj"))
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o444 {
		t.Errorf("retained file mode %v, want 0444", st.Mode().Perm())
	}
	if err := s.Delete(ctx, "audit/0001"); !errors.Is(err, storage.ErrLocked) {
		t.Errorf("Delete of retained object = %v, want ErrLocked", err)
	}
	if _, err := s.Put(ctx, "audit/0001", strings.NewReader("changed"), storage.PutOptions{}); !errors.Is(err, storage.ErrLocked) {
		t.Errorf("overwrite of retained object = %v, want ErrLocked", err)
	}
	if err := s.UpdateMetadata(ctx, "audit/0001", map[string]string{"a": "b"}, ""); !errors.Is(err, storage.ErrLocked) {
		t.Errorf("UpdateMetadata of retained object = %v, want ErrLocked", err)
	}
	if got, _ := storagetest.Get(t, s, "audit/0001", storage.GetOptions{}); string(got) != "entry" {
		t.Errorf("retained object changed to %q", got)
	}
	mu.Lock()
	now = until.Add(time.Second)
	mu.Unlock()
	if err := s.Delete(ctx, "audit/0001"); err != nil {
		t.Errorf("Delete after retention ended: %v", err)
	}
	if _, err := s.Put(ctx, "x", strings.NewReader("x"), storage.PutOptions{Retention: &storage.Retention{Mode: "FOREVER", Until: until}}); err == nil {
		t.Error("unknown retention mode accepted")
	}
}

func TestFilesystemUpdateMetadata(t *testing.T) {
	ctx := context.Background()
	s := newFilesystem(t)
	data := storagetest.Pattern(1, 100_000)
	i1 := storagetest.Put(t, s, "m/x", data, storage.PutOptions{ContentType: "application/dicom", Metadata: map[string]string{"a": "1"}})
	if err := s.UpdateMetadata(ctx, "m/x", map[string]string{"b": "2"}, "wrong"); !errors.Is(err, storage.ErrPreconditionFailed) {
		t.Errorf("UpdateMetadata with a stale ETag = %v", err)
	}
	if err := s.UpdateMetadata(ctx, "m/x", map[string]string{"b": "2"}, i1.ETag); err != nil {
		t.Fatal(err)
	}
	got, info := storagetest.Get(t, s, "m/x", storage.GetOptions{})
	if !bytes.Equal(got, data) || info.ContentType != "application/dicom" || info.Metadata["b"] != "2" || info.Metadata["a"] != "" {
		t.Errorf("after UpdateMetadata: %d bytes equal %t, info %+v", len(got), bytes.Equal(got, data), info)
	}
	if info.ETag == i1.ETag {
		t.Error("ETag unchanged by UpdateMetadata")
	}
	if err := s.UpdateMetadata(ctx, "m/missing", nil, ""); !errors.Is(err, storage.ErrNotFound) {
		t.Errorf("UpdateMetadata of missing object = %v", err)
	}
	checkNoTemp(t, s.Root())
}

// TestFilesystemCrossProcess runs IfAbsent and compare-and-swap from
// several processes at once against one folder: the flock(2) locks must
// hold across processes, not only goroutines.
func TestFilesystemCrossProcess(t *testing.T) {
	if os.Getenv("CONSILIUM_FS_CHILD") != "" {
		fsChild(t)
		return
	}
	s := newFilesystem(t)
	storagetest.Put(t, s, "cas/counter", []byte("0"), storage.PutOptions{})
	const procs = 4
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	outs := make([][]byte, procs)
	errs := make([]error, procs)
	for i := range procs {
		wg.Go(func() {
			cmd := exec.Command(exe, "-test.run=^TestFilesystemCrossProcess$", "-test.count=1")
			cmd.Env = append(os.Environ(), "CONSILIUM_FS_CHILD="+s.Root(), fmt.Sprintf("CONSILIUM_FS_CHILD_ID=%d", i))
			outs[i], errs[i] = cmd.CombinedOutput()
		})
	}
	wg.Wait()
	winners := 0
	for i := range procs {
		if errs[i] != nil {
			t.Fatalf("child %d: %v\n%s", i, errs[i], outs[i])
		}
		if bytes.Contains(outs[i], []byte("WON-IFABSENT")) {
			winners++
		}
	}
	if winners != 1 {
		t.Errorf("%d processes won the IfAbsent race, want 1", winners)
	}
	if got, _ := storagetest.Get(t, s, "cas/counter", storage.GetOptions{}); string(got) != fmt.Sprint(procs*10) {
		t.Errorf("counter = %s, want %d", got, procs*10)
	}
}

func fsChild(t *testing.T) {
	ctx := context.Background()
	s, err := storage.NewFilesystem(os.Getenv("CONSILIUM_FS_CHILD"))
	if err != nil {
		t.Fatal(err)
	}
	id := os.Getenv("CONSILIUM_FS_CHILD_ID")
	if _, err := s.Put(ctx, "race/once", strings.NewReader(id), storage.PutOptions{IfAbsent: true}); err == nil {
		fmt.Println("WON-IFABSENT")
	} else if !errors.Is(err, storage.ErrExists) {
		t.Fatal(err)
	}
	for range 10 {
		for {
			b, info, err := storagetest.ReadAll(s, "cas/counter", storage.GetOptions{})
			if err != nil {
				t.Fatal(err)
			}
			var v int
			fmt.Sscan(string(b), &v)
			_, err = s.Put(ctx, "cas/counter", strings.NewReader(fmt.Sprint(v+1)), storage.PutOptions{IfMatch: info.ETag})
			if errors.Is(err, storage.ErrPreconditionFailed) {
				continue
			}
			if err != nil {
				t.Fatal(err)
			}
			break
		}
	}
}

// TestFilesystemListScales lists 100k objects (about 2.5 s on two
// cores; 20k under the race detector). They are laid down
// directly in the on-disk format (no fsync per file) to keep the test
// quick; the walk is what is measured.
func TestFilesystemListScales(t *testing.T) {
	if testing.Short() {
		t.Skip("lays down 100k objects; skipped with -short")
	}
	ctx := context.Background()
	s := newFilesystem(t)
	n := 100_000
	if raceEnabled {
		n = 20_000 // the race detector makes each open ten times slower
	}
	hdr, err := (&objfile.Header{ETag: "e", ModTime: time.Now()}).Marshal()
	if err != nil {
		t.Fatal(err)
	}
	for i := range 251 {
		if err := os.MkdirAll(filepath.Join(s.Root(), "s", fmt.Sprintf("%02x", i)), 0o700); err != nil {
			t.Fatal(err)
		}
	}
	for i := range n {
		p := filepath.Join(s.Root(), "s", fmt.Sprintf("%02x", i%251), fmt.Sprintf("%06d@obj", i))
		if err := os.WriteFile(p, append(hdr, 'x'), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	start := time.Now()
	count, last := 0, ""
	for info, err := range s.List(ctx, "s/") {
		if err != nil {
			t.Fatal(err)
		}
		if info.Name <= last {
			t.Fatalf("List out of order: %q after %q", info.Name, last)
		}
		if info.Size != 1 {
			t.Fatalf("%s: size %d", info.Name, info.Size)
		}
		last = info.Name
		count++
	}
	if count != n {
		t.Errorf("listed %d objects, want %d", count, n)
	}
	t.Logf("listed %d objects in %v", n, time.Since(start))
	// A prefix inside one folder reads only that folder.
	start = time.Now()
	count = 0
	for _, err := range s.List(ctx, "s/07/0012") {
		if err != nil {
			t.Fatal(err)
		}
		count++
	}
	if count == 0 {
		t.Error("prefix listing found nothing")
	}
	t.Logf("listed %d objects under a narrow prefix in %v", count, time.Since(start))
}
