package policy

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/consilium/consilium/storage"
)

const (
	defaultRecordLimit = 1000
	decisionsPrefix    = "policies/decisions/"
	// maxRecordBatch bounds one batch object when read back.
	maxRecordBatch = 64 << 20
)

// recorder keeps the inputs of recent decisions for dry runs. Decide only
// appends to a bounded in-memory buffer; flush writes the buffer as one
// batch object and prunes batches beyond the limit, so the store sees one
// write per flush interval however many decisions are made.
//
// Batch objects are named
// policies/decisions/<unix nanoseconds, 20 digits>-<instance>-<count>.ndjson
// so that listing alone orders them and tells how many inputs each holds.
type recorder struct {
	store    storage.Store
	limit    int
	instance string

	mu      sync.Mutex
	pending [][]byte
}

func newRecorder(s storage.Store, limit int) *recorder {
	var id [8]byte
	_, _ = rand.Read(id[:]) // crypto/rand.Read never fails
	return &recorder{store: s, limit: limit, instance: hex.EncodeToString(id[:])}
}

// add keeps one canonical input, dropping the oldest beyond the limit.
func (r *recorder) add(raw []byte) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.pending) >= r.limit {
		r.pending = slices.Delete(r.pending, 0, len(r.pending)-r.limit+1)
	}
	r.pending = append(r.pending, raw)
}

// flush writes the pending inputs as one batch and prunes old batches. On
// failure the inputs stay pending for the next flush.
func (r *recorder) flush(ctx context.Context, now time.Time) error {
	r.mu.Lock()
	batch := r.pending
	r.pending = nil
	r.mu.Unlock()
	if len(batch) == 0 {
		return nil
	}
	var buf bytes.Buffer
	for _, raw := range batch {
		buf.Write(raw)
		buf.WriteByte('\n')
	}
	name := fmt.Sprintf("%s%020d-%s-%d.ndjson", decisionsPrefix, now.UnixNano(), r.instance, len(batch))
	if _, err := r.store.Put(ctx, name, bytes.NewReader(buf.Bytes()), storage.PutOptions{
		Size: int64(buf.Len()), ContentType: "application/x-ndjson",
	}); err != nil {
		r.requeue(batch)
		return fmt.Errorf("write decision inputs: %w", err)
	}
	return r.prune(ctx)
}

// requeue puts a batch that could not be written back before the inputs
// that arrived since, keeping the newest within the limit.
func (r *recorder) requeue(batch [][]byte) {
	r.mu.Lock()
	defer r.mu.Unlock()
	all := append(batch, r.pending...)
	if len(all) > r.limit {
		all = all[len(all)-r.limit:]
	}
	r.pending = all
}

type batchInfo struct {
	name  string
	count int
}

// batches lists the stored batches, newest first.
func (r *recorder) batches(ctx context.Context) ([]batchInfo, error) {
	var out []batchInfo
	for info, err := range r.store.List(ctx, decisionsPrefix) {
		if err != nil {
			return nil, fmt.Errorf("list decision inputs: %w", err)
		}
		base, ok := strings.CutSuffix(strings.TrimPrefix(info.Name, decisionsPrefix), ".ndjson")
		if !ok {
			continue
		}
		i := strings.LastIndexByte(base, '-')
		if i < 0 {
			continue
		}
		n, err := strconv.Atoi(base[i+1:])
		if err != nil || n <= 0 {
			continue
		}
		out = append(out, batchInfo{name: info.Name, count: n})
	}
	slices.SortFunc(out, func(a, b batchInfo) int { return strings.Compare(b.name, a.name) })
	return out, nil
}

// prune deletes the batches that only hold inputs older than the newest
// limit ones.
func (r *recorder) prune(ctx context.Context) error {
	bs, err := r.batches(ctx)
	if err != nil {
		return err
	}
	kept := 0
	var errs []error
	for _, b := range bs {
		if kept >= r.limit {
			if err := r.store.Delete(ctx, b.name); err != nil && !errors.Is(err, storage.ErrNotFound) {
				errs = append(errs, fmt.Errorf("delete old decision inputs: %w", err))
			}
			continue
		}
		kept += b.count
	}
	return errors.Join(errs...)
}

// recent returns up to limit recorded inputs, newest first.
func (r *recorder) recent(ctx context.Context) ([][]byte, error) {
	bs, err := r.batches(ctx)
	if err != nil {
		return nil, err
	}
	var out [][]byte
	for _, b := range bs {
		if len(out) >= r.limit {
			break
		}
		lines, err := r.read(ctx, b.name)
		if errors.Is(err, storage.ErrNotFound) {
			continue // pruned by another instance meanwhile
		}
		if err != nil {
			return nil, err
		}
		slices.Reverse(lines)
		out = append(out, lines...)
	}
	if len(out) > r.limit {
		out = out[:r.limit]
	}
	return out, nil
}

func (r *recorder) read(ctx context.Context, name string) ([][]byte, error) {
	rc, _, err := r.store.Get(ctx, name, storage.GetOptions{})
	if err != nil {
		return nil, fmt.Errorf("read decision inputs: %w", err)
	}
	defer rc.Close()
	sc := bufio.NewScanner(io.LimitReader(rc, maxRecordBatch))
	sc.Buffer(make([]byte, 0, 64<<10), maxRecordBatch)
	var lines [][]byte
	for sc.Scan() {
		if len(sc.Bytes()) == 0 {
			continue
		}
		lines = append(lines, bytes.Clone(sc.Bytes()))
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read decision inputs: %w", err)
	}
	return lines, nil
}
