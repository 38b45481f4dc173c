package fhir_test

import (
	"context"
	"crypto/rand"
	"fmt"
	"log"
	"os"
	"strings"

	"github.com/consilium/consilium/fhir"
	"github.com/consilium/consilium/storage"
)

// exampleStore is an encrypted filesystem store in a temporary folder.
func exampleStore() (*fhir.Store, func()) {
	dir, err := os.MkdirTemp("", "fhir-example")
	if err != nil {
		log.Fatal(err)
	}
	backend, err := storage.NewFilesystem(dir)
	if err != nil {
		log.Fatal(err)
	}
	kr, err := storage.GenerateKeyring(rand.Reader)
	if err != nil {
		log.Fatal(err)
	}
	st, err := fhir.NewStore(storage.NewEncrypted(backend, kr), fhir.StoreOptions{Names: kr.NameHash})
	if err != nil {
		log.Fatal(err)
	}
	return st, func() { os.RemoveAll(dir) }
}

// allowAll is an authorizer for examples; the gateway asks its policy.
func allowAll(context.Context, fhir.Access) error { return nil }

func ExampleStore_ProcessBundle() {
	st, cleanup := exampleStore()
	defer cleanup()
	ctx := context.Background()
	bundle := `{"resourceType":"Bundle","type":"transaction","entry":[
	  {"fullUrl":"urn:uuid:0c3a8f2e-5d4b-4e1a-9c7f-1b2d3e4f5a6b",
	   "resource":{"resourceType":"Patient","identifier":[{"system":"urn:example:mrn","value":"12345"}]},
	   "request":{"method":"POST","url":"Patient"}},
	  {"resource":{"resourceType":"Observation","status":"final","code":{"text":"body weight"},
	               "subject":{"reference":"urn:uuid:0c3a8f2e-5d4b-4e1a-9c7f-1b2d3e4f5a6b"}},
	   "request":{"method":"POST","url":"Observation"}}]}`
	res, err := st.ProcessBundle(ctx, "st-marys", []byte(bundle), fhir.WriteOptions{Authorize: allowAll})
	if err != nil {
		log.Fatal(err)
	}
	for _, e := range res.Entries {
		fmt.Println(e.Status, e.Type, e.ETag())
	}
	// The Observation now references the Patient by the id it was given.
	obs, _ := st.Read(ctx, "st-marys", "Observation", res.Entries[1].ID)
	body, _ := st.Body(ctx, obs)
	fmt.Println(strings.Contains(string(body), `"reference":"Patient/`+res.Entries[0].ID+`"`))
	// Output:
	// 201 Patient W/"1"
	// 201 Observation W/"1"
	// true
}

func ExampleStore_Everything() {
	st, cleanup := exampleStore()
	defer cleanup()
	ctx := context.Background()
	opts := fhir.WriteOptions{Authorize: allowAll}
	for _, r := range []struct{ typ, id, body string }{
		{"Patient", "p1", `{"resourceType":"Patient","id":"p1"}`},
		{"Consent", "c1", `{"resourceType":"Consent","id":"c1","status":"active","scope":{"text":"privacy"},"category":[{"text":"consent"}],"patient":{"reference":"Patient/p1"}}`},
		{"Condition", "d1", `{"resourceType":"Condition","id":"d1","subject":{"reference":"Patient/p1"},"code":{"text":"x"}}`},
	} {
		if _, err := st.Update(ctx, "st-marys", r.typ, r.id, []byte(r.body), "", opts); err != nil {
			log.Fatal(err)
		}
	}
	// A case packet streams the patient's record...
	vs, err := st.Everything(ctx, "st-marys", "p1")
	if err != nil {
		log.Fatal(err)
	}
	for body, err := range st.Bodies(ctx, vs) {
		if err != nil {
			log.Fatal(err)
		}
		fmt.Println(len(body) > 0)
	}
	for _, v := range vs {
		fmt.Println(v.Type, v.ID, v.VersionID)
	}
	// ...and a policy input needs the patient's consents.
	consents, err := st.Consents(ctx, "st-marys", "p1")
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(len(consents), "consent")
	// Output:
	// true
	// true
	// true
	// Patient p1 1
	// Condition d1 1
	// Consent c1 1
	// 1 consent
}
