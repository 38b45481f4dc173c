package packet_test

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"aead.dev/minisign"
	"filippo.io/age"

	"github.com/consilium/consilium/packet"
)

// tarEntry is one entry of a crafted packet.
type tarEntry struct {
	name string
	typ  byte
	body string
	link string
}

// crafted describes a packet made by hand, to test what the reader
// refuses. By default the manifest lists every content entry correctly and
// is followed by a valid signature.
type crafted struct {
	entries []tarEntry
	// edit changes the manifest before it is signed.
	edit func(m *packet.Manifest)
	// manifestJSON replaces the encoded manifest.
	manifestJSON func([]byte) []byte
	// order: "" (content, manifest, signature), or "sig-first",
	// "after-manifest" (a content entry after the signature), "no-sig".
	order string
	key   *minisign.PrivateKey
	trail []byte
}

func (k keys) craft(t *testing.T, c crafted) []byte {
	t.Helper()
	plain := k.craftPlain(t, c)
	var out bytes.Buffer
	w, err := age.Encrypt(&out, k.id.Recipient())
	if err != nil {
		t.Fatal(err)
	}
	w.Write(plain)
	w.Close()
	return out.Bytes()
}

func (k keys) craftPlain(t testing.TB, c crafted) []byte {
	m := packet.Manifest{
		Format: packet.Format, PacketID: "2.25.1", Created: time.Unix(1e9, 0).UTC(),
		GatewayKeyID: packet.KeyID(k.key.ID()), Case: packet.Case{ID: "c"}, Withheld: []packet.Withheld{},
	}
	for _, e := range c.entries {
		if e.typ != 0 && e.typ != tar.TypeReg {
			continue
		}
		sum := sha256.Sum256([]byte(e.body))
		m.Files = append(m.Files, packet.File{Path: e.name, Size: int64(len(e.body)), MediaType: "text/plain", SHA256: hex.EncodeToString(sum[:])})
	}
	if c.edit != nil {
		c.edit(&m)
	}
	mj, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	if c.manifestJSON != nil {
		mj = c.manifestJSON(mj)
	}
	key := k.key
	if c.key != nil {
		key = *c.key
	}
	sig := minisign.Sign(key, mj)

	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	put := func(e tarEntry) {
		typ := e.typ
		if typ == 0 {
			typ = tar.TypeReg
		}
		hdr := &tar.Header{Name: e.name, Typeflag: typ, Linkname: e.link, Mode: 0o644, Size: int64(len(e.body)), ModTime: time.Unix(1e9, 0)}
		if typ != tar.TypeReg {
			hdr.Size = 0
		}
		if err := tw.WriteHeader(hdr); err != nil {
			t.Fatal(err)
		}
		if typ == tar.TypeReg {
			tw.Write([]byte(e.body))
		}
	}
	content := c.entries
	var late []tarEntry
	if c.order == "after-manifest" {
		content, late = content[:len(content)-1], content[len(content)-1:]
	}
	for _, e := range content {
		put(e)
	}
	switch c.order {
	case "sig-first":
		put(tarEntry{name: packet.SignaturePath, body: string(sig)})
		put(tarEntry{name: packet.ManifestPath, body: string(mj)})
	case "no-sig":
		put(tarEntry{name: packet.ManifestPath, body: string(mj)})
	default:
		put(tarEntry{name: packet.ManifestPath, body: string(mj)})
		put(tarEntry{name: packet.SignaturePath, body: string(sig)})
	}
	for _, e := range late {
		put(e)
	}
	tw.Close()
	return append(buf.Bytes(), c.trail...)
}

