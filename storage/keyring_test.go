package storage_test

import (
	"bytes"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/consilium/consilium/storage"
)

func newKeyring(t testing.TB) *storage.Keyring {
	t.Helper()
	kr, err := storage.GenerateKeyring(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return kr
}

func TestKeyringSaveLoad(t *testing.T) {
	kr := newKeyring(t)
	first := kr.ActiveID()
	second, err := kr.Rotate(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	if second == first || kr.ActiveID() != second {
		t.Fatalf("Rotate: active %s, first %s, second %s", kr.ActiveID(), first, second)
	}
	path := filepath.Join(t.TempDir(), "keyring.json")
	if err := kr.Save(path); err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o600 {
		t.Errorf("keyring file mode %v, want 0600", st.Mode().Perm())
	}
	loaded, err := storage.LoadKeyring(path)
	if err != nil {
		t.Fatal(err)
	}
	if loaded.ActiveID() != second || len(loaded.Keys()) != 2 {
		t.Errorf("loaded keyring: active %s, keys %+v", loaded.ActiveID(), loaded.Keys())
	}
	if !bytes.Equal(loaded.Derive("names"), kr.Derive("names")) {
		t.Error("Derive differs after Save and Load")
	}
	if loaded.NameHash("patient", "x") != kr.NameHash("patient", "x") {
		t.Error("NameHash differs after Save and Load")
	}
	// Saving over an existing file replaces it atomically.
	if _, err := loaded.Rotate(rand.Reader); err != nil {
		t.Fatal(err)
	}
	if err := loaded.Save(path); err != nil {
		t.Fatal(err)
	}
	again, err := storage.LoadKeyring(path)
	if err != nil || len(again.Keys()) != 3 {
		t.Fatalf("reload after second save: %v, %d keys", err, len(again.Keys()))
	}
}

func TestLoadKeyringRejects(t *testing.T) {
	dir := t.TempDir()
	key := strings.Repeat("A", 43) + "="
	tests := map[string]string{
		"not json":     "{",
		"version":      `{"version":2}`,
		"short root":   `{"version":1,"root":"AAAA","active":"k0000000000000000","keys":[]}`,
		"no active":    `{"version":1,"root":"` + key + `","active":"k0000000000000000","keys":[]}`,
		"bad id":       `{"version":1,"root":"` + key + `","active":"K0","keys":[{"id":"K0","key":"` + key + `"}]}`,
		"duplicate id": `{"version":1,"root":"` + key + `","active":"k0000000000000000","keys":[{"id":"k0000000000000000","key":"` + key + `"},{"id":"k0000000000000000","key":"` + key + `"}]}`,
		"short kek":    `{"version":1,"root":"` + key + `","active":"k0000000000000000","keys":[{"id":"k0000000000000000","key":"AAAA"}]}`,
		"not base64":   `{"version":1,"root":"!!!","active":"k0000000000000000","keys":[]}`,
		"missing file": "",
	}
	for name, content := range tests {
		t.Run(name, func(t *testing.T) {
			path := filepath.Join(dir, strings.ReplaceAll(name, " ", "-"))
			if content != "" {
				if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
					t.Fatal(err)
				}
			}
			if _, err := storage.LoadKeyring(path); err == nil {
				t.Error("LoadKeyring accepted it")
			}
		})
	}
}

// TestKeyringVectors pins Derive and NameHash against values computed
// independently (Python's hmac module: RFC 5869 HKDF-SHA256 with salt
// "consilium keyring v1", then HMAC-SHA256), so that a change that
// would rename every stored object cannot go unnoticed.
func TestKeyringVectors(t *testing.T) {
	root := bytes.Repeat([]byte{7}, 32)
	kek := bytes.Repeat([]byte{8}, 32)
	js := `{"version":1,"root":"` + b64(root) + `","active":"k0000000000000001","keys":[{"id":"k0000000000000001","created":"2026-01-01T00:00:00Z","key":"` + b64(kek) + `"}]}`
	path := filepath.Join(t.TempDir(), "kr.json")
	if err := os.WriteFile(path, []byte(js), 0o600); err != nil {
		t.Fatal(err)
	}
	kr, err := storage.LoadKeyring(path)
	if err != nil {
		t.Fatal(err)
	}
	if got := hex.EncodeToString(kr.Derive("object-names")); got != "599948537d51d3926023ec359ea6a047560fca2f45d8aafc08533d2d4b9b2c9c" {
		t.Errorf("Derive(object-names) = %s", got)
	}
	if got := kr.NameHash("patient", "MRN-1"); got != "f4be2a8e4ba10f8e711da8ac3d73bda8" {
		t.Errorf("NameHash = %s", got)
	}
	before := kr.Derive("pseudonyms")
	if bytes.Equal(before, kr.Derive("object-names")) {
		t.Error("two purposes derive the same secret")
	}
	if _, err := kr.Rotate(rand.Reader); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(before, kr.Derive("pseudonyms")) {
		t.Error("Rotate changed a derived secret")
	}
	if kr.NameHash("patient", "MRN-1") == kr.NameHash("study", "MRN-1") {
		t.Error("NameHash ignores the kind")
	}
}

func b64(b []byte) string { return base64.StdEncoding.EncodeToString(b) }

func TestKeyringRetireRefusesActive(t *testing.T) {
	kr := newKeyring(t)
	if err := kr.Retire(kr.ActiveID()); !errors.Is(err, storage.ErrKeyInUse) {
		t.Errorf("Retire(active) = %v, want ErrKeyInUse", err)
	}
	old := kr.ActiveID()
	if _, err := kr.Rotate(rand.Reader); err != nil {
		t.Fatal(err)
	}
	if err := kr.Retire(old); !errors.Is(err, storage.ErrKeyInUse) {
		t.Errorf("Retire before any rewrap = %v, want ErrKeyInUse", err)
	}
	if err := kr.Retire("k0123456789abcdef"); !errors.Is(err, storage.ErrUnknownKey) {
		t.Errorf("Retire(unknown) = %v, want ErrUnknownKey", err)
	}
}
