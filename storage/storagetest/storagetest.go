// Package storagetest is the contract every [storage.Store] must meet,
// as a test suite. Run it from a backend's tests:
//
//	func TestContract(t *testing.T) {
//		storagetest.Run(t, func(t *testing.T) storage.Store { return newStore(t) })
//	}
//
// newStore must return an empty store for each call; the suite calls it
// once per case.
package storagetest

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"maps"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/consilium/consilium/storage"
)

// Run runs the contract suite against stores made by newStore.
func Run(t *testing.T, newStore func(t *testing.T) storage.Store) {
	tests := []struct {
		name string
		fn   func(t *testing.T, s storage.Store)
	}{
		{"RoundTrip", testRoundTrip},
		{"UnknownSize", testUnknownSize},
		{"SizeMismatch", testSizeMismatch},
		{"Empty", testEmpty},
		{"Range", testRange},
		{"NotFound", testNotFound},
		{"InvalidName", testInvalidName},
		{"InvalidMetadata", testInvalidMetadata},
		{"List", testList},
		{"Overwrite", testOverwrite},
		{"Delete", testDelete},
		{"IfAbsent", testIfAbsent},
		{"IfAbsentRace", testIfAbsentRace},
		{"IfMatch", testIfMatch},
		{"IfMatchCounter", testIfMatchCounter},
		{"CancelledPut", testCancelledPut},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.fn(t, newStore(t))
		})
	}
}

// Pattern returns n deterministic pseudo-random bytes for seed.
func Pattern(seed uint64, n int) []byte {
	b := make([]byte, n)
	r := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	for i := 0; i < n; i += 8 {
		v := r.Uint64()
		for j := 0; j < 8 && i+j < n; j++ {
			b[i+j] = byte(v >> (8 * j))
		}
	}
	return b
}

// hideSize hides everything but Read, so that a store cannot learn the
// size or seek.
type hideSize struct{ r io.Reader }

func (h hideSize) Read(p []byte) (int, error) { return h.r.Read(p) }

// Put stores data under name with opts and fails the test on error.
func Put(t testing.TB, s storage.Store, name string, data []byte, opts storage.PutOptions) storage.Info {
	t.Helper()
	info, err := s.Put(context.Background(), name, bytes.NewReader(data), opts)
	if err != nil {
		t.Fatalf("Put(%s): %v", name, err)
	}
	return info
}

// Get reads the whole object (or range) and fails the test on error.
func Get(t testing.TB, s storage.Store, name string, opts storage.GetOptions) ([]byte, storage.Info) {
	t.Helper()
	b, info, err := ReadAll(s, name, opts)
	if err != nil {
		t.Fatalf("Get(%s, %+v): %v", name, opts, err)
	}
	return b, info
}

// ReadAll opens and reads the object (or range).
func ReadAll(s storage.Store, name string, opts storage.GetOptions) ([]byte, storage.Info, error) {
	rc, info, err := s.Get(context.Background(), name, opts)
	if err != nil {
		return nil, info, err
	}
	defer rc.Close()
	b, err := io.ReadAll(rc)
	return b, info, err
}

func checkInfo(t *testing.T, what string, got storage.Info, name string, size int64, ct string, meta map[string]string) {
	t.Helper()
	if got.Name != name {
		t.Errorf("%s: Name = %q, want %q", what, got.Name, name)
	}
	if got.Size != size {
		t.Errorf("%s: Size = %d, want %d", what, got.Size, size)
	}
	if got.ETag == "" {
		t.Errorf("%s: empty ETag", what)
	}
	if got.ModTime.IsZero() {
		t.Errorf("%s: zero ModTime", what)
	}
	if ct != "" && got.ContentType != ct {
		t.Errorf("%s: ContentType = %q, want %q", what, got.ContentType, ct)
	}
	if meta != nil && !maps.Equal(got.Metadata, meta) {
		t.Errorf("%s: Metadata = %v, want %v", what, got.Metadata, meta)
	}
}

