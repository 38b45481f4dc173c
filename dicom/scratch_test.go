package dicom_test

import (
	"bytes"
	"context"
	"os"
	"slices"
	"sync"
	"testing"
)

// TestRewriteOrderIndependent de-identifies the corpus in order, in
// reverse and from four goroutines at once, and wants the same bytes for
// every file each time: Rewrite reuses its working memory from one
// instance to the next, and nothing of one instance may reach another.
func TestRewriteOrderIndependent(t *testing.T) {
	valid, invalid := corpus(t)
	files := append(slices.Clone(valid), invalid...)
	d := newDeidentifier(t, "basic,clean-descriptors,retain-safe-private", keyedSource(t))
	rewrite := func(p string) []byte {
		in, err := os.Open(p)
		if err != nil {
			t.Error(err)
			return nil
		}
		defer in.Close()
		var out bytes.Buffer
		if _, err := d.Rewrite(context.Background(), &out, in, testKey); err != nil {
			return []byte("error: " + err.Error())
		}
		return out.Bytes()
	}
	want := map[string][]byte{}
	for _, p := range files {
		want[p] = rewrite(p)
	}
	// An instance without a SOP Instance UID gets a random one: those
	// differ from run to run whatever the order.
	n := 0
	for _, p := range files {
		if !bytes.Equal(rewrite(p), want[p]) {
			delete(want, p)
			continue
		}
		files[n] = p
		n++
	}
	files = files[:n]
	if n < 40 {
		t.Fatalf("only %d files de-identify deterministically", n)
	}
	check := func(how, p string, got []byte) {
		if !bytes.Equal(got, want[p]) {
			t.Errorf("%s: %s: output differs from the first run", how, rel(t, p))
		}
	}
	for _, p := range slices.Backward(files) {
		check("reverse", p, rewrite(p))
	}
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Go(func() {
			for i := w; i < len(files); i += 4 {
				check("concurrent", files[i], rewrite(files[i]))
			}
		})
	}
	wg.Wait()
}
