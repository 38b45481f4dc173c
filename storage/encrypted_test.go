package storage_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"maps"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/consilium/consilium/storage"
	"github.com/consilium/consilium/storage/storagetest"
)

// backends are the raw stores the encryption layer is tested over.
var backends = []struct {
	name string
	new  func(t testing.TB) storage.Store
}{
	{"filesystem", func(t testing.TB) storage.Store { return newFilesystem(t) }},
	{"minio", func(t testing.TB) storage.Store { return newMinIO(t, false) }},
}

func TestEncryptedContract(t *testing.T) {
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			storagetest.Run(t, func(t *testing.T) storage.Store {
				return storage.NewEncrypted(b.new(t), newKeyring(t))
			})
		})
	}
}

// rawRewrite replaces the stored (encrypted) object with what edit makes
// of its bytes and metadata, going around the encryption layer.
func rawRewrite(t *testing.T, raw storage.Store, name string, edit func(data []byte, meta map[string]string) []byte) {
	t.Helper()
	data, info := storagetest.Get(t, raw, name, storage.GetOptions{})
	meta := maps.Clone(info.Metadata)
	data = edit(data, meta)
	storagetest.Put(t, raw, name, data, storage.PutOptions{ContentType: info.ContentType, Metadata: meta})
}

func wantIntegrity(t *testing.T, s storage.Store, name string, opts storage.GetOptions) {
	t.Helper()
	got, _, err := storagetest.ReadAll(s, name, opts)
	if !errors.Is(err, storage.ErrIntegrity) {
		t.Errorf("Get(%s, %+v) = %d bytes, %v; want ErrIntegrity", name, opts, len(got), err)
	}
}

func TestEncryptedTamper(t *testing.T) {
	const pkg = 64<<10 + 32 // one DARE package on disk
	n := 3*(64<<10) + 100
	data := storagetest.Pattern(11, n)
	tests := []struct {
		name string
		edit func(b []byte, meta map[string]string) []byte
		// range that still reads back: bytes outside the damage.
		okRange *storage.GetOptions
		// tail: the damage reaches the end, so a range read of the last
		// bytes fails too.
		tail bool
	}{
		{"flip byte in first package", func(b []byte, _ map[string]string) []byte { b[100] ^= 1; return b },
			&storage.GetOptions{Offset: 64 << 10, Length: 1000}, false},
		{"flip byte in last package", func(b []byte, _ map[string]string) []byte { b[len(b)-5] ^= 0x80; return b },
			&storage.GetOptions{Offset: 0, Length: 64 << 10}, true},
		{"flip header byte", func(b []byte, _ map[string]string) []byte { b[pkg+3] ^= 1; return b }, nil, false},
		{"truncate one byte", func(b []byte, _ map[string]string) []byte { return b[:len(b)-1] }, nil, true},
		{"drop final package", func(b []byte, _ map[string]string) []byte { return b[:3*pkg] },
			&storage.GetOptions{Offset: 0, Length: 100}, true},
		{"drop middle package", func(b []byte, _ map[string]string) []byte { return append(b[:pkg:pkg], b[2*pkg:]...) }, nil, true},
		{"swap packages", func(b []byte, _ map[string]string) []byte {
			c := append([]byte{}, b[pkg:2*pkg]...)
			c = append(c, b[:pkg]...)
			return append(c, b[2*pkg:]...)
		}, nil, false},
		{"append bytes", func(b []byte, _ map[string]string) []byte { return append(b, b[:pkg]...) }, nil, true},
		{"truncate to empty", func(b []byte, _ map[string]string) []byte { return nil }, nil, true},
		{"mark envelope empty", func(b []byte, m map[string]string) []byte {
			m["consilium-envelope"] = strings.Replace(m["consilium-envelope"], ".n.", ".e.", 1)
			return nil
		}, nil, true},
		{name: "flip wrapped key", tail: true, edit: func(b []byte, m map[string]string) []byte {
			env := []byte(m["consilium-envelope"])
			if env[len(env)-3] == 'A' {
				env[len(env)-3] = 'B'
			} else {
				env[len(env)-3] = 'A'
			}
			m["consilium-envelope"] = string(env)
			return b
		}},
		{"drop envelope", func(b []byte, m map[string]string) []byte { delete(m, "consilium-envelope"); return b }, nil, true},
		{name: "unknown key id", tail: true, edit: func(b []byte, m map[string]string) []byte {
			parts := strings.Split(m["consilium-envelope"], ".")
			parts[1] = "k0000000000000000"
			m["consilium-envelope"] = strings.Join(parts, ".")
			return b
		}},
	}
	for _, be := range backends {
		t.Run(be.name, func(t *testing.T) {
			raw := be.new(t)
			s := storage.NewEncrypted(raw, newKeyring(t))
			for _, tt := range tests {
				t.Run(tt.name, func(t *testing.T) {
					name := "t/" + strings.ReplaceAll(tt.name, " ", "-")
					storagetest.Put(t, s, name, data, storage.PutOptions{})
					rawRewrite(t, raw, name, tt.edit)
					wantIntegrity(t, s, name, storage.GetOptions{})
					// The last bytes of what the object now looks like.
					var tail storage.GetOptions
					if rawInfo, err := raw.Stat(context.Background(), name); err == nil && rawInfo.Size > 100 {
						size := rawInfo.Size - (rawInfo.Size+pkg-1)/pkg*32
						tail = storage.GetOptions{Offset: size - 10}
					}
					if tt.tail {
						wantIntegrity(t, s, name, tail)
					} else if got, _, err := storagetest.ReadAll(s, name, tail); err != nil || !bytes.Equal(got, data[n-10:]) {
						t.Errorf("undamaged tail: %d bytes, %v", len(got), err)
					}
					if tt.okRange != nil {
						got, _, err := storagetest.ReadAll(s, name, *tt.okRange)
						if err != nil {
							t.Fatalf("range away from the damage: %v", err)
						}
						o := tt.okRange.Offset
						if !bytes.Equal(got, data[o:o+tt.okRange.Length]) {
							t.Error("range away from the damage returned other bytes")
						}
					}
				})
			}
			t.Run("empty object gains bytes", func(t *testing.T) {
				storagetest.Put(t, s, "t/empty", nil, storage.PutOptions{})
				other := storagetest.Put(t, s, "t/other", []byte("x"), storage.PutOptions{})
				_ = other
				otherRaw, _ := storagetest.Get(t, raw, "t/other", storage.GetOptions{})
				rawRewrite(t, raw, "t/empty", func(b []byte, _ map[string]string) []byte { return otherRaw })
				wantIntegrity(t, s, "t/empty", storage.GetOptions{})
			})
			t.Run("stored bytes are not the plaintext", func(t *testing.T) {
				secret := bytes.Repeat([]byte("PATIENT-NAME "), 1000)
				storagetest.Put(t, s, "t/secret", secret, storage.PutOptions{})
				got, _ := storagetest.Get(t, raw, "t/secret", storage.GetOptions{})
				if bytes.Contains(got, []byte("PATIENT-NAME")) {
					t.Error("plaintext visible in the backend")
				}
			})
		})
	}
}

