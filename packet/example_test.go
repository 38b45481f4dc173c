package packet_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"fmt"
	"log"
	"os"
	"path/filepath"

	"aead.dev/minisign"
	"filippo.io/age"

	"github.com/consilium/consilium/deid"
	"github.com/consilium/consilium/packet"
)

// exampleBundle is a hospital's original record of one patient.
const exampleBundle = `{"resourceType":"Bundle","type":"collection","entry":[
 {"fullUrl":"urn:uuid:7d5c1f2e-0000-4000-8000-000000000001","resource":{"resourceType":"Patient","id":"7d5c1f2e-0000-4000-8000-000000000001",
  "identifier":[{"system":"urn:oid:1.2.3","value":"MRN-48151623"}],"name":[{"family":"Okonkwo","given":["Adaeze"]}],
  "telecom":[{"system":"phone","value":"+44 20 7946 0958"}],"birthDate":"1970-05-04","address":[{"line":["221B Baker Street"]}]}},
 {"resource":{"resourceType":"Condition","subject":{"reference":"urn:uuid:7d5c1f2e-0000-4000-8000-000000000001"},
  "code":{"text":"Pulmonary nodule"},"onsetDateTime":"2026-09-01"}}]}`

// Build a packet for a specialist: the gateway passes the original
// records, its pseudonym source and the obligations of the policy decision.
func ExampleBuild() {
	specialist, _ := age.GenerateX25519Identity() // registered by the specialist
	_, gatewayKey, _ := minisign.GenerateKey(rand.Reader)
	src, _ := deid.NewKeyed(bytes.Repeat([]byte{1}, 32), deid.KeyedOptions{})

	var out bytes.Buffer // the HTTP response, in the gateway
	res, err := packet.Build(context.Background(), &out, packet.Contents{
		Case:   packet.Case{ID: "case-0042", Question: "Is the nodule suspicious?", Specialty: "pulmonology"},
		Bundle: []byte(exampleBundle),
		// Instances: the study's instances, streamed from the store.
	}, packet.Options{
		Recipients: []age.Recipient{specialist.Recipient()},
		SigningKey: gatewayKey,
		Deid:       packet.Deidentification{Source: src, PatientKey: "st-marys|7d5c1f2e"},
	})
	if err != nil {
		log.Fatal(err)
	}
	for _, f := range res.Manifest.Files {
		fmt.Println(f.Path, f.MediaType)
	}
	fmt.Println("residual scan:", res.Manifest.Deidentification.ResidualScan)
	// Output:
	// summary.html text/html; charset=utf-8
	// fhir/bundle.json application/fhir+json
	// deid-receipt.json application/json
	// residual scan: clean
}

// Open, verify and unpack a packet, as consilium packet open does.
func ExampleOpen() {
	specialist, _ := age.GenerateX25519Identity()
	gatewayPub, gatewayKey, _ := minisign.GenerateKey(rand.Reader)
	src, _ := deid.NewKeyed(bytes.Repeat([]byte{1}, 32), deid.KeyedOptions{})
	var pkt bytes.Buffer
	if _, err := packet.Build(context.Background(), &pkt, packet.Contents{
		Case:   packet.Case{ID: "case-0042", Question: "Is the nodule suspicious?", Specialty: "pulmonology"},
		Bundle: []byte(exampleBundle),
	}, packet.Options{
		Recipients: []age.Recipient{specialist.Recipient()},
		SigningKey: gatewayKey,
		Deid:       packet.Deidentification{Source: src, PatientKey: "st-marys|7d5c1f2e"},
	}); err != nil {
		log.Fatal(err)
	}

	r, err := packet.Open(&pkt, specialist, gatewayPub)
	if err != nil {
		log.Fatal(err) // not encrypted to this specialist
	}
	dir, _ := os.MkdirTemp("", "example")
	defer os.RemoveAll(dir)
	m, err := r.Unpack(context.Background(), filepath.Join(dir, "case-0042"))
	if err != nil {
		log.Fatal(err) // bad signature, a hash mismatch, an unsafe entry...
	}
	fmt.Println(m.Case.ID, m.Case.Specialty, len(m.Files), "files verified")
	// Output: case-0042 pulmonology 3 files verified
}
