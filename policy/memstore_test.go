package policy

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"iter"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/consilium/consilium/storage"
)

// memStore is an in-memory storage.Store for these tests, with real
// IfAbsent and IfMatch semantics. The lead adds the same tests on the
// filesystem and MinIO backends once they are on main.
type memStore struct {
	mu      sync.Mutex
	objects map[string]memObject
	seq     int
	puts    map[string]int // Put calls by name prefix (first two segments)
	// beforePut, when set, runs before each Put (outside the lock), to
	// simulate a concurrent writer.
	beforePut func(name string)
}

type memObject struct {
	data []byte
	info storage.Info
}

var _ storage.Store = (*memStore)(nil)

func newMemStore() *memStore {
	return &memStore{objects: map[string]memObject{}, puts: map[string]int{}}
}

func (m *memStore) Put(ctx context.Context, name string, r io.Reader, opts storage.PutOptions) (storage.Info, error) {
	if err := ctx.Err(); err != nil {
		return storage.Info{}, err
	}
	if name == "" || strings.HasPrefix(name, "/") || strings.Contains(name, "..") || strings.ToLower(name) != name {
		return storage.Info{}, storage.ErrInvalidName
	}
	data, err := io.ReadAll(r)
	if err != nil {
		return storage.Info{}, err
	}
	if m.beforePut != nil {
		m.beforePut(name)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.puts[prefixOf(name)]++
	cur, exists := m.objects[name]
	if opts.IfAbsent && exists {
		return storage.Info{}, storage.ErrExists
	}
	if opts.IfMatch != "" && (!exists || cur.info.ETag != opts.IfMatch) {
		return storage.Info{}, storage.ErrPreconditionFailed
	}
	m.seq++
	sum := sha256.Sum256(append(data, fmt.Sprint(m.seq)...))
	info := storage.Info{
		Name: name, Size: int64(len(data)), ModTime: time.Now(), ETag: hex.EncodeToString(sum[:8]),
		ContentType: opts.ContentType, Metadata: maps.Clone(opts.Metadata),
	}
	m.objects[name] = memObject{data: data, info: info}
	return info, nil
}

func prefixOf(name string) string {
	parts := strings.SplitN(name, "/", 3)
	if len(parts) < 3 {
		return name
	}
	return parts[0] + "/" + parts[1]
}

func (m *memStore) Get(ctx context.Context, name string, opts storage.GetOptions) (io.ReadCloser, storage.Info, error) {
	if err := ctx.Err(); err != nil {
		return nil, storage.Info{}, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	o, ok := m.objects[name]
	if !ok {
		return nil, storage.Info{}, storage.ErrNotFound
	}
	data := o.data[min(opts.Offset, int64(len(o.data))):]
	if opts.Length > 0 && opts.Length < int64(len(data)) {
		data = data[:opts.Length]
	}
	return io.NopCloser(bytes.NewReader(bytes.Clone(data))), o.info, nil
}

func (m *memStore) Stat(ctx context.Context, name string) (storage.Info, error) {
	if err := ctx.Err(); err != nil {
		return storage.Info{}, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	o, ok := m.objects[name]
	if !ok {
		return storage.Info{}, storage.ErrNotFound
	}
	return o.info, nil
}

func (m *memStore) List(ctx context.Context, prefix string) iter.Seq2[storage.Info, error] {
	return func(yield func(storage.Info, error) bool) {
		if err := ctx.Err(); err != nil {
			yield(storage.Info{}, err)
			return
		}
		m.mu.Lock()
		var infos []storage.Info
		for n, o := range m.objects {
			if strings.HasPrefix(n, prefix) {
				infos = append(infos, o.info)
			}
		}
		m.mu.Unlock()
		slices.SortFunc(infos, func(a, b storage.Info) int { return strings.Compare(a.Name, b.Name) })
		for _, i := range infos {
			if !yield(i, nil) {
				return
			}
		}
	}
}

func (m *memStore) Delete(ctx context.Context, name string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, ok := m.objects[name]; !ok {
		return storage.ErrNotFound
	}
	delete(m.objects, name)
	return nil
}

func (m *memStore) putCount(prefix string) int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.puts[prefix]
}

func (m *memStore) count(prefix string) int {
	m.mu.Lock()
	defer m.mu.Unlock()
	n := 0
	for k := range m.objects {
		if strings.HasPrefix(k, prefix) {
			n++
		}
	}
	return n
}