func TestEncryptedSwap(t *testing.T) {
	for _, be := range backends {
		t.Run(be.name, func(t *testing.T) {
			raw := be.new(t)
			s := storage.NewEncrypted(raw, newKeyring(t))
			a, b := storagetest.Pattern(1, 70_000), storagetest.Pattern(2, 70_000)
			storagetest.Put(t, s, "p/a", a, storage.PutOptions{})
			storagetest.Put(t, s, "p/b", b, storage.PutOptions{})
			rawA, infoA := storagetest.Get(t, raw, "p/a", storage.GetOptions{})
			rawB, infoB := storagetest.Get(t, raw, "p/b", storage.GetOptions{})
			// Whole objects (bytes and envelope) swapped.
			storagetest.Put(t, raw, "p/a", rawB, storage.PutOptions{Metadata: infoB.Metadata})
			storagetest.Put(t, raw, "p/b", rawA, storage.PutOptions{Metadata: infoA.Metadata})
			wantIntegrity(t, s, "p/a", storage.GetOptions{})
			wantIntegrity(t, s, "p/b", storage.GetOptions{})
			wantIntegrity(t, s, "p/a", storage.GetOptions{Offset: 10, Length: 10})
			// Bytes swapped, envelopes kept.
			storagetest.Put(t, raw, "p/a", rawB, storage.PutOptions{Metadata: infoA.Metadata})
			wantIntegrity(t, s, "p/a", storage.GetOptions{})
			// Copied to a new name.
			storagetest.Put(t, raw, "p/c", rawA, storage.PutOptions{Metadata: infoA.Metadata})
			wantIntegrity(t, s, "p/c", storage.GetOptions{})
		})
	}
}

func TestEncryptedWrongKeyring(t *testing.T) {
	for _, be := range backends {
		t.Run(be.name, func(t *testing.T) {
			raw := be.new(t)
			storagetest.Put(t, storage.NewEncrypted(raw, newKeyring(t)), "w/x", []byte("secret"), storage.PutOptions{})
			other := storage.NewEncrypted(raw, newKeyring(t))
			_, _, err := storagetest.ReadAll(other, "w/x", storage.GetOptions{})
			if !errors.Is(err, storage.ErrIntegrity) || !errors.Is(err, storage.ErrUnknownKey) {
				t.Errorf("Get with another keyring = %v, want ErrIntegrity and ErrUnknownKey", err)
			}
		})
	}
}