func testRoundTrip(t *testing.T, s storage.Store) {
	ctx := context.Background()
	data := Pattern(1, 300_001)
	meta := map[string]string{"kind": "dicom-instance", "x-count": "3"}
	opts := storage.PutOptions{Size: int64(len(data)), ContentType: "application/dicom", Metadata: meta}
	pi := Put(t, s, "rt/obj.dcm", data, opts)
	checkInfo(t, "Put", pi, "rt/obj.dcm", int64(len(data)), "application/dicom", meta)

	got, gi := Get(t, s, "rt/obj.dcm", storage.GetOptions{})
	if !bytes.Equal(got, data) {
		t.Fatalf("Get returned %d bytes that differ from the %d put", len(got), len(data))
	}
	checkInfo(t, "Get", gi, "rt/obj.dcm", int64(len(data)), "application/dicom", meta)
	if gi.ETag != pi.ETag {
		t.Errorf("Get ETag %q, Put ETag %q", gi.ETag, pi.ETag)
	}
	si, err := s.Stat(ctx, "rt/obj.dcm")
	if err != nil {
		t.Fatal(err)
	}
	checkInfo(t, "Stat", si, "rt/obj.dcm", int64(len(data)), "application/dicom", meta)
	if si.ETag != pi.ETag {
		t.Errorf("Stat ETag %q, Put ETag %q", si.ETag, pi.ETag)
	}

	// No content type given: the default is reported.
	Put(t, s, "rt/plain", []byte("x"), storage.PutOptions{})
	si, err = s.Stat(ctx, "rt/plain")
	if err != nil {
		t.Fatal(err)
	}
	checkInfo(t, "Stat default", si, "rt/plain", 1, storage.DefaultContentType, map[string]string{})
}