func TestReaderRejects(t *testing.T) {
	k := newKeys(t)
	_, otherKey, err := minisign.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	ok := []tarEntry{{name: "summary.html", body: "<p>hi</p>"}, {name: "DICOM/P0000001/I0000001", body: "DICM"}}
	with := func(extra ...tarEntry) []tarEntry { return append(append([]tarEntry{}, ok...), extra...) }
	cases := []struct {
		name   string
		c      crafted
		limits packet.Limits
		want   error
	}{
		{"valid", crafted{entries: ok}, packet.Limits{}, nil},
		{"parent path", crafted{entries: with(tarEntry{name: "../evil", body: "x"})}, packet.Limits{}, packet.ErrUnsafePath},
		{"inner parent path", crafted{entries: with(tarEntry{name: "a/../../evil", body: "x"})}, packet.Limits{}, packet.ErrUnsafePath},
		{"absolute path", crafted{entries: with(tarEntry{name: "/tmp/evil", body: "x"})}, packet.Limits{}, packet.ErrUnsafePath},
		{"backslash", crafted{entries: with(tarEntry{name: `a\..\evil`, body: "x"})}, packet.Limits{}, packet.ErrUnsafePath},
		{"symlink", crafted{entries: with(tarEntry{name: "link", typ: tar.TypeSymlink, link: "/etc/passwd"})}, packet.Limits{}, packet.ErrUnsafePath},
		{"hard link", crafted{entries: with(tarEntry{name: "hard", typ: tar.TypeLink, link: "summary.html"})}, packet.Limits{}, packet.ErrUnsafePath},
		{"directory", crafted{entries: with(tarEntry{name: "dir", typ: tar.TypeDir})}, packet.Limits{}, packet.ErrUnsafePath},
		{"device", crafted{entries: with(tarEntry{name: "dev", typ: tar.TypeChar})}, packet.Limits{}, packet.ErrUnsafePath},
		{"duplicate", crafted{entries: with(ok[0])}, packet.Limits{}, packet.ErrMalformed},
		{"unlisted file", crafted{entries: ok, edit: func(m *packet.Manifest) { m.Files = m.Files[1:] }}, packet.Limits{}, packet.ErrIntegrity},
		{"missing file", crafted{entries: ok, edit: func(m *packet.Manifest) {
			m.Files = append(m.Files, packet.File{Path: "fhir/bundle.json", Size: 2, MediaType: "x", SHA256: strings.Repeat("0", 64)})
		}}, packet.Limits{}, packet.ErrIntegrity},
		{"changed content", crafted{entries: ok, edit: func(m *packet.Manifest) { m.Files[0].SHA256 = strings.Repeat("ab", 32) }}, packet.Limits{}, packet.ErrIntegrity},
		{"changed size", crafted{entries: ok, edit: func(m *packet.Manifest) { m.Files[0].Size++ }}, packet.Limits{}, packet.ErrIntegrity},
		{"file after the signature", crafted{entries: ok, order: "after-manifest"}, packet.Limits{}, packet.ErrMalformed},
		{"signature first", crafted{entries: ok, order: "sig-first"}, packet.Limits{}, packet.ErrMalformed},
		{"no signature", crafted{entries: ok, order: "no-sig"}, packet.Limits{}, packet.ErrMalformed},
		{"data after the tar", crafted{entries: ok, trail: []byte("more")}, packet.Limits{}, packet.ErrMalformed},
		{"zero padding after the tar", crafted{entries: ok, trail: make([]byte, 9216)}, packet.Limits{}, nil},
		{"unknown manifest field", crafted{entries: ok, manifestJSON: func(b []byte) []byte {
			return append([]byte(`{"extra":1,`), b[1:]...)
		}}, packet.Limits{}, packet.ErrMalformed},
		{"other format", crafted{entries: ok, edit: func(m *packet.Manifest) { m.Format = "consilium-packet/9" }}, packet.Limits{}, packet.ErrMalformed},
		{"unsafe path in the manifest", crafted{entries: ok, edit: func(m *packet.Manifest) { m.Files[0].Path = "../summary.html" }}, packet.Limits{}, packet.ErrUnsafePath},
		{"other key ID in the manifest", crafted{entries: ok, edit: func(m *packet.Manifest) { m.GatewayKeyID = "0123456789ABCDEF" }}, packet.Limits{}, packet.ErrMalformed},
		{"signed by another key", crafted{entries: ok, key: &otherKey}, packet.Limits{}, packet.ErrBadSignature},
		{"file too large", crafted{entries: ok}, packet.Limits{MaxFileSize: 5}, packet.ErrTooLarge},
		{"too many files", crafted{entries: ok}, packet.Limits{MaxFiles: 3}, packet.ErrTooLarge},
		{"too much in all", crafted{entries: ok}, packet.Limits{MaxTotalSize: 12}, packet.ErrTooLarge},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			enc := k.craft(t, c.c)
			for _, unpack := range []bool{false, true} {
				r, err := packet.Open(bytes.NewReader(enc), k.id, k.pub)
				if err != nil {
					t.Fatal(err)
				}
				r.Limits = c.limits
				parent := t.TempDir()
				dir := filepath.Join(parent, "out")
				if unpack {
					_, err = r.Unpack(context.Background(), dir)
				} else {
					_, err = r.Verify(context.Background())
				}
				if c.want == nil && err != nil || c.want != nil && !errors.Is(err, c.want) {
					t.Fatalf("unpack=%v: %v, want %v", unpack, err, c.want)
				}
				if unpack && c.want != nil {
					if ents, _ := os.ReadDir(parent); len(ents) != 0 {
						t.Errorf("a failed unpack left %v", ents[0].Name())
					}
				}
				if unpack && c.want == nil {
					if b, err := os.ReadFile(filepath.Join(dir, "summary.html")); err != nil || string(b) != "<p>hi</p>" {
						t.Errorf("unpacked summary: %q, %v", b, err)
					}
				}
			}
		})
	}
}

