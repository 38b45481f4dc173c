package storage_test

import (
	"context"
	"crypto/rand"
	"fmt"
	"io"
	"log"
	"os"
	"path/filepath"
	"strings"

	"github.com/consilium/consilium/storage"
)

func ExampleNewFilesystem() {
	dir, err := os.MkdirTemp("", "consilium-example-")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)

	s, err := storage.NewFilesystem(filepath.Join(dir, "store"))
	if err != nil {
		log.Fatal(err)
	}
	ctx := context.Background()
	// Create-if-absent: the second writer learns it lost.
	if _, err := s.Put(ctx, "cases/c1/state", strings.NewReader("open"), storage.PutOptions{IfAbsent: true}); err != nil {
		log.Fatal(err)
	}
	_, err = s.Put(ctx, "cases/c1/state", strings.NewReader("open"), storage.PutOptions{IfAbsent: true})
	fmt.Println("second create:", err)

	rc, info, err := s.Get(ctx, "cases/c1/state", storage.GetOptions{})
	if err != nil {
		log.Fatal(err)
	}
	defer rc.Close()
	b, _ := io.ReadAll(rc)
	fmt.Println(info.Name, info.Size, string(b))
	// Output:
	// second create: storage: put cases/c1/state: storage: object already exists
	// cases/c1/state 4 open
}

func ExampleNewEncrypted() {
	dir, err := os.MkdirTemp("", "consilium-example-")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)

	backend, err := storage.NewFilesystem(filepath.Join(dir, "store"))
	if err != nil {
		log.Fatal(err)
	}
	// In production: storage.LoadKeyring(path) of a file made once with
	// GenerateKeyring and Save.
	kr, err := storage.GenerateKeyring(rand.Reader)
	if err != nil {
		log.Fatal(err)
	}
	s := storage.NewEncrypted(backend, kr)
	ctx := context.Background()

	// Name objects with keyed hashes, never with identifiers.
	name := "fhir/patient/" + kr.NameHash("patient", "MRN-12345")
	if _, err := s.Put(ctx, name, strings.NewReader(`{"resourceType":"Patient"}`),
		storage.PutOptions{ContentType: "application/fhir+json"}); err != nil {
		log.Fatal(err)
	}
	// Ranges are decrypted from the package that holds them.
	rc, info, err := s.Get(ctx, name, storage.GetOptions{Offset: 2, Length: 12})
	if err != nil {
		log.Fatal(err)
	}
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if err != nil {
		log.Fatal(err) // wraps storage.ErrIntegrity if the bytes were changed
	}
	fmt.Println(info.Size, string(b))
	// Output:
	// 26 resourceType
}

func ExampleRewrap() {
	dir, err := os.MkdirTemp("", "consilium-example-")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)
	backend, err := storage.NewFilesystem(filepath.Join(dir, "store"))
	if err != nil {
		log.Fatal(err)
	}
	kr, err := storage.GenerateKeyring(rand.Reader)
	if err != nil {
		log.Fatal(err)
	}
	ctx := context.Background()
	s := storage.NewEncrypted(backend, kr)
	if _, err := s.Put(ctx, "a", strings.NewReader("data"), storage.PutOptions{}); err != nil {
		log.Fatal(err)
	}

	// consilium keys rotate: new active key, re-wrap, retire the old.
	old := kr.ActiveID()
	if _, err := kr.Rotate(rand.Reader); err != nil {
		log.Fatal(err)
	}
	// (Save the keyring here, and have every gateway load it.)
	stats, err := storage.Rewrap(ctx, backend, kr, storage.RewrapOptions{})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("rewrapped:", stats.Rewrapped, "skipped:", len(stats.Skipped))
	fmt.Println("retire:", kr.Retire(old))
	// Output:
	// rewrapped: 1 skipped: 0
	// retire: <nil>
}
