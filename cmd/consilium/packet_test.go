package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"aead.dev/minisign"
	"filippo.io/age"

	"github.com/consilium/consilium/deid"
	"github.com/consilium/consilium/packet"
)

// packetFiles builds a packet for a Synthea bundle and one CT instance and
// writes it with the specialist's identity and the gateway's public key.
func packetFiles(t *testing.T) (pkt, identity, pub string) {
	t.Helper()
	id, err := age.GenerateX25519Identity()
	if err != nil {
		t.Fatal(err)
	}
	pk, sk, err := minisign.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	src, err := deid.NewKeyed(bytes.Repeat([]byte{7}, 32), deid.KeyedOptions{})
	if err != nil {
		t.Fatal(err)
	}
	bundle, err := os.ReadFile(shared(t, "fhir", "synthea", "Ned_Hintz_e4b9259d-0f54-48d1-a35d-b526729a4dfe.json"))
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	_, err = packet.Build(context.Background(), &buf, packet.Contents{
		Case:      packet.Case{ID: "case-1", Question: "Second read of the chest CT?", Specialty: "radiology"},
		Bundle:    bundle,
		Instances: packet.Files(shared(t, "dicom", "modality", "ct", "CT_small.dcm")),
	}, packet.Options{
		Recipients: []age.Recipient{id.Recipient()},
		SigningKey: sk,
		Deid:       packet.Deidentification{Source: src, PatientKey: "st-marys|ned"},
	})
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	write := func(name string, b []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, b, 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	pubText, _ := pk.MarshalText()
	other, _ := age.GenerateX25519Identity()
	// Two identities in the file, the right one second.
	return write("case.packet", buf.Bytes()), write("id.agekey", []byte(other.String()+"\n"+id.String()+"\n")), write("gateway.pub", pubText)
}

func TestPacketCLI(t *testing.T) {
	pkt, identity, pub := packetFiles(t)
	otherPub := filepath.Join(t.TempDir(), "other.pub")
	pk, _, _ := minisign.GenerateKey(rand.Reader)
	txt, _ := pk.MarshalText()
	os.WriteFile(otherPub, txt, 0o600)
	tampered := filepath.Join(t.TempDir(), "tampered.packet")
	b, _ := os.ReadFile(pkt)
	b[len(b)-100] ^= 1
	os.WriteFile(tampered, b, 0o600)
	wrongID := filepath.Join(t.TempDir(), "wrong.agekey")
	w, _ := age.GenerateX25519Identity()
	os.WriteFile(wrongID, []byte(w.String()+"\n"), 0o600)

	out := filepath.Join(t.TempDir(), "case")
	cases := []struct {
		name   string
		env    map[string]string
		args   []string
		code   int
		stdout string
		stderr string
	}{
		{"verify", nil, []string{"packet", "verify", pkt, "--identity", identity, "--pub", pub}, 0, "packet verified: case case-1 (radiology), 7 files", ""},
		{"verify from env", map[string]string{"CONSILIUM_IDENTITY": identity, "CONSILIUM_GATEWAY_PUB": pub}, []string{"packet", "verify", pkt}, 0, "residual identifier scan: clean", ""},
		{"open", nil, []string{"packet", "open", "--identity", identity, pkt, "--out", out, "--pub", pub}, 0, "unpacked to", ""},
		{"open into a full directory", nil, []string{"packet", "open", pkt, "--identity", identity, "--out", out, "--pub", pub}, 1, "", "not empty"},
		{"other gateway key", nil, []string{"packet", "verify", pkt, "--identity", identity, "--pub", otherPub}, 1, "", "signature does not verify"},
		{"tampered", nil, []string{"packet", "verify", tampered, "--identity", identity, "--pub", pub}, 1, "", "damaged or truncated"},
		{"wrong identity", nil, []string{"packet", "verify", pkt, "--identity", wrongID, "--pub", pub}, 1, "", "not encrypted to"},
		{"no pub", nil, []string{"packet", "verify", pkt, "--identity", identity}, 2, "", "--pub is required"},
		{"no out", nil, []string{"packet", "open", pkt, "--identity", identity, "--pub", pub}, 2, "", "--out is required"},
		{"two files", nil, []string{"packet", "verify", pkt, pkt, "--identity", identity, "--pub", pub}, 2, "", "exactly one"},
		{"unknown", nil, []string{"packet", "sign"}, 2, "", "unknown packet subcommand"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			code, stdout, stderr := runCLI(t, c.env, c.args...)
			if code != c.code || !strings.Contains(stdout, c.stdout) || !strings.Contains(stderr, c.stderr) {
				t.Fatalf("exit %d (want %d)\nstdout: %s\nstderr: %s", code, c.code, stdout, stderr)
			}
		})
	}
	for _, f := range []string{packet.SummaryPath, packet.BundlePath, packet.DICOMDIRPath, packet.ManifestPath, "DICOM/P0000001/S0000001/SE000001/I0000001"} {
		if _, err := os.Stat(filepath.Join(out, filepath.FromSlash(f))); err != nil {
			t.Errorf("open: %v", err)
		}
	}
}