func TestReaderStream(t *testing.T) {
	k := newKeys(t)
	enc := k.craft(t, crafted{entries: []tarEntry{{name: "a.txt", body: strings.Repeat("x", 200<<10)}}})
	ctx := context.Background()
	cases := []struct {
		name string
		data []byte
		want error
	}{
		{"truncated", enc[:len(enc)-1000], packet.ErrIntegrity},
		{"cut at a chunk boundary", enc[:chunkBoundary(t, enc, 2)], packet.ErrIntegrity},
		{"flipped byte", flip(enc, len(enc)/2), packet.ErrIntegrity},
		{"flipped last byte", flip(enc, len(enc)-1), packet.ErrIntegrity},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r, err := packet.Open(bytes.NewReader(c.data), k.id, k.pub)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := r.Verify(ctx); !errors.Is(err, c.want) {
				t.Fatalf("Verify: %v, want %v", err, c.want)
			}
		})
	}
	t.Run("wrong identity", func(t *testing.T) {
		other, _ := age.GenerateX25519Identity()
		_, err := packet.Open(bytes.NewReader(enc), other, k.pub)
		var nm *age.NoIdentityMatchError
		if !errors.As(err, &nm) {
			t.Fatalf("Open: %v, want NoIdentityMatchError", err)
		}
	})
	t.Run("not age", func(t *testing.T) {
		if _, err := packet.Open(strings.NewReader("hello"), k.id, k.pub); err == nil {
			t.Fatal("Open accepted a non-age stream")
		}
	})
	t.Run("canceled", func(t *testing.T) {
		r, _ := packet.Open(bytes.NewReader(enc), k.id, k.pub)
		ctx, cancel := context.WithCancel(ctx)
		cancel()
		if _, err := r.Verify(ctx); !errors.Is(err, context.Canceled) {
			t.Fatalf("Verify: %v", err)
		}
	})
}

// chunkBoundary returns the offset after the n-th full payload chunk of
// an age file: after the header ("---" line), the 16-byte nonce, and n
// chunks of 64 KiB plus their 16-byte tags.
func chunkBoundary(t *testing.T, enc []byte, n int) int {
	i := bytes.Index(enc, []byte("\n--- "))
	if i < 0 {
		t.Fatal("no age header end")
	}
	j := bytes.IndexByte(enc[i+1:], '\n')
	off := i + 1 + j + 1 + 16 + n*(64<<10+16)
	if off >= len(enc) {
		t.Fatalf("the file has fewer than %d chunks", n+1)
	}
	return off
}

func flip(b []byte, i int) []byte {
	c := bytes.Clone(b)
	c[i] ^= 0x40
	return c
}