func TestEncryptedReservedMetadata(t *testing.T) {
	s := storage.NewEncrypted(newFilesystem(t), newKeyring(t))
	_, err := s.Put(context.Background(), "r/x", strings.NewReader("x"), storage.PutOptions{
		Metadata: map[string]string{"consilium-envelope": "1.k.n.AAAA"},
	})
	if !errors.Is(err, storage.ErrInvalidMetadata) {
		t.Errorf("Put with a reserved key = %v, want ErrInvalidMetadata", err)
	}
	info := storagetest.Put(t, s, "r/y", []byte("x"), storage.PutOptions{Metadata: map[string]string{"kind": "a"}})
	for _, m := range []map[string]string{info.Metadata} {
		if _, ok := m["consilium-envelope"]; ok {
			t.Error("envelope shown to the caller")
		}
	}
	for info, err := range s.List(context.Background(), "r/") {
		if err != nil {
			t.Fatal(err)
		}
		if len(info.Metadata) != 1 || info.Size != 1 {
			t.Errorf("List shows %+v", info)
		}
	}
}

func TestRewrap(t *testing.T) {
	ctx := context.Background()
	for _, be := range backends {
		t.Run(be.name, func(t *testing.T) {
			raw := be.new(t)
			kr := newKeyring(t)
			s := storage.NewEncrypted(raw, kr)
			objects := map[string][]byte{}
			for i, size := range []int{0, 1, 70_000, 200_000} {
				name := "rw/old-" + string(rune('a'+i))
				objects[name] = storagetest.Pattern(uint64(i), size)
				storagetest.Put(t, s, name, objects[name], storage.PutOptions{ContentType: "application/dicom", Metadata: map[string]string{"kind": "x"}})
			}
			storagetest.Put(t, raw, "rw/plain", []byte("not encrypted"), storage.PutOptions{})
			oldID := kr.ActiveID()
			if _, err := kr.Rotate(rand.Reader); err != nil {
				t.Fatal(err)
			}
			objects["rw/new"] = []byte("written after rotation")
			storagetest.Put(t, s, "rw/new", objects["rw/new"], storage.PutOptions{})

			if err := kr.Retire(oldID); !errors.Is(err, storage.ErrKeyInUse) {
				t.Fatalf("Retire before Rewrap = %v, want ErrKeyInUse", err)
			}
			var progress int
			stats, err := storage.Rewrap(ctx, s, kr, storage.RewrapOptions{Progress: func(storage.RewrapProgress) { progress++ }})
			if err != nil {
				t.Fatal(err)
			}
			if stats.Scanned != 6 || stats.Rewrapped != 4 || stats.Current != 1 || stats.NotEncrypted != 1 || len(stats.Skipped) != 0 {
				t.Errorf("stats %+v", stats)
			}
			if progress != 6 {
				t.Errorf("progress called %d times, want 6", progress)
			}
			// A second walk finds nothing to do.
			if stats, err := storage.Rewrap(ctx, raw, kr, storage.RewrapOptions{}); err != nil || stats.Rewrapped != 0 || stats.Current != 5 {
				t.Errorf("second Rewrap: %+v, %v", stats, err)
			}
			// The old key is drained: retire it, save, load, read all.
			if err := kr.Retire(oldID); err != nil {
				t.Fatalf("Retire after Rewrap: %v", err)
			}
			path := filepath.Join(t.TempDir(), "keyring.json")
			if err := kr.Save(path); err != nil {
				t.Fatal(err)
			}
			loaded, err := storage.LoadKeyring(path)
			if err != nil {
				t.Fatal(err)
			}
			s2 := storage.NewEncrypted(raw, loaded)
			for name, want := range objects {
				got, info := storagetest.Get(t, s2, name, storage.GetOptions{})
				if !bytes.Equal(got, want) {
					t.Errorf("%s changed by rewrap", name)
				}
				if name != "rw/new" && (info.ContentType != "application/dicom" || info.Metadata["kind"] != "x") {
					t.Errorf("%s lost its metadata: %+v", name, info)
				}
				if len(want) > 70_000 {
					got, _ := storagetest.Get(t, s2, name, storage.GetOptions{Offset: 65530, Length: 20})
					if !bytes.Equal(got, want[65530:65550]) {
						t.Errorf("%s: range after rewrap differs", name)
					}
				}
			}
		})
	}
}

