package audit_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"

	"github.com/minio/minio-go/v7"

	"github.com/consilium/consilium/audit"
	"github.com/consilium/consilium/internal/miniotest"
	"github.com/consilium/consilium/storage"
)

// TestMinIOObjectLock checks what object lock guarantees for the log and
// what verification makes of the operations MinIO does allow on a
// locked, versioned bucket.
func TestMinIOObjectLock(t *testing.T) {
	ctx := context.Background()
	m := newMinIO(t, true)
	key := newKey(t)
	fixture(t, m, key, audit.Config{RetentionMode: audit.RetentionGovernance, RetentionDays: 1})
	cli, bucket := m.Client(), m.Bucket()

	oi, err := cli.StatObject(ctx, bucket, seg(4), minio.StatObjectOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if oi.Metadata.Get("X-Amz-Object-Lock-Mode") != "GOVERNANCE" || oi.VersionID == "" {
		t.Fatalf("segment not under governance lock: mode %q version %q", oi.Metadata.Get("X-Amz-Object-Lock-Mode"), oi.VersionID)
	}

	// MinIO itself refuses to delete the locked version, whoever asks.
	err = cli.RemoveObject(ctx, bucket, seg(4), minio.RemoveObjectOptions{VersionID: oi.VersionID})
	var er minio.ErrorResponse
	if !errors.As(err, &er) || !strings.Contains(er.Message, "WORM") {
		t.Fatalf("server-side delete of a locked segment version = %v, want a WORM refusal", err)
	}
	cp, err := cli.StatObject(ctx, bucket, cpName(12), minio.StatObjectOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if err := cli.RemoveObject(ctx, bucket, cpName(12), minio.RemoveObjectOptions{VersionID: cp.VersionID}); err == nil {
		t.Fatal("MinIO deleted a locked checkpoint version")
	}
	// The storage layer refuses too.
	if err := m.Delete(ctx, seg(4)); !errors.Is(err, storage.ErrLocked) {
		t.Errorf("store Delete = %v, want ErrLocked", err)
	}
	if _, err := m.Put(ctx, seg(4), strings.NewReader("x"), storage.PutOptions{}); !errors.Is(err, storage.ErrLocked) {
		t.Errorf("store overwrite = %v, want ErrLocked", err)
	}
	rep, err := audit.Verify(ctx, m, audit.VerifyOptions{PublicKey: pubOf(key)})
	if err != nil || !rep.OK || rep.Entries != 15 || !rep.VersionsChecked {
		t.Fatalf("after refused attacks: %+v %v", rep, err)
	}

	// What a locked bucket does allow: a plain PUT adds a new version
	// on top (the locked original stays), a plain DELETE adds a delete
	// marker. Verification reads the original version of each object and
	// reports the overwrite at the exact object.
	forged := bytes.ReplaceAll(get(t, m, seg(4)), []byte("dr-okafor"), []byte("mallory"))
	if _, err := cli.PutObject(ctx, bucket, seg(4), bytes.NewReader(forged), int64(len(forged)), minio.PutObjectOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := cli.RemoveObject(ctx, bucket, seg(10), minio.RemoveObjectOptions{}); err != nil {
		t.Fatal(err)
	}
	rep, err = audit.Verify(ctx, m, audit.VerifyOptions{PublicKey: pubOf(key)})
	if err != nil {
		t.Fatal(err)
	}
	want := []audit.Problem{
		{Kind: audit.ProblemOverwritten, Seq: 4, Object: seg(4), Index: -1},
		{Kind: audit.ProblemOverwritten, Seq: 10, Object: seg(10), Index: -1},
	}
	checkProblems(t, rep, want)
	if rep.Entries != 15 {
		t.Errorf("verified %d entries of the original versions, want 15", rep.Entries)
	}

	// Governance retention can be bypassed by a privileged user; that
	// deletion is then a gap in the chain.
	o7, err := cli.StatObject(ctx, bucket, seg(7), minio.StatObjectOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if err := cli.RemoveObject(ctx, bucket, seg(7), minio.RemoveObjectOptions{VersionID: o7.VersionID, GovernanceBypass: true}); err != nil {
		t.Fatalf("governance bypass delete: %v", err)
	}
	rep, err = audit.Verify(ctx, m, audit.VerifyOptions{PublicKey: pubOf(key)})
	if err != nil {
		t.Fatal(err)
	}
	checkProblems(t, rep, []audit.Problem{
		want[0],
		{Kind: audit.ProblemMissing, Seq: 7, Object: seg(7), Index: -1},
		want[1],
	})
}

func checkProblems(t *testing.T, rep *audit.Report, want []audit.Problem) {
	t.Helper()
	var got []audit.Problem
	for _, p := range rep.Problems {
		p.Detail = ""
		got = append(got, p)
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("problems:\n got %v\nwant %v\nfull: %v", got, want, rep.Problems)
	}
}

// TestTwoInstancesOneMinIO runs two logs, as two gateway instances, on
// one bucket, appending at the same time: the result must be one chain
// holding every entry exactly once.
func TestTwoInstancesOneMinIO(t *testing.T) {
	srv := miniotest.Start(t)
	ctx := context.Background()
	first, err := storage.NewMinIO(ctx, storage.MinIOConfig{
		Endpoint: srv.Endpoint, AccessKey: srv.AccessKey, SecretKey: srv.SecretKey,
		Bucket: srv.Bucket, UseTLS: srv.UseTLS, ObjectLock: true,
	})
	if err != nil {
		t.Fatal(err)
	}
	second, err := storage.NewMinIO(ctx, storage.MinIOConfig{
		Endpoint: srv.Endpoint, AccessKey: srv.AccessKey, SecretKey: srv.SecretKey,
		Bucket: srv.Bucket, UseTLS: srv.UseTLS, ObjectLock: true,
	})
	if err != nil {
		t.Fatal(err)
	}
	key := newKey(t)
	cfg := audit.Config{RetentionMode: audit.RetentionGovernance, RetentionDays: 1, CheckpointEvery: 50}
	cfg.Source = "gw-a"
	a := openLog(t, first, key, cfg)
	cfg.Source = "gw-b"
	b := openLog(t, second, key, cfg)

	const writers, each = 8, 40
	var wg sync.WaitGroup
	errs := make(chan error, 2*writers*each)
	for _, l := range []*audit.Log{a, b} {
		for w := range writers {
			wg.Go(func() {
				for i := range each {
					e := entry(i)
					e.RequestID = fmt.Sprintf("%s-%d-%d", l.Source(), w, i)
					if _, err := l.Record(ctx, e); err != nil {
						errs <- err
					}
				}
			})
		}
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	a.Close()
	b.Close()
	total := 2 * writers * each
	sa, sb := a.Stats(), b.Stats()
	t.Logf("gw-a: %+v; gw-b: %+v", sa, sb)
	if int(sa.Appended+sb.Appended) != total {
		t.Fatalf("appended %d+%d, want %d", sa.Appended, sb.Appended, total)
	}

	rep, err := audit.Verify(ctx, first, audit.VerifyOptions{PublicKey: pubOf(key)})
	if err != nil {
		t.Fatal(err)
	}
	if !rep.OK || rep.Entries != uint64(total) || rep.Head.Seq != uint64(total) {
		t.Fatalf("verify: ok=%v entries=%d head=%d problems=%v", rep.OK, rep.Entries, rep.Head.Seq, rep.Problems)
	}
	seen := map[string]int{}
	sources := map[string]int{}
	for e, err := range audit.Read(ctx, first, audit.DefaultPrefix, audit.Filter{}) {
		if err != nil {
			t.Fatal(err)
		}
		seen[e.RequestID]++
		sources[e.Source]++
	}
	if len(seen) != total {
		t.Errorf("%d distinct entries in the chain, want %d", len(seen), total)
	}
	for id, n := range seen {
		if n != 1 {
			t.Errorf("entry %s recorded %d times", id, n)
		}
	}
	if sources["gw-a"] != writers*each || sources["gw-b"] != writers*each {
		t.Errorf("entries by source: %v", sources)
	}
	// A third instance opening now finds the same head.
	c := openLog(t, second, key, audit.Config{Source: "gw-c"})
	if h := c.Head(); h != rep.Head {
		t.Errorf("a new instance found head %+v, verify says %+v", h, rep.Head)
	}
}