func TestValidPath(t *testing.T) {
	for p, ok := range map[string]bool{
		"summary.html": true, "DICOM/P0000001/S0000001/SE000001/I0000001": true, "fhir/bundle.json": true,
		"": false, ".": false, "..": false, "a/..": false, "./a": false, "a//b": false, "a/": false, "/a": false,
		"a b": false, "é": false, "a\x00b": false, `a\b`: false, "C:x": false, strings.Repeat("a", 256): false,
		strings.Repeat("a/", 16) + "a": false,
	} {
		if err := packet.ValidPath(p); (err == nil) != ok {
			t.Errorf("ValidPath(%q) = %v", p, err)
		}
	}
}

// seedPacket is the plaintext tar of a small real packet.
func seedPacket(t testing.TB, k keys) []byte {
	var out bytes.Buffer
	_, err := packet.Build(context.Background(), &out, packet.Contents{
		Case:      packet.Case{ID: "fuzz", Question: "q", Specialty: "s"},
		Bundle:    readFile(t, testdata(t, busterBundle)),
		Instances: packet.Files(testdata(t, "dicom/modality/mr/MR_small.dcm")),
	}, k.options())
	if err != nil {
		t.Fatal(err)
	}
	dr, err := age.Decrypt(&out, k.id)
	if err != nil {
		t.Fatal(err)
	}
	plain, err := io.ReadAll(dr)
	if err != nil {
		t.Fatal(err)
	}
	return plain
}

// FuzzReader feeds tar streams (encrypted to the reader's identity, so that
// they reach the tar and manifest parsing) to Verify: it must return an
// error or a manifest, never panic, and never accept a packet whose
// manifest it did not verify.
func FuzzReader(f *testing.F) {
	k := newKeys(f)
	f.Add(seedPacket(f, k))
	for _, c := range []crafted{
		{entries: []tarEntry{{name: "a", body: "b"}}},
		{entries: []tarEntry{{name: "a", body: "b"}, {name: "../x", body: "y"}}},
		{entries: []tarEntry{{name: "l", typ: tar.TypeSymlink, link: "/"}}},
		{entries: []tarEntry{{name: "a", body: "b"}}, order: "sig-first"},
	} {
		f.Add(k.craftPlain(f, c))
	}
	f.Fuzz(func(t *testing.T, plain []byte) {
		if len(plain) > 4<<20 {
			return
		}
		var enc bytes.Buffer
		w, err := age.Encrypt(&enc, k.id.Recipient())
		if err != nil {
			t.Fatal(err)
		}
		w.Write(plain)
		w.Close()
		r, err := packet.Open(&enc, k.id, k.pub)
		if err != nil {
			t.Fatal(err)
		}
		r.Limits = packet.Limits{MaxFiles: 1000, MaxFileSize: 4 << 20, MaxTotalSize: 8 << 20, MaxManifestSize: 1 << 20}
		m, err := r.Verify(context.Background())
		if err != nil {
			if !errors.Is(err, packet.ErrMalformed) && !errors.Is(err, packet.ErrIntegrity) && !errors.Is(err, packet.ErrUnsafePath) &&
				!errors.Is(err, packet.ErrTooLarge) && !errors.Is(err, packet.ErrBadSignature) {
				t.Fatalf("unclassified error: %v", err)
			}
			return
		}
		if m == nil || m.Format != packet.Format {
			t.Fatalf("accepted manifest %+v", m)
		}
	})
}

// FuzzManifest parses manifests: errors, never panics, and whatever it
// accepts has only safe paths.
func FuzzManifest(f *testing.F) {
	k := newKeys(f)
	plain := seedPacket(f, k)
	tr := tar.NewReader(bytes.NewReader(plain))
	for {
		hdr, err := tr.Next()
		if err != nil {
			break
		}
		if hdr.Name == packet.ManifestPath {
			b, _ := io.ReadAll(tr)
			f.Add(b)
		}
	}
	f.Add([]byte(`{"format":"consilium-packet/1","gatewayKeyId":"0123456789ABCDEF","files":[{"path":"a/../b","size":1,"sha256":""}]}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		if len(b) > 1<<20 {
			return
		}
		m, err := packet.ParseManifest(b)
		if err != nil {
			return
		}
		for _, file := range m.Files {
			if packet.ValidPath(file.Path) != nil || file.Size < 0 || len(file.SHA256) != 64 {
				t.Fatalf("accepted %+v", file)
			}
		}
	})
}