func TestRewrapSkipsRetained(t *testing.T) {
	ctx := context.Background()
	now := time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC)
	raw := newFilesystem(t, storage.WithFilesystemClock(func() time.Time { return now }))
	kr := newKeyring(t)
	s := storage.NewEncrypted(raw, kr)
	storagetest.Put(t, s, "audit/1", []byte("entry"), storage.PutOptions{
		Retention: &storage.Retention{Mode: storage.Compliance, Until: now.Add(time.Hour)},
	})
	storagetest.Put(t, s, "audit/2", []byte("entry"), storage.PutOptions{})
	oldID := kr.ActiveID()
	if _, err := kr.Rotate(rand.Reader); err != nil {
		t.Fatal(err)
	}
	stats, err := storage.Rewrap(ctx, raw, kr, storage.RewrapOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if stats.Rewrapped != 1 || len(stats.Skipped) != 1 || stats.Skipped[0].Name != "audit/1" ||
		stats.Skipped[0].Reason != "under retention" || stats.Remaining[oldID] != 1 {
		t.Errorf("stats %+v", stats)
	}
	if err := kr.Retire(oldID); !errors.Is(err, storage.ErrKeyInUse) {
		t.Errorf("Retire of a key a retained object needs = %v, want ErrKeyInUse", err)
	}
	if got, _ := storagetest.Get(t, s, "audit/1", storage.GetOptions{}); string(got) != "entry" {
		t.Errorf("retained object reads %q", got)
	}
}

func TestRewrapPrefixDoesNotDrain(t *testing.T) {
	ctx := context.Background()
	raw := newFilesystem(t)
	kr := newKeyring(t)
	s := storage.NewEncrypted(raw, kr)
	storagetest.Put(t, s, "a/1", []byte("x"), storage.PutOptions{})
	storagetest.Put(t, s, "b/1", []byte("x"), storage.PutOptions{})
	oldID := kr.ActiveID()
	if _, err := kr.Rotate(rand.Reader); err != nil {
		t.Fatal(err)
	}
	if _, err := storage.Rewrap(ctx, raw, kr, storage.RewrapOptions{Prefix: "a/"}); err != nil {
		t.Fatal(err)
	}
	if err := kr.Retire(oldID); !errors.Is(err, storage.ErrKeyInUse) {
		t.Errorf("Retire after a partial Rewrap = %v, want ErrKeyInUse", err)
	}
}

// FuzzEncryptedGet stores fuzzed bytes in place of an encrypted object's
// ciphertext and reads a fuzzed range back. It must never panic, never
// return a byte that differs from the original plaintext at its offset,
// and never finish a read that reaches the end unless the ciphertext is
// the original; otherwise it fails with ErrIntegrity (or
// ErrInvalidRange).
func FuzzEncryptedGet(f *testing.F) {
	raw := newFilesystem(f)
	s := storage.NewEncrypted(raw, newKeyring(f))
	plain := storagetest.Pattern(5, 70_000)
	storagetest.Put(f, s, "fuzz/orig", plain, storage.PutOptions{})
	orig, info := storagetest.Get(f, raw, "fuzz/orig", storage.GetOptions{})
	meta := info.Metadata
	f.Add(orig, int64(0), int64(0))
	f.Add(orig[:len(orig)-1], int64(0), int64(0))
	f.Add(orig[:65568], int64(10), int64(100))
	f.Add(append(orig[:100:100], orig[101:]...), int64(65536), int64(0))
	f.Add([]byte{}, int64(0), int64(0))
	f.Fuzz(func(t *testing.T, data []byte, off, length int64) {
		if len(data) > 1<<20 {
			return
		}
		if _, err := raw.Put(context.Background(), "fuzz/x", bytes.NewReader(data), storage.PutOptions{Metadata: meta}); err != nil {
			t.Fatal(err)
		}
		// The envelope binds the name, so the bytes are read under the
		// original name's key via a second raw copy.
		if _, err := raw.Put(context.Background(), "fuzz/orig", bytes.NewReader(data), storage.PutOptions{Metadata: meta}); err != nil {
			t.Fatal(err)
		}
		got, info, err := storagetest.ReadAll(s, "fuzz/orig", storage.GetOptions{Offset: off, Length: length})
		switch {
		case err == nil:
			// Every byte returned is the original's at that offset...
			if off < 0 || off+int64(len(got)) > int64(len(plain)) || !bytes.Equal(got, plain[off:off+int64(len(got))]) {
				t.Fatal("read back other bytes than were written")
			}
			// ...and a read that reached the end saw the whole,
			// unaltered object.
			if (length == 0 || off+length >= info.Size) && !bytes.Equal(data, orig) {
				t.Fatalf("altered ciphertext of %d bytes read to its end without error", len(data))
			}
		case errors.Is(err, storage.ErrIntegrity), errors.Is(err, storage.ErrInvalidRange):
		default:
			t.Fatalf("unexpected error: %v", err)
		}
		if _, _, err := storagetest.ReadAll(s, "fuzz/x", storage.GetOptions{}); !errors.Is(err, storage.ErrIntegrity) {
			t.Fatalf("object under another name read back: %v", err)
		}
	})
}
