package gateway_test

import (
	"context"
	"crypto/rand"
	"testing"

	"github.com/consilium/consilium/gateway"
	"github.com/consilium/consilium/gateway/gatewaytest"
	"github.com/consilium/consilium/internal/miniotest"
	"github.com/consilium/consilium/storage"
)

// The FHIR API's key guarantees again, on a real MinIO server: every
// valid file stored and read back equal, every invalid one refused with
// nothing stored, organisation scoping, no lost update between two
// gateways, nothing left by a client that goes away mid-upload.
//
// (No TestMain here: each test starts its own server unless
// CONSILIUM_TEST_MINIO_ENDPOINT points at one, as under CI.)

func minioFHIRStore(t *testing.T) (storage.Store, func(kind, value string) string) {
	t.Helper()
	srv := miniotest.Start(t)
	m, err := storage.NewMinIO(context.Background(), storage.MinIOConfig{
		Endpoint: srv.Endpoint, AccessKey: srv.AccessKey, SecretKey: srv.SecretKey, Bucket: srv.Bucket, UseTLS: srv.UseTLS,
	})
	if err != nil {
		t.Fatal(err)
	}
	kr, err := storage.GenerateKeyring(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return storage.NewEncrypted(m, kr), kr.NameHash
}

func TestFHIROnMinIO(t *testing.T) {
	store, names := minioFHIRStore(t)
	g := gatewaytest.Start(t, store, gatewaytest.Config{Options: gateway.Options{Names: names}})
	f := newFHIRClient(t, g, "st-marys")
	t.Run("valid files read back equal", func(t *testing.T) { validFilesReadBack(t, f) })
	t.Run("invalid files refused without trace", func(t *testing.T) { invalidFilesRefused(t, g, f) })
	t.Run("scoped by organisation", func(t *testing.T) { scopedByOrganisation(t, g) })
	t.Run("disconnect mid-upload leaves nothing", func(t *testing.T) { disconnectLeavesNothing(t, g) })
}

func TestFHIRTwoInstancesOnMinIO(t *testing.T) {
	store, _ := minioFHIRStore(t)
	twoInstances(t, store)
}
