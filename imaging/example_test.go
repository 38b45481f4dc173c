package imaging_test

import (
	"context"
	"crypto/rand"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/consilium/consilium/imaging"
	"github.com/consilium/consilium/storage"
)

// A store request adds instances as they arrive and publishes them in one
// commit; a retrieval finds the study and streams the bytes back.
func Example() {
	ctx := context.Background()
	dir, _ := os.MkdirTemp("", "imaging-example")
	defer os.RemoveAll(dir)
	fs, _ := storage.NewFilesystem(dir)
	kr, _ := storage.GenerateKeyring(rand.Reader)
	archive, _ := imaging.New(storage.NewEncrypted(fs, kr), imaging.Options{Names: kr.NameHash})

	in, _ := archive.Begin(imaging.IngestOptions{Org: "st-marys"})
	for _, name := range []string{"modality/ct/CT_small.dcm", "invalid/no_meta.dcm"} {
		f, err := os.Open(filepath.Join("..", "..", "shared", "testdata", "dicom", name))
		if err != nil {
			fmt.Println(err)
			return
		}
		if _, err := in.Add(ctx, f); err != nil {
			fmt.Println(err)
			return
		}
		f.Close()
	}
	for _, r := range in.Commit(ctx) {
		fmt.Println(r.Outcome, r.Status, r.Size)
	}

	study, _ := archive.Study(ctx, "st-marys", "1.3.6.1.4.1.5962.1.2.1.20040119072730.12322")
	instances, _ := study.Instances("", "")
	rc, _ := archive.Open(ctx, instances[0])
	n, _ := io.Copy(io.Discard, rc)
	rc.Close()
	fmt.Println(len(instances), "instance,", n, "bytes")
	// Output:
	// stored 0000 39206
	// failed C000 0
	// 1 instance, 39206 bytes
}