func testUnknownSize(t *testing.T, s storage.Store) {
	// Larger than one MinIO part (16 MiB) so that backends that upload
	// in parts use more than one.
	const n = 20<<20 + 12345
	data := Pattern(2, n)
	info, err := s.Put(context.Background(), "big/unknown", hideSize{bytes.NewReader(data)}, storage.PutOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if info.Size != n {
		t.Errorf("Put Size = %d, want %d", info.Size, n)
	}
	got, gi := Get(t, s, "big/unknown", storage.GetOptions{})
	if sha256.Sum256(got) != sha256.Sum256(data) {
		t.Fatalf("round trip of %d bytes of unknown size changed them (got %d bytes)", n, len(got))
	}
	if gi.Size != n {
		t.Errorf("Get Size = %d, want %d", gi.Size, n)
	}
	// A small object of unknown size too.
	small := Pattern(3, 1000)
	if _, err := s.Put(context.Background(), "big/small", hideSize{bytes.NewReader(small)}, storage.PutOptions{}); err != nil {
		t.Fatal(err)
	}
	if got, _ := Get(t, s, "big/small", storage.GetOptions{}); !bytes.Equal(got, small) {
		t.Fatal("small object of unknown size changed")
	}
}

func testSizeMismatch(t *testing.T, s storage.Store) {
	ctx := context.Background()
	for _, tc := range []struct {
		name string
		size int64
		n    int
	}{{"short", 100, 50}, {"long", 50, 100}} {
		t.Run(tc.name, func(t *testing.T) {
			name := "mismatch/" + tc.name
			_, err := s.Put(ctx, name, hideSize{bytes.NewReader(Pattern(4, tc.n))}, storage.PutOptions{Size: tc.size})
			if err == nil {
				t.Fatalf("Put with Size %d of %d bytes succeeded", tc.size, tc.n)
			}
			if _, err := s.Stat(ctx, name); !errors.Is(err, storage.ErrNotFound) {
				t.Errorf("after failed Put, Stat = %v, want ErrNotFound", err)
			}
		})
	}
}

func testEmpty(t *testing.T, s storage.Store) {
	for _, hide := range []bool{false, true} {
		name := fmt.Sprintf("empty/%t", hide)
		var r io.Reader = bytes.NewReader(nil)
		if hide {
			r = hideSize{r}
		}
		info, err := s.Put(context.Background(), name, r, storage.PutOptions{ContentType: "text/plain"})
		if err != nil {
			t.Fatal(err)
		}
		checkInfo(t, "Put", info, name, 0, "text/plain", nil)
		got, gi := Get(t, s, name, storage.GetOptions{})
		if len(got) != 0 {
			t.Errorf("empty object read back as %d bytes", len(got))
		}
		checkInfo(t, "Get", gi, name, 0, "text/plain", nil)
		if _, _, err := ReadAll(s, name, storage.GetOptions{Offset: 1}); !errors.Is(err, storage.ErrInvalidRange) {
			t.Errorf("Get offset 1 of empty = %v, want ErrInvalidRange", err)
		}
	}
}

func testRange(t *testing.T, s storage.Store) {
	const pkg = 64 << 10 // DARE package size, where encrypted stores split
	n := 3*pkg + 777
	data := Pattern(5, n)
	Put(t, s, "range/obj", data, storage.PutOptions{})
	tests := []struct {
		name        string
		off, length int64
		want        []byte
		err         error
	}{
		{"whole", 0, 0, data, nil},
		{"first byte", 0, 1, data[:1], nil},
		{"inner", 1, 10, data[1:11], nil},
		{"last byte", int64(n - 1), 0, data[n-1:], nil},
		{"last byte with length", int64(n - 1), 1, data[n-1:], nil},
		{"at end", int64(n), 0, nil, nil},
		{"across package boundary", pkg - 1, 2, data[pkg-1 : pkg+1], nil},
		{"exact package", pkg, pkg, data[pkg : 2*pkg], nil},
		{"to end from package", 3 * pkg, 0, data[3*pkg:], nil},
		{"length past end", 100, int64(n), data[100:], nil},
		{"spanning all packages", 10, int64(n - 20), data[10 : n-10], nil},
		{"past end", int64(n + 1), 0, nil, storage.ErrInvalidRange},
		{"negative offset", -1, 0, nil, storage.ErrInvalidRange},
		{"negative length", 0, -1, nil, storage.ErrInvalidRange},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, info, err := ReadAll(s, "range/obj", storage.GetOptions{Offset: tt.off, Length: tt.length})
			if tt.err != nil {
				if !errors.Is(err, tt.err) {
					t.Fatalf("Get = %v, want %v", err, tt.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, tt.want) {
				t.Errorf("got %d bytes, want %d (content differs: %t)", len(got), len(tt.want), len(got) == len(tt.want))
			}
			if info.Size != int64(n) {
				t.Errorf("Info.Size = %d, want the object's size %d", info.Size, n)
			}
		})
	}
}

func testNotFound(t *testing.T, s storage.Store) {
	ctx := context.Background()
	if _, _, err := s.Get(ctx, "nf/x", storage.GetOptions{}); !errors.Is(err, storage.ErrNotFound) {
		t.Errorf("Get = %v, want ErrNotFound", err)
	}
	if _, _, err := s.Get(ctx, "nf/x", storage.GetOptions{Offset: 5, Length: 5}); !errors.Is(err, storage.ErrNotFound) {
		t.Errorf("Get range = %v, want ErrNotFound", err)
	}
	if _, err := s.Stat(ctx, "nf/x"); !errors.Is(err, storage.ErrNotFound) {
		t.Errorf("Stat = %v, want ErrNotFound", err)
	}
	if err := s.Delete(ctx, "nf/x"); !errors.Is(err, storage.ErrNotFound) {
		t.Errorf("Delete = %v, want ErrNotFound", err)
	}
	for info, err := range s.List(ctx, "nf/") {
		t.Errorf("List of empty prefix yielded %v, %v", info.Name, err)
	}
}

// InvalidNames are names every store must refuse.
var InvalidNames = []string{
	"", "/a", "a/", "a//b", "A", "a/./b", "a/../b", ".", "..", "a b", "a\x00b",
	"caf\u00e9", "a\\b", "a@obj", "a:b", "a?b", "a#b", "a%2fb", "\n",
	strings.Repeat("a", storage.MaxNameLen+1),
}

func testInvalidName(t *testing.T, s storage.Store) {
	ctx := context.Background()
	for _, name := range InvalidNames {
		t.Run(strconv.Quote(name), func(t *testing.T) {
			if _, err := s.Put(ctx, name, strings.NewReader("x"), storage.PutOptions{}); !errors.Is(err, storage.ErrInvalidName) {
				t.Errorf("Put = %v", err)
			}
			if _, _, err := s.Get(ctx, name, storage.GetOptions{}); !errors.Is(err, storage.ErrInvalidName) {
				t.Errorf("Get = %v", err)
			}
			if _, err := s.Stat(ctx, name); !errors.Is(err, storage.ErrInvalidName) {
				t.Errorf("Stat = %v", err)
			}
			if err := s.Delete(ctx, name); !errors.Is(err, storage.ErrInvalidName) {
				t.Errorf("Delete = %v", err)
			}
		})
	}
	// The longest valid name works.
	long := strings.Repeat("a", 200) + "/" + strings.Repeat("b", 200) + "/" + strings.Repeat("c", storage.MaxNameLen-402)
	Put(t, s, long, []byte("x"), storage.PutOptions{})
	if _, err := s.Stat(ctx, long); err != nil {
		t.Errorf("Stat of longest name: %v", err)
	}
	for _, p := range []string{"A", "a b", "a\\b", "caf\u00e9", "l//", "/l"} {
		n := 0
		for _, err := range s.List(ctx, p) {
			n++
			if !errors.Is(err, storage.ErrInvalidName) {
				t.Errorf("List(%q) yielded %v, want ErrInvalidName", p, err)
			}
		}
		if n != 1 {
			t.Errorf("List(%q) yielded %d results, want one error", p, n)
		}
	}
}

func testInvalidMetadata(t *testing.T, s storage.Store) {
	ctx := context.Background()
	tests := map[string]storage.PutOptions{
		"upper key":        {Metadata: map[string]string{"Key": "v"}},
		"underscore key":   {Metadata: map[string]string{"a_b": "v"}},
		"empty key":        {Metadata: map[string]string{"": "v"}},
		"non-ascii value":  {Metadata: map[string]string{"k": "caf\u00e9"}},
		"newline value":    {Metadata: map[string]string{"k": "a\nb"}},
		"padded value":     {Metadata: map[string]string{"k": " v"}},
		"too large":        {Metadata: map[string]string{"k": strings.Repeat("v", storage.MaxMetadataSize)}},
		"bad content type": {ContentType: "text/plain\r\nx: y"},
	}
	for name, opts := range tests {
		t.Run(name, func(t *testing.T) {
			if _, err := s.Put(ctx, "meta/x", strings.NewReader("x"), opts); !errors.Is(err, storage.ErrInvalidMetadata) {
				t.Errorf("Put = %v, want ErrInvalidMetadata", err)
			}
		})
	}
}

func listNames(t *testing.T, s storage.Store, prefix string) []string {
	t.Helper()
	var names []string
	for info, err := range s.List(context.Background(), prefix) {
		if err != nil {
			t.Fatalf("List(%q): %v", prefix, err)
		}
		names = append(names, info.Name)
	}
	return names
}

func testList(t *testing.T, s storage.Store) {
	// No name is also a folder of other names: MinIO cannot hold both
	// (see storage.ValidName).
	names := []string{"l/a", "l/a-b", "l/a.b", "l/c/b", "l/c/d/e", "l/a0", "l/b", "l/ab/x", "l/a_", "l/c/-", "l/c-x", "l/c.x", "l/c0", "m"}
	shuffled := slices.Clone(names)
	rand.Shuffle(len(shuffled), func(i, j int) { shuffled[i], shuffled[j] = shuffled[j], shuffled[i] })
	for i, n := range shuffled {
		Put(t, s, n, Pattern(uint64(i), i+1), storage.PutOptions{ContentType: "text/plain"})
	}
	sorted := slices.Clone(names)
	slices.Sort(sorted)
	tests := []struct {
		prefix string
		want   []string
	}{
		{"", sorted},
		{"l/", sorted[:len(sorted)-1]},
		{"l/c/", []string{"l/c/-", "l/c/b", "l/c/d/e"}},
		{"l/c/d", []string{"l/c/d/e"}},
		{"l/c", []string{"l/c-x", "l/c.x", "l/c/-", "l/c/b", "l/c/d/e", "l/c0"}},
		{"l/a", []string{"l/a", "l/a-b", "l/a.b", "l/a0", "l/a_", "l/ab/x"}},
		{"l/ab", []string{"l/ab/x"}},
		{"l/b", []string{"l/b"}},
		{"l/d", nil},
		{"zzz", nil},
	}
	for _, tt := range tests {
		t.Run(strconv.Quote(tt.prefix), func(t *testing.T) {
			if got := listNames(t, s, tt.prefix); !slices.Equal(got, tt.want) {
				t.Errorf("List(%q) = %q, want %q", tt.prefix, got, tt.want)
			}
		})
	}
	for info, err := range s.List(context.Background(), "l/c/d/") {
		if err != nil {
			t.Fatal(err)
		}
		i := slices.Index(shuffled, info.Name)
		checkInfo(t, "List", info, "l/c/d/e", int64(i+1), "text/plain", map[string]string{})
	}
	// Stopping early is allowed.
	for range s.List(context.Background(), "") {
		break
	}
}

func testOverwrite(t *testing.T, s storage.Store) {
	i1 := Put(t, s, "ow/x", []byte("first version"), storage.PutOptions{Metadata: map[string]string{"v": "1"}})
	i2 := Put(t, s, "ow/x", []byte("second"), storage.PutOptions{ContentType: "text/plain"})
	if i1.ETag == i2.ETag {
		t.Errorf("overwrite kept ETag %q", i1.ETag)
	}
	got, gi := Get(t, s, "ow/x", storage.GetOptions{})
	if string(got) != "second" {
		t.Errorf("got %q after overwrite", got)
	}
	checkInfo(t, "Get", gi, "ow/x", 6, "text/plain", map[string]string{})
	if gi.ETag != i2.ETag {
		t.Errorf("ETag %q, want %q", gi.ETag, i2.ETag)
	}
}

func testDelete(t *testing.T, s storage.Store) {
	ctx := context.Background()
	Put(t, s, "del/x", []byte("x"), storage.PutOptions{})
	Put(t, s, "del/y", []byte("y"), storage.PutOptions{})
	if err := s.Delete(ctx, "del/x"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Stat(ctx, "del/x"); !errors.Is(err, storage.ErrNotFound) {
		t.Errorf("Stat after Delete = %v", err)
	}
	if err := s.Delete(ctx, "del/x"); !errors.Is(err, storage.ErrNotFound) {
		t.Errorf("second Delete = %v", err)
	}
	if got := listNames(t, s, "del/"); !slices.Equal(got, []string{"del/y"}) {
		t.Errorf("List after Delete = %q", got)
	}
	// The name can be used again.
	Put(t, s, "del/x", []byte("again"), storage.PutOptions{IfAbsent: true})
}

func testIfAbsent(t *testing.T, s storage.Store) {
	ctx := context.Background()
	Put(t, s, "ia/x", []byte("one"), storage.PutOptions{IfAbsent: true})
	_, err := s.Put(ctx, "ia/x", strings.NewReader("two"), storage.PutOptions{IfAbsent: true})
	if !errors.Is(err, storage.ErrExists) {
		t.Fatalf("second IfAbsent Put = %v, want ErrExists", err)
	}
	if got, _ := Get(t, s, "ia/x", storage.GetOptions{}); string(got) != "one" {
		t.Errorf("got %q, want the first version", got)
	}
	if _, err := s.Put(ctx, "ia/y", strings.NewReader("x"), storage.PutOptions{IfAbsent: true, IfMatch: "e"}); err == nil {
		t.Error("IfAbsent with IfMatch succeeded")
	}
	// Large (multipart on MinIO) create-if-absent is refused too.
	big := Pattern(6, 17<<20)
	_, err = s.Put(ctx, "ia/x", hideSize{bytes.NewReader(big)}, storage.PutOptions{IfAbsent: true})
	if !errors.Is(err, storage.ErrExists) {
		t.Fatalf("large IfAbsent Put over existing = %v, want ErrExists", err)
	}
	if _, err := s.Put(ctx, "ia/big", hideSize{bytes.NewReader(big)}, storage.PutOptions{IfAbsent: true}); err != nil {
		t.Fatalf("large IfAbsent Put: %v", err)
	}
}

func testIfAbsentRace(t *testing.T, s storage.Store) {
	for _, size := range []int{100, 17 << 20} {
		t.Run(strconv.Itoa(size), func(t *testing.T) {
			const n = 8
			name := fmt.Sprintf("race/%d", size)
			var wg sync.WaitGroup
			errs := make([]error, n)
			for i := range n {
				wg.Go(func() {
					data := Pattern(uint64(i), size)
					_, errs[i] = s.Put(context.Background(), name, hideSize{bytes.NewReader(data)}, storage.PutOptions{IfAbsent: true})
				})
			}
			wg.Wait()
			winner := -1
			for i, err := range errs {
				switch {
				case err == nil:
					if winner >= 0 {
						t.Fatalf("two IfAbsent Puts won: %d and %d", winner, i)
					}
					winner = i
				case !errors.Is(err, storage.ErrExists):
					t.Errorf("Put %d: %v", i, err)
				}
			}
			if winner < 0 {
				t.Fatal("no IfAbsent Put won")
			}
			got, _ := Get(t, s, name, storage.GetOptions{})
			if !bytes.Equal(got, Pattern(uint64(winner), size)) {
				t.Error("stored object is not the winner's")
			}
		})
	}
}

func testIfMatch(t *testing.T, s storage.Store) {
	ctx := context.Background()
	i1 := Put(t, s, "im/x", []byte("v1"), storage.PutOptions{})
	i2 := Put(t, s, "im/x", []byte("v2"), storage.PutOptions{IfMatch: i1.ETag})
	if _, err := s.Put(ctx, "im/x", strings.NewReader("v3"), storage.PutOptions{IfMatch: i1.ETag}); !errors.Is(err, storage.ErrPreconditionFailed) {
		t.Fatalf("stale IfMatch = %v, want ErrPreconditionFailed", err)
	}
	if got, _ := Get(t, s, "im/x", storage.GetOptions{}); string(got) != "v2" {
		t.Errorf("got %q", got)
	}
	if _, err := s.Put(ctx, "im/missing", strings.NewReader("x"), storage.PutOptions{IfMatch: i2.ETag}); !errors.Is(err, storage.ErrPreconditionFailed) {
		t.Errorf("IfMatch on missing object = %v, want ErrPreconditionFailed", err)
	}
	if _, err := s.Stat(ctx, "im/missing"); !errors.Is(err, storage.ErrNotFound) {
		t.Errorf("failed IfMatch created the object: %v", err)
	}
	// Large (multipart on MinIO) compare-and-swap.
	big := Pattern(7, 17<<20)
	if _, err := s.Put(ctx, "im/x", hideSize{bytes.NewReader(big)}, storage.PutOptions{IfMatch: i1.ETag}); !errors.Is(err, storage.ErrPreconditionFailed) {
		t.Fatalf("large stale IfMatch = %v, want ErrPreconditionFailed", err)
	}
	if _, err := s.Put(ctx, "im/x", hideSize{bytes.NewReader(big)}, storage.PutOptions{IfMatch: i2.ETag}); err != nil {
		t.Fatalf("large IfMatch: %v", err)
	}
	if got, _ := Get(t, s, "im/x", storage.GetOptions{}); !bytes.Equal(got, big) {
		t.Error("large IfMatch Put did not store its bytes")
	}
}

func testIfMatchCounter(t *testing.T, s storage.Store) {
	const n = 8
	ctx := context.Background()
	Put(t, s, "cas/counter", []byte("0"), storage.PutOptions{})
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for range n {
		wg.Go(func() {
			for attempt := 0; ; attempt++ {
				if attempt > 1000 {
					errs <- errors.New("too many retries")
					return
				}
				b, info, err := ReadAll(s, "cas/counter", storage.GetOptions{})
				if err != nil {
					errs <- err
					return
				}
				v, err := strconv.Atoi(string(b))
				if err != nil {
					errs <- err
					return
				}
				_, err = s.Put(ctx, "cas/counter", strings.NewReader(strconv.Itoa(v+1)), storage.PutOptions{IfMatch: info.ETag})
				if errors.Is(err, storage.ErrPreconditionFailed) {
					continue
				}
				if err != nil {
					errs <- err
				}
				return
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if got, _ := Get(t, s, "cas/counter", storage.GetOptions{}); string(got) != strconv.Itoa(n) {
		t.Errorf("counter = %s after %d compare-and-swap increments", got, n)
	}
}

// cancelReader yields data and cancels ctx once it has given after
// bytes, then keeps failing with the context's error.
type cancelReader struct {
	data   []byte
	after  int
	cancel context.CancelFunc
	ctx    context.Context
}

func (c *cancelReader) Read(p []byte) (int, error) {
	if c.after <= 0 {
		c.cancel()
		return 0, c.ctx.Err()
	}
	n := min(len(p), c.after, len(c.data))
	copy(p, c.data[:n])
	c.data = c.data[n:]
	c.after -= n
	return n, nil
}

func testCancelledPut(t *testing.T, s storage.Store) {
	bg := context.Background()
	for _, tc := range []struct {
		name  string
		after int
	}{{"small", 1000}, {"multipart", 20 << 20}} {
		t.Run(tc.name, func(t *testing.T) {
			prefix := "cancel-" + tc.name + "/"
			Put(t, s, prefix+"old", []byte("old"), storage.PutOptions{})
			for _, name := range []string{prefix + "new", prefix + "old"} {
				ctx, cancel := context.WithCancel(bg)
				r := &cancelReader{data: Pattern(8, tc.after+1000), after: tc.after, cancel: cancel, ctx: ctx}
				_, err := s.Put(ctx, name, r, storage.PutOptions{})
				cancel()
				if err == nil {
					t.Fatalf("Put(%s) with a cancelled context succeeded", name)
				}
			}
			if _, err := s.Stat(bg, prefix+"new"); !errors.Is(err, storage.ErrNotFound) {
				t.Errorf("cancelled Put left an object: %v", err)
			}
			if got, _ := Get(t, s, prefix+"old", storage.GetOptions{}); string(got) != "old" {
				t.Errorf("cancelled overwrite changed the old object to %d bytes", len(got))
			}
			if got := listNames(t, s, prefix); !slices.Equal(got, []string{prefix + "old"}) {
				t.Errorf("List after cancelled Puts = %q, want only the old object", got)
			}
		})
	}
}
