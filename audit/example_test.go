package audit_test

import (
	"context"
	"crypto/rand"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"aead.dev/minisign"

	"github.com/consilium/consilium/audit"
	"github.com/consilium/consilium/internal/testenv"
	"github.com/consilium/consilium/storage"
)

// Example records an entry durably and verifies the chain, as a gateway
// and then a compliance officer would.
func Example() {
	ctx := context.Background()
	dir, _ := os.MkdirTemp("", "audit-example-")
	defer os.RemoveAll(dir)
	store, _ := storage.NewFilesystem(dir) // the raw backend: entries hold pseudonyms only
	pub, key, _ := minisign.GenerateKey(rand.Reader)

	l, err := audit.Open(ctx, audit.Config{Source: "gw-1"}, audit.Options{Store: store, Signer: key})
	if err != nil {
		panic(err)
	}
	e, err := l.Record(ctx, audit.Entry{
		Actor:    audit.Actor{ID: "dr-okafor", Org: "dr-okafor", Role: "specialist", Country: "US"},
		Action:   "case.packet.download",
		Target:   audit.Target{Case: "c-42", Patient: "p-7f3a"},
		Decision: &audit.Decision{Allow: true, Reasons: []string{"assigned specialist, active consent"}, PolicyVersion: "v1"},
		Outcome:  200,
	})
	if err != nil {
		panic(err) // fail closed: the download must not happen
	}
	l.Close() // signs a checkpoint of the head

	rep, _ := audit.Verify(ctx, store, audit.VerifyOptions{PublicKey: pub})
	fmt.Println(e.Seq, rep.OK, rep.Entries, rep.LastCheckpoint.Seq)
	// Output: 1 true 1 1
}

// TestCheckpointVerifiesWithMinisign checks a checkpoint with the
// standard minisign tool, as its documentation says.
func TestCheckpointVerifiesWithMinisign(t *testing.T) {
	bin := testenv.LookPath(t, "minisign", "apt-get install minisign")
	store, _ := newFS(t)
	key := newKey(t)
	l := openLog(t, store, key, audit.Config{})
	if _, err := l.Record(context.Background(), entry(1)); err != nil {
		t.Fatal(err)
	}
	l.Close()
	data := get(t, store, cpName(1))
	dir := t.TempDir()
	i := indexByte(data, '\n')
	pubText, err := pubOf(key).MarshalText()
	if err != nil {
		t.Fatal(err)
	}
	for name, content := range map[string][]byte{
		"stmt": data[:i+1], "stmt.minisig": data[i+1:],
		"gateway.pub": append(pubText, '\n'),
	} {
		if err := os.WriteFile(filepath.Join(dir, name), content, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	out, err := exec.Command(bin, "-V", "-p", filepath.Join(dir, "gateway.pub"), "-m", filepath.Join(dir, "stmt")).CombinedOutput()
	if err != nil {
		t.Fatalf("minisign -V: %v\n%s", err, out)
	}
	t.Logf("%s", out)
	os.WriteFile(filepath.Join(dir, "stmt"), append([]byte(" "), data[:i+1]...), 0o600)
	if out, err := exec.Command(bin, "-V", "-p", filepath.Join(dir, "gateway.pub"), "-m", filepath.Join(dir, "stmt")).CombinedOutput(); err == nil {
		t.Fatalf("minisign accepted a changed statement: %s", out)
	}
}

func indexByte(b []byte, c byte) int {
	for i, x := range b {
		if x == c {
			return i
		}
	}
	return -1
}
