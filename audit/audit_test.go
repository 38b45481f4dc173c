package audit_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"testing"
	"time"

	"aead.dev/minisign"

	"github.com/consilium/consilium/audit"
	"github.com/consilium/consilium/internal/miniotest"
	"github.com/consilium/consilium/storage"
)

func TestMain(m *testing.M) { os.Exit(miniotest.Main(m)) }

func newKey(t testing.TB) minisign.PrivateKey {
	t.Helper()
	_, priv, err := minisign.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return priv
}

func pubOf(k minisign.PrivateKey) minisign.PublicKey { return k.Public().(minisign.PublicKey) }

func newFS(t testing.TB, opts ...storage.FilesystemOption) (*storage.Filesystem, string) {
	t.Helper()
	dir := t.TempDir()
	fs, err := storage.NewFilesystem(dir, opts...)
	if err != nil {
		t.Fatal(err)
	}
	return fs, dir
}

func newMinIO(t testing.TB, lock bool) *storage.MinIO {
	t.Helper()
	srv := miniotest.Start(t)
	m, err := storage.NewMinIO(context.Background(), storage.MinIOConfig{
		Endpoint: srv.Endpoint, AccessKey: srv.AccessKey, SecretKey: srv.SecretKey,
		Bucket: srv.Bucket, UseTLS: srv.UseTLS, ObjectLock: lock,
	})
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// sameMinIO opens a second client on the bucket of m, as a second
// gateway instance would.
func sameMinIO(t testing.TB, m *storage.MinIO, srv miniotest.Server) *storage.MinIO {
	t.Helper()
	m2, err := storage.NewMinIO(context.Background(), storage.MinIOConfig{
		Endpoint: srv.Endpoint, AccessKey: srv.AccessKey, SecretKey: srv.SecretKey,
		Bucket: m.Bucket(), UseTLS: srv.UseTLS,
	})
	if err != nil {
		t.Fatal(err)
	}
	return m2
}

func openLog(t testing.TB, store storage.Store, key minisign.PrivateKey, cfg audit.Config) *audit.Log {
	t.Helper()
	l, err := audit.Open(context.Background(), cfg, audit.Options{Store: store, Signer: key})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return l
}

func entry(i int) audit.Entry {
	return audit.Entry{
		RequestID: fmt.Sprintf("req-%d", i),
		Actor:     audit.Actor{ID: "dr-okafor", Org: "dr-okafor", Role: "specialist", Country: "US"},
		Action:    "case.packet.download",
		Method:    "GET",
		Target:    audit.Target{Case: fmt.Sprintf("c-%d", i%3), Patient: "p-7f3a"},
		Decision:  &audit.Decision{Allow: true, Reasons: []string{"assigned specialist with active consent"}, InputDigest: strings.Repeat("ab", 32), PolicyVersion: "v1"},
		Outcome:   200,
	}
}

// fixture writes five segments of three entries (seq 1-3, 4-6, ... 13-15)
// with checkpoints at 6, 12 and 15 (the last at Close).
func fixture(t *testing.T, store storage.Store, key minisign.PrivateKey, cfg audit.Config) {
	t.Helper()
	cfg.CheckpointEvery = 6
	l := openLog(t, store, key, cfg)
	ctx := context.Background()
	for s := 0; s < 5; s++ {
		batch := []audit.Entry{entry(3*s + 1), entry(3*s + 2), entry(3*s + 3)}
		out, err := l.RecordAll(ctx, batch)
		if err != nil {
			t.Fatal(err)
		}
		if out[0].Seq != uint64(3*s+1) {
			t.Fatalf("batch %d starts at seq %d", s, out[0].Seq)
		}
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if st := l.Stats(); st.Checkpoints != 3 || st.Segments != 5 || st.Appended != 15 {
		t.Fatalf("stats %+v, want 3 checkpoints, 5 segments, 15 entries", st)
	}
}

func seg(first int) string {
	return fmt.Sprintf("audit/log/%016d/%020d.ndjson", first/10000, first)
}

func cpName(seq uint64) string { return fmt.Sprintf("audit/checkpoints/%020d.checkpoint", ^seq) }

func get(t *testing.T, s storage.Store, name string) []byte {
	t.Helper()
	rc, _, err := s.Get(context.Background(), name, storage.GetOptions{})
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

func put(t *testing.T, s storage.Store, name string, data []byte) {
	t.Helper()
	if _, err := s.Put(context.Background(), name, bytes.NewReader(data), storage.PutOptions{}); err != nil {
		t.Fatal(err)
	}
}

func lines(b []byte) [][]byte {
	return bytes.SplitAfter(bytes.TrimSuffix(b, []byte("\n")), []byte("\n"))
}

func join(ls [][]byte) []byte {
	var out []byte
	for _, l := range ls {
		out = append(out, bytes.TrimSuffix(l, []byte("\n"))...)
		out = append(out, '\n')
	}
	return out
}

// editLine changes the actor of one line, keeping (rehash=false) or
// recomputing its hash.
func editLine(t *testing.T, line []byte, rehash bool) []byte {
	t.Helper()
	var obj map[string]any
	if err := json.Unmarshal(line, &obj); err != nil {
		t.Fatal(err)
	}
	obj["actor"].(map[string]any)["id"] = "mallory"
	out, err := json.Marshal(obj)
	if err != nil {
		t.Fatal(err)
	}
	if rehash {
		h, _, err := audit.EntryHash(out)
		if err != nil {
			t.Fatal(err)
		}
		obj["hash"] = h
		if out, err = json.Marshal(obj); err != nil {
			t.Fatal(err)
		}
	}
	return out
}

type tamperCase struct {
	name   string
	tamper func(t *testing.T, s storage.Store)
	want   audit.Problem // Detail ignored
}

func tamperCases() []tamperCase {
	return []tamperCase{
		{"delete a middle segment", func(t *testing.T, s storage.Store) {
			if err := s.Delete(context.Background(), seg(7)); err != nil {
				t.Fatal(err)
			}
		}, audit.Problem{Kind: audit.ProblemMissing, Seq: 7, Object: seg(7), Index: -1}},
		{"delete the first segment", func(t *testing.T, s storage.Store) {
			if err := s.Delete(context.Background(), seg(1)); err != nil {
				t.Fatal(err)
			}
		}, audit.Problem{Kind: audit.ProblemMissing, Seq: 1, Object: seg(1), Index: -1}},
		{"edit an entry", func(t *testing.T, s storage.Store) {
			ls := lines(get(t, s, seg(4)))
			ls[1] = editLine(t, ls[1], false)
			put(t, s, seg(4), join(ls))
		}, audit.Problem{Kind: audit.ProblemHash, Seq: 5, Object: seg(4), Index: 1}},
		{"edit an entry and its hash", func(t *testing.T, s storage.Store) {
			ls := lines(get(t, s, seg(4)))
			ls[1] = editLine(t, ls[1], true)
			put(t, s, seg(4), join(ls))
		}, audit.Problem{Kind: audit.ProblemLink, Seq: 6, Object: seg(4), Index: 2}},
		{"edit the last entry of a segment and its hash", func(t *testing.T, s storage.Store) {
			ls := lines(get(t, s, seg(7)))
			ls[2] = editLine(t, ls[2], true)
			put(t, s, seg(7), join(ls))
		}, audit.Problem{Kind: audit.ProblemLink, Seq: 10, Object: seg(10), Index: 0}},
		{"reorder entries", func(t *testing.T, s storage.Store) {
			ls := lines(get(t, s, seg(4)))
			ls[0], ls[1] = ls[1], ls[0]
			put(t, s, seg(4), join(ls))
		}, audit.Problem{Kind: audit.ProblemOrder, Seq: 4, Object: seg(4), Index: 0}},
		{"reorder segments", func(t *testing.T, s storage.Store) {
			a, b := get(t, s, seg(4)), get(t, s, seg(7))
			put(t, s, seg(4), b)
			put(t, s, seg(7), a)
		}, audit.Problem{Kind: audit.ProblemOrder, Seq: 4, Object: seg(4), Index: 0}},
		{"remove an entry inside a segment", func(t *testing.T, s storage.Store) {
			ls := lines(get(t, s, seg(7)))
			put(t, s, seg(7), join([][]byte{ls[0], ls[2]}))
		}, audit.Problem{Kind: audit.ProblemOrder, Seq: 8, Object: seg(7), Index: 1}},
		{"truncate the last segment", func(t *testing.T, s storage.Store) {
			if err := s.Delete(context.Background(), seg(13)); err != nil {
				t.Fatal(err)
			}
		}, audit.Problem{Kind: audit.ProblemTruncated, Seq: 13, Object: cpName(15), Index: -1}},
		{"truncate entries of the last segment", func(t *testing.T, s storage.Store) {
			ls := lines(get(t, s, seg(13)))
			put(t, s, seg(13), join(ls[:1]))
		}, audit.Problem{Kind: audit.ProblemTruncated, Seq: 14, Object: cpName(15), Index: -1}},
		{"cut a segment mid-line", func(t *testing.T, s storage.Store) {
			b := get(t, s, seg(10))
			put(t, s, seg(10), b[:len(b)-20])
		}, audit.Problem{Kind: audit.ProblemUnreadable, Seq: 10, Object: seg(10), Index: -1}},
		{"edit a checkpoint", func(t *testing.T, s storage.Store) {
			b := get(t, s, cpName(12))
			put(t, s, cpName(12), bytes.Replace(b, []byte(`"seq":12`), []byte(`"seq":11`), 1))
		}, audit.Problem{Kind: audit.ProblemCheckpoint, Seq: 12, Object: cpName(12), Index: -1}},
		{"forge a checkpoint with another key", func(t *testing.T, s storage.Store) {
			// A genuine-looking statement for seq 9, signed by a key
			// that is not the gateway's.
			b := get(t, s, cpName(12))
			stmt := bytes.Replace(b[:bytes.IndexByte(b, '\n')+1], []byte(`"seq":12`), []byte(`"seq":9`), 1)
			forged := append(stmt, minisign.Sign(newKey(t), stmt)...)
			put(t, s, cpName(9), forged)
		}, audit.Problem{Kind: audit.ProblemCheckpoint, Seq: 9, Object: cpName(9), Index: -1}},
		{"a stray object in the log", func(t *testing.T, s storage.Store) {
			put(t, s, "audit/log/0000000000000000/notes.txt", []byte("x"))
		}, audit.Problem{Kind: audit.ProblemStray, Seq: 16, Object: "audit/log/0000000000000000/notes.txt", Index: -1}},
	}
}

// runTamper builds the fixture in a fresh store for each case, tampers
// with it through tamperStore and checks the first problem verification
// reports.
func runTamper(t *testing.T, newStores func(t *testing.T) (log, tamper storage.Store), cfg audit.Config) {
	for _, tc := range tamperCases() {
		t.Run(tc.name, func(t *testing.T) {
			key := newKey(t)
			store, tamper := newStores(t)
			fixture(t, store, key, cfg)
			ctx := context.Background()
			rep, err := audit.Verify(ctx, store, audit.VerifyOptions{PublicKey: pubOf(key)})
			if err != nil {
				t.Fatal(err)
			}
			if !rep.OK || rep.Entries != 15 || rep.Segments != 5 || rep.Checkpoints != 3 || rep.Head.Seq != 15 || rep.Uncovered != 0 {
				t.Fatalf("untouched log: %+v", rep)
			}
			tc.tamper(t, tamper)
			rep, err = audit.Verify(ctx, store, audit.VerifyOptions{PublicKey: pubOf(key)})
			if err != nil {
				t.Fatal(err)
			}
			first := rep.First()
			if rep.OK || first == nil {
				t.Fatalf("tampering not detected: %+v", rep)
			}
			got := *first
			got.Detail = ""
			if got != tc.want {
				t.Errorf("first problem = %+v\nwant %+v\nall: %v", *first, tc.want, rep.Problems)
			}
			t.Logf("detected: %s", first)
		})
	}
}

func TestTamperFilesystem(t *testing.T) {
	// The log writes with retention (read-only files); the tamperer
	// uses the same folder with a clock past the retention, as someone
	// with access to the disk could.
	runTamper(t, func(t *testing.T) (storage.Store, storage.Store) {
		s, dir := newFS(t)
		later, err := storage.NewFilesystem(dir, storage.WithFilesystemClock(func() time.Time { return time.Now().AddDate(10, 0, 0) }))
		if err != nil {
			t.Fatal(err)
		}
		return s, later
	}, audit.Config{RetentionMode: audit.RetentionGovernance, RetentionDays: 1})
}

func TestTamperMinIO(t *testing.T) {
	// A bucket without object lock, where whoever holds the bucket's
	// credentials can rewrite objects: verification must still find it.
	runTamper(t, func(t *testing.T) (storage.Store, storage.Store) {
		m := newMinIO(t, false)
		return m, m
	}, audit.Config{})
}

func TestFilesystemRetention(t *testing.T) {
	s, dir := newFS(t)
	key := newKey(t)
	fixture(t, s, key, audit.Config{RetentionMode: audit.RetentionGovernance, RetentionDays: 1})
	ctx := context.Background()
	if err := s.Delete(ctx, seg(4)); !errors.Is(err, storage.ErrLocked) {
		t.Errorf("Delete of a segment = %v, want ErrLocked", err)
	}
	if _, err := s.Put(ctx, seg(4), strings.NewReader("x"), storage.PutOptions{}); !errors.Is(err, storage.ErrLocked) {
		t.Errorf("overwrite of a segment = %v, want ErrLocked", err)
	}
	// The files themselves are read-only.
	matches, err := globObjects(dir)
	if err != nil || len(matches) < 8 {
		t.Fatalf("object files: %v %v", matches, err)
	}
	for _, m := range matches {
		fi, err := os.Stat(m)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm()&0o222 != 0 {
			t.Errorf("%s is writable: %v", m, fi.Mode())
		}
	}
}

func globObjects(dir string) ([]string, error) {
	var out []string
	for _, pattern := range []string{"/audit/log/*/*@obj", "/audit/checkpoints/*@obj"} {
		m, err := filepathGlob(dir + pattern)
		if err != nil {
			return nil, err
		}
		out = append(out, m...)
	}
	return out, nil
}
