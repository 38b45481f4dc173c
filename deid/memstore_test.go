package deid_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"iter"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/consilium/consilium/storage"
)

// memStore is an in-memory storage.Store that keeps the contract the
// mapping relies on (IfAbsent, IfMatch, ErrNotFound). It counts writes so
// tests can check batching.
type memStore struct {
	mu   sync.Mutex
	objs map[string][]byte
	etag map[string]string
	n    int
	puts atomic.Int64
	// delay slows every call, to widen race windows in concurrency tests.
	delay time.Duration
}

func newMemStore() *memStore {
	return &memStore{objs: map[string][]byte{}, etag: map[string]string{}}
}

var _ storage.Store = (*memStore)(nil)

func (s *memStore) Put(ctx context.Context, name string, r io.Reader, opts storage.PutOptions) (storage.Info, error) {
	if strings.Trim(name, "abcdefghijklmnopqrstuvwxyz0123456789._-/") != "" {
		return storage.Info{}, storage.ErrInvalidName
	}
	b, err := io.ReadAll(r)
	if err != nil {
		return storage.Info{}, err
	}
	time.Sleep(s.delay)
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.objs[name]; ok && opts.IfAbsent {
		return storage.Info{}, storage.ErrExists
	}
	if opts.IfMatch != "" && s.etag[name] != opts.IfMatch {
		return storage.Info{}, storage.ErrPreconditionFailed
	}
	s.n++
	s.objs[name] = b
	s.etag[name] = fmt.Sprint(s.n)
	s.puts.Add(1)
	return storage.Info{Name: name, Size: int64(len(b)), ETag: s.etag[name]}, nil
}

func (s *memStore) Get(ctx context.Context, name string, opts storage.GetOptions) (io.ReadCloser, storage.Info, error) {
	time.Sleep(s.delay)
	s.mu.Lock()
	defer s.mu.Unlock()
	b, ok := s.objs[name]
	if !ok {
		return nil, storage.Info{}, storage.ErrNotFound
	}
	return io.NopCloser(bytes.NewReader(b)), storage.Info{Name: name, Size: int64(len(b)), ETag: s.etag[name]}, nil
}

func (s *memStore) Stat(ctx context.Context, name string) (storage.Info, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	b, ok := s.objs[name]
	if !ok {
		return storage.Info{}, storage.ErrNotFound
	}
	return storage.Info{Name: name, Size: int64(len(b)), ETag: s.etag[name]}, nil
}

func (s *memStore) List(ctx context.Context, prefix string) iter.Seq2[storage.Info, error] {
	return func(yield func(storage.Info, error) bool) {
		s.mu.Lock()
		var names []string
		for n := range s.objs {
			if strings.HasPrefix(n, prefix) {
				names = append(names, n)
			}
		}
		s.mu.Unlock()
		sort.Strings(names)
		for _, n := range names {
			if !yield(storage.Info{Name: n}, nil) {
				return
			}
		}
	}
}

func (s *memStore) Delete(ctx context.Context, name string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.objs[name]; !ok {
		return storage.ErrNotFound
	}
	delete(s.objs, name)
	return nil
}

// all returns every stored byte, for leak checks on names and contents.
func (s *memStore) names() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []string
	for n := range s.objs {
		out = append(out, n)
	}
	return out
}
