package gateway_test

// TODO(storage): replace with storage.NewFilesystem once it lands.

import (
	"bytes"
	"context"
	"io"
	"iter"
	"sort"
	"strings"
	"sync"
	"testing"

	"github.com/consilium/consilium/storage"
)

type memStore struct {
	mu sync.Mutex
	m  map[string][]byte
}

func newTestStore(t *testing.T) storage.Store { return &memStore{m: map[string][]byte{}} }

func (s *memStore) Put(ctx context.Context, name string, r io.Reader, opts storage.PutOptions) (storage.Info, error) {
	b, err := io.ReadAll(r)
	if err != nil {
		return storage.Info{}, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.m[name] = b
	return storage.Info{Name: name, Size: int64(len(b))}, nil
}

func (s *memStore) Get(ctx context.Context, name string, opts storage.GetOptions) (io.ReadCloser, storage.Info, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	b, ok := s.m[name]
	if !ok {
		return nil, storage.Info{}, storage.ErrNotFound
	}
	return io.NopCloser(bytes.NewReader(b)), storage.Info{Name: name, Size: int64(len(b))}, nil
}

func (s *memStore) Stat(ctx context.Context, name string) (storage.Info, error) {
	_, info, err := s.Get(ctx, name, storage.GetOptions{})
	return info, err
}

func (s *memStore) List(ctx context.Context, prefix string) iter.Seq2[storage.Info, error] {
	return func(yield func(storage.Info, error) bool) {
		s.mu.Lock()
		var names []string
		for n := range s.m {
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
	if _, ok := s.m[name]; !ok {
		return storage.ErrNotFound
	}
	delete(s.m, name)
	return nil
}
