package packet_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"aead.dev/minisign"
	"filippo.io/age"
	sdicom "github.com/suyashkumar/dicom"
	"github.com/suyashkumar/dicom/pkg/tag"

	"github.com/consilium/consilium/deid"
	"github.com/consilium/consilium/dicom"
	"github.com/consilium/consilium/fhir"
	"github.com/consilium/consilium/internal/testenv"
	"github.com/consilium/consilium/packet"
)

// caseContents is a case for Buster Hoeger with the generated study and a
// few corpus instances (an ultrasound, which is withheld as possibly
// showing burned-in text, and an MR).
func caseContents(t *testing.T, study []string) packet.Contents {
	files := slices.Concat(study, []string{
		testdata(t, "dicom/modality/ct/CT_small.dcm"),
		testdata(t, "dicom/modality/mr/MR_small.dcm"),
		testdata(t, "dicom/modality/us/OBXXXX1A_rle_2frame.dcm"),
	})
	return packet.Contents{
		Case: packet.Case{
			ID:        "case-7f3a",
			Question:  "Is the <lesion> in segment 7 malignant? Compare with 2019 & advise.",
			Specialty: "radiology",
			Languages: []string{"en", "fr"},
			Deadline:  time.Date(2026, 12, 1, 17, 0, 0, 0, time.UTC),
			Recipient: "dr-okafor",
		},
		Bundle:      readFile(t, testdata(t, busterBundle)),
		Instances:   packet.Files(files...),
		Identifiers: studyIdentifiers,
	}
}

func TestBuildOpen(t *testing.T) {
	k := newKeys(t)
	study := genStudy(t, 12)
	enc, res := build(t, caseContents(t, study), k.options())

	// The manifest.
	m := res.Manifest
	var paths []string
	for _, f := range m.Files {
		paths = append(paths, f.Path)
	}
	if len(paths) < 5 || paths[0] != packet.SummaryPath || paths[1] != packet.BundlePath ||
		paths[len(paths)-2] != packet.DICOMDIRPath || paths[len(paths)-1] != packet.ReceiptPath {
		t.Fatalf("file order: %v", paths)
	}
	dcm := 0
	for _, p := range paths {
		if strings.HasPrefix(p, "DICOM/") {
			dcm++
			parts := strings.Split(p, "/")
			if err := dicom.ValidFileID(parts); err != nil {
				t.Errorf("%s: %v", p, err)
			}
		}
	}
	if dcm != len(study)+2 {
		t.Errorf("%d DICOM files, want %d", dcm, len(study)+2)
	}
	if m.Case.Patient == "" || m.Case.ID != "case-7f3a" || m.GatewayKeyID != packet.KeyID(k.pub.ID()) {
		t.Errorf("case %+v, key %s", m.Case, m.GatewayKeyID)
	}
	if d := m.Deidentification; d.DICOM == nil || d.DICOM.Name != "basic" || !slices.Contains(d.DICOM.Options, "retain-long-modified-dates") ||
		d.FHIR == nil || d.FHIR.Name != "shifted" || !d.BurnedInWithheld || d.ResidualScan != packet.ScanClean || !slices.Contains(d.ExcludedLabels, "HIV") {
		t.Errorf("deidentification: %+v", d)
	}
	var burned, claims bool
	for _, w := range m.Withheld {
		burned = burned || (w.Kind == "dicom-instance" && strings.Contains(w.Reason, "burned-in") && w.Modality == "US" && w.SOPInstanceUID != "")
		claims = claims || (w.Kind == "fhir-resource" && w.ResourceType == "Claim" && w.Count == 7)
	}
	if !burned || !claims {
		t.Errorf("withheld: %+v", m.Withheld)
	}

	// The receipt.
	rc := res.Receipt
	if rc.DICOM == nil || rc.DICOM.Instances != dcm || len(rc.DICOM.Actions) == 0 || rc.DICOM.PixelBytes == 0 {
		t.Errorf("DICOM receipt: %+v", rc.DICOM)
	}
	if rc.FHIR == nil || rc.FHIR.Resources == 0 || len(rc.FHIR.Changes) == 0 {
		t.Errorf("FHIR receipt: %+v", rc.FHIR)
	}
	if s := rc.ResidualScan; !s.Clean || s.Files != len(m.Files)-1 || s.Values < 10 || len(res.Hits) != 0 {
		t.Errorf("residual scan: %+v, hits %v", s, res.Hits)
	}

	t.Run("verify", func(t *testing.T) {
		r, err := packet.Open(bytes.NewReader(enc), k.id, k.pub)
		if err != nil {
			t.Fatal(err)
		}
		got, err := r.Verify(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if !equalJSON(t, got, m) {
			t.Error("verified manifest differs from the built one")
		}
		if _, err := r.Verify(context.Background()); err == nil {
			t.Error("a Reader read twice")
		}
	})

	t.Run("unpack", func(t *testing.T) {
		dir := filepath.Join(t.TempDir(), "case")
		r, err := packet.Open(bytes.NewReader(enc), k.id, k.pub)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := r.Unpack(context.Background(), dir); err != nil {
			t.Fatal(err)
		}
		for _, f := range m.Files {
			b := readFile(t, filepath.Join(dir, filepath.FromSlash(f.Path)))
			sum := sha256.Sum256(b)
			if int64(len(b)) != f.Size || hex.EncodeToString(sum[:]) != f.SHA256 {
				t.Errorf("%s differs from the manifest", f.Path)
			}
		}
		var receipt packet.Receipt
		if err := json.Unmarshal(readFile(t, filepath.Join(dir, packet.ReceiptPath)), &receipt); err != nil {
			t.Fatal(err)
		}
		if !receipt.ResidualScan.Clean || receipt.DICOM == nil {
			t.Errorf("receipt: %+v", receipt.ResidualScan)
		}
		if found := leaks(t, dir); len(found) > 0 {
			t.Errorf("original identifiers in the unpacked packet: %v", found)
		}
		// The check itself finds identifiers where they are.
		orig := t.TempDir()
		os.MkdirAll(filepath.Join(orig, "DICOM"), 0o700)
		os.WriteFile(filepath.Join(orig, "DICOM", "I1"), readFile(t, study[0]), 0o600)
		os.WriteFile(filepath.Join(orig, "bundle.json"), readFile(t, testdata(t, busterBundle)), 0o600)
		if found := leaks(t, orig); len(found) < 15 {
			t.Errorf("the leak check finds only %v in the originals", found)
		}
		checkSummary(t, readFile(t, filepath.Join(dir, packet.SummaryPath)))

		// The DICOMDIR reads back with another DICOM library, and its
		// records reference the files the manifest lists.
		dd := readFile(t, filepath.Join(dir, packet.DICOMDIRPath))
		ds, err := sdicom.Parse(bytes.NewReader(dd), int64(len(dd)), nil)
		if err != nil {
			t.Fatal(err)
		}
		seq, err := ds.FindElementByTag(tag.DirectoryRecordSequence)
		if err != nil {
			t.Fatal(err)
		}
		refs := 0
		for _, it := range seq.Value.GetValue().([]*sdicom.SequenceItemValue) {
			for _, el := range it.GetValue().([]*sdicom.Element) {
				if el.Tag == tag.ReferencedFileID {
					refs++
					p := strings.Join(el.Value.GetValue().([]string), "/")
					if !slices.Contains(paths, p) {
						t.Errorf("DICOMDIR references %s, not in the manifest", p)
					}
				}
			}
		}
		if refs != dcm {
			t.Errorf("DICOMDIR references %d files, want %d", refs, dcm)
		}

		// A second unpack into the same, now full, directory is refused.
		r, _ = packet.Open(bytes.NewReader(enc), k.id, k.pub)
		if _, err := r.Unpack(context.Background(), dir); err == nil {
			t.Error("unpacked into a non-empty directory")
		}
	})
}

func equalJSON(t *testing.T, a, b any) bool {
	t.Helper()
	x, err := json.Marshal(a)
	if err != nil {
		t.Fatal(err)
	}
	y, err := json.Marshal(b)
	if err != nil {
		t.Fatal(err)
	}
	return bytes.Equal(x, y)
}

// checkSummary checks that summary.html is self-contained, escaped and
// says what the specialist needs.
func checkSummary(t *testing.T, html []byte) {
	t.Helper()
	s := string(html)
	for _, bad := range []string{"<script", "<lesion>", "src=", "href=", "http://", "https://", "@import", "url("} {
		if strings.Contains(strings.ToLower(s), bad) {
			t.Errorf("summary.html contains %q", bad)
		}
	}
	for _, want := range []string{
		"Content-Security-Policy", "default-src 'none'", "&lt;lesion&gt;", "2019 &amp; advise", "radiology",
		"2026-12-01", "Condition", "Observation", "Procedure", "<table>",
	} {
		if !strings.Contains(s, want) {
			t.Errorf("summary.html lacks %q", want)
		}
	}
}

// TestInterop opens a packet with Debian's age, tar, minisign, sha256sum,
// dcmdump and dciodvfy: the tools a specialist without the CLI uses.
func TestInterop(t *testing.T) {
	ageBin := testenv.LookPath(t, "age", "apt-get install age")
	minisignBin := testenv.LookPath(t, "minisign", "apt-get install minisign")
	tarBin := testenv.LookPath(t, "tar", "apt-get install tar")
	shaBin := testenv.LookPath(t, "sha256sum", "apt-get install coreutils")
	dcmdump := testenv.LookPath(t, "dcmdump", "apt-get install dcmtk")
	dciodvfy := testenv.LookPath(t, "dciodvfy", "apt-get install dicom3tools")

	k := newKeys(t)
	enc, res := build(t, caseContents(t, genStudy(t, 8)), k.options())
	work := t.TempDir()
	write := func(name string, b []byte) string {
		p := filepath.Join(work, name)
		if err := os.WriteFile(p, b, 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	pkt := write("case.packet", enc)
	identity := write("identity.agekey", []byte("# test identity\n"+k.id.String()+"\n"))
	pubText, _ := k.pub.MarshalText()
	pub := write("gateway.pub", append(pubText, '\n'))
	run := func(dir, name string, args ...string) []byte {
		t.Helper()
		cmd := exec.Command(name, args...)
		cmd.Dir = dir
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("%s %s: %v\n%s", filepath.Base(name), strings.Join(args, " "), err, stderr.String())
		}
		return append(out, stderr.Bytes()...)
	}

	tarFile := filepath.Join(work, "case.tar")
	run(work, ageBin, "-d", "-i", identity, "-o", tarFile, pkt)
	dir := filepath.Join(work, "case")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	run(dir, tarBin, "-xf", tarFile)
	for _, args := range [][]string{{"-V", "-p", pub, "-m", packet.ManifestPath}, {"-V", "-H", "-p", pub, "-m", packet.ManifestPath}} {
		out := run(dir, minisignBin, args...)
		if !bytes.Contains(out, []byte("Signature and comment signature verified")) || !bytes.Contains(out, []byte(res.Manifest.PacketID)) {
			t.Errorf("minisign %v: %s", args, out)
		}
	}
	// A changed manifest does not verify.
	changed := bytes.Replace(readFile(t, filepath.Join(dir, packet.ManifestPath)), []byte("radiology"), []byte("cardiology"), 1)
	write("changed.json", changed)
	if err := exec.Command(minisignBin, "-V", "-p", pub, "-m", filepath.Join(work, "changed.json"), "-x", filepath.Join(dir, packet.SignaturePath)).Run(); err == nil {
		t.Error("minisign verified a changed manifest")
	}

	var m packet.Manifest
	if err := json.Unmarshal(readFile(t, filepath.Join(dir, packet.ManifestPath)), &m); err != nil {
		t.Fatal(err)
	}
	var sums strings.Builder
	for _, f := range m.Files {
		sums.WriteString(f.SHA256 + "  " + f.Path + "\n")
	}
	write("SHA256SUMS", []byte(sums.String()))
	out := run(dir, shaBin, "--strict", "-c", filepath.Join(work, "SHA256SUMS"))
	if n := strings.Count(string(out), ": OK"); n != len(m.Files) {
		t.Errorf("sha256sum checked %d of %d files:\n%s", n, len(m.Files), out)
	}
	// Every file in the tree is in the manifest.
	var all []string
	filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			rel, _ := filepath.Rel(dir, p)
			all = append(all, filepath.ToSlash(rel))
		}
		return err
	})
	if len(all) != len(m.Files)+2 {
		t.Errorf("%d files unpacked, manifest lists %d (+2)", len(all), len(m.Files))
	}

	dcmftest := testenv.LookPath(t, "dcmftest", "apt-get install dcmtk")
	for _, f := range m.Files {
		if f.MediaType != packet.MediaDICOM {
			continue
		}
		out := run(dir, dcmdump, "-q", "--load-all", f.Path)
		if f.Path == packet.DICOMDIRPath && !bytes.Contains(out, []byte("DirectoryRecordSequence")) {
			t.Errorf("dcmdump DICOMDIR: no records")
		}
		if out := run(dir, dcmftest, f.Path); !bytes.HasPrefix(out, []byte("yes:")) {
			t.Errorf("dcmftest: %s", out)
		}
	}
	out, _ = exec.Command(dciodvfy, filepath.Join(dir, packet.DICOMDIRPath)).CombinedOutput()
	for _, l := range strings.Split(string(out), "\n") {
		if strings.HasPrefix(l, "Error") {
			t.Errorf("dciodvfy DICOMDIR: %s", l)
		}
	}
	if found := leaks(t, dir); len(found) > 0 {
		t.Errorf("original identifiers in the unpacked packet: %v", found)
	}
}

// deidentified returns one de-identified instance and its report.
func deidentified(t *testing.T, k keys, file string) ([]byte, *dicom.Report) {
	t.Helper()
	d, err := dicom.NewDeidentifier(dicom.Options{Profile: mustDICOMProfile(t), Source: k.src})
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(file)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out bytes.Buffer
	rep, err := d.Rewrite(context.Background(), &out, f, dicom.PatientKey("st-marys|patient-1"))
	if err != nil {
		t.Fatal(err)
	}
	return out.Bytes(), rep
}

// TestResidualScan plants identifiers in content handed over as already
// de-identified, and checks that the scan reports them and, when asked,
// fails the build before the file is written.
func TestResidualScan(t *testing.T) {
	k := newKeys(t)
	study := genStudy(t, 2)
	inst, rep := deidentified(t, k, study[0])
	// Put the original Patient ID where the pseudonym was, at the same
	// length so that the instance stays valid.
	planted := bytes.Replace(inst, []byte(rep.Pseudonym), []byte(fmtLen("MRN-00012345", len(rep.Pseudonym))), -1)
	if bytes.Equal(planted, inst) {
		t.Fatal("pseudonym not found in the de-identified instance")
	}
	clean, _ := deidentified(t, k, study[1])

	bundle := []byte(`{"resourceType":"Bundle","type":"collection","entry":[{"resource":{"resourceType":"Observation","status":"final",` +
		`"code":{"text":"note"},"valueString":"call back on 555 866 2259 or 555-866-2259"}}]}`)

	type planted_ struct {
		name     string
		contents packet.Contents
		path     string
		kind     string
		where    string
	}
	cases := []planted_{
		{
			name: "dicom header",
			contents: packet.Contents{Instances: list(
				packet.Instance{Body: io.NopCloser(bytes.NewReader(clean)), Size: int64(len(clean)), Report: rep},
				packet.Instance{Body: io.NopCloser(bytes.NewReader(planted)), Size: -1, Report: rep},
			), Identifiers: studyIdentifiers},
			path: "DICOM/P0000002/S0000001/SE000001/I0000001", kind: packet.KindID, where: "(0010,0020)",
		},
		{
			name:     "bundle",
			contents: packet.Contents{Bundle: bundle, BundleReport: &fhirReport, Identifiers: packet.Identifiers{Phones: []string{"555-866-2259"}}},
			path:     packet.BundlePath, kind: packet.KindPhone, where: "byte ",
		},
		{
			name: "question",
			contents: packet.Contents{Case: packet.Case{ID: "c1", Question: "Mr Hoeger asks whether to operate"},
				Identifiers: packet.Identifiers{Names: []string{"Buster Hoeger"}}},
			path: packet.SummaryPath, kind: packet.KindName, where: "byte ",
		},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			opts := k.options()
			opts.Deid.Source = nil
			_, res := build(t, c.contents, opts)
			found := false
			for _, h := range res.Hits {
				found = found || h.Path == c.path && h.Kind == c.kind && strings.HasPrefix(h.Where, c.where)
			}
			if !found {
				t.Fatalf("hits %+v, want %s in %s at %s", res.Hits, c.kind, c.path, c.where)
			}
			if res.Receipt.ResidualScan.Clean || res.Manifest.Deidentification.ResidualScan != packet.ScanHits {
				t.Error("the receipt and manifest say clean")
			}
			for _, h := range res.Hits {
				if strings.Contains(h.Where, "MRN") || strings.Contains(h.Where, "555") {
					t.Errorf("hit %+v holds the value", h)
				}
			}

			// With FailOnResidual the build fails, and what was written
			// does not decrypt to the end.
			c.contents.Instances = reset(c.contents.Instances, clean, planted, rep)
			opts.FailOnResidual = true
			var out bytes.Buffer
			_, err := packet.Build(context.Background(), &out, c.contents, opts)
			if !errors.Is(err, packet.ErrResidualIdentifiers) {
				t.Fatalf("Build: %v, want ErrResidualIdentifiers", err)
			}
			dr, err := age.Decrypt(bytes.NewReader(out.Bytes()), k.id)
			if err != nil {
				t.Fatal(err)
			}
			plain, err := io.ReadAll(dr)
			if err == nil {
				t.Error("the partial output decrypted to the end")
			}
			if bytes.Contains(plain, []byte("MRN-00012345")) || bytes.Contains(plain, []byte("555-866-2259")) || bytes.Contains(plain, []byte("Hoeger")) {
				t.Error("the partial output holds the planted identifier")
			}
		})
	}
}

func list(insts ...packet.Instance) packet.Instances {
	return packet.InstancesFunc(func(ctx context.Context) (packet.Instance, error) {
		if len(insts) == 0 {
			return packet.Instance{}, io.EOF
		}
		i := insts[0]
		insts = insts[1:]
		return i, nil
	})
}

// reset gives the dicom header case fresh bodies for its second build.
func reset(src packet.Instances, clean, planted []byte, rep *dicom.Report) packet.Instances {
	if src == nil {
		return nil
	}
	return list(
		packet.Instance{Body: io.NopCloser(bytes.NewReader(clean)), Size: int64(len(clean)), Report: rep},
		packet.Instance{Body: io.NopCloser(bytes.NewReader(planted)), Size: -1, Report: rep},
	)
}

var fhirReport = fhir.DeidReport{Profile: "shifted"}

func mustDICOMProfile(t testing.TB) deid.Profile {
	p, err := deid.ParseDICOMProfile("basic,retain-long-modified-dates")
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func newFHIRDeidentifier(k keys, key string) (*fhir.Deidentifier, error) {
	return fhir.NewDeidentifier(fhir.DeidOptions{
		Profile: deid.Profile{Kind: deid.FHIR, Name: deid.Shifted}, Source: k.src,
		PatientKey: func(fhir.DeidPatient) (string, error) { return key, nil },
	})
}

func fmtLen(s string, n int) string { return s + strings.Repeat(" ", n-len(s)) }

func TestBuildOptions(t *testing.T) {
	k := newKeys(t)
	ctx := context.Background()
	ct := testdata(t, "dicom/modality/ct/CT_small.dcm")
	cases := []struct {
		name string
		c    packet.Contents
		opts func(*packet.Options)
		want string
	}{
		{"no recipient", packet.Contents{}, func(o *packet.Options) { o.Recipients = nil }, "no recipient"},
		{"no signing key", packet.Contents{}, func(o *packet.Options) { o.SigningKey = minisign.PrivateKey{} }, "no signing key"},
		{"original bundle without source", packet.Contents{Bundle: []byte(`{"resourceType":"Bundle"}`)}, func(o *packet.Options) { o.Deid.Source = nil }, "no Source"},
		{"original instance without source", packet.Contents{Instances: packet.Files(ct)}, func(o *packet.Options) { o.Deid.Source = nil }, "no Source"},
		{"no patient key", packet.Contents{}, func(o *packet.Options) { o.Deid.PatientKey = "" }, "patient key"},
		{"missing file", packet.Contents{Instances: packet.Files("/nonexistent.dcm")}, nil, "no such file"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			opts := k.options()
			if c.opts != nil {
				c.opts(&opts)
			}
			_, err := packet.Build(ctx, io.Discard, c.c, opts)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("Build: %v, want %q", err, c.want)
			}
		})
	}

	t.Run("canceled", func(t *testing.T) {
		ctx, cancel := context.WithCancel(ctx)
		cancel()
		_, err := packet.Build(ctx, io.Discard, packet.Contents{Instances: packet.Files(ct)}, k.options())
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("Build: %v, want context.Canceled", err)
		}
	})

	t.Run("source fails midway", func(t *testing.T) {
		before := runtime.NumGoroutine()
		files := packet.Files(ct, ct, ct)
		n := 0
		src := packet.InstancesFunc(func(ctx context.Context) (packet.Instance, error) {
			if n++; n == 3 {
				return packet.Instance{}, errors.New("store unavailable")
			}
			return files.Next(ctx)
		})
		var out bytes.Buffer
		_, err := packet.Build(ctx, &out, packet.Contents{Bundle: readFile(t, testdata(t, busterBundle)), Instances: src}, k.options())
		if err == nil || !strings.Contains(err.Error(), "store unavailable") {
			t.Fatalf("Build: %v", err)
		}
		// Nothing keeps running after Build returns.
		deadline := time.Now().Add(2 * time.Second)
		for runtime.NumGoroutine() > before && time.Now().Before(deadline) {
			time.Sleep(10 * time.Millisecond)
		}
		if g := runtime.NumGoroutine(); g > before {
			t.Errorf("%d goroutines after Build, %d before", g, before)
		}
		// What was written does not decrypt to the end.
		dr, err := age.Decrypt(&out, k.id)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := io.ReadAll(dr); err == nil {
			t.Error("a failed build decrypts to the end")
		}
	})

	t.Run("unreadable instance withheld", func(t *testing.T) {
		_, res := build(t, packet.Contents{Instances: packet.Files(ct, testdata(t, "dicom/invalid/no_meta.dcm"))}, k.options())
		if len(res.Manifest.Withheld) != 1 || !strings.HasPrefix(res.Manifest.Withheld[0].Reason, "cannot be read") {
			t.Errorf("withheld: %+v", res.Manifest.Withheld)
		}
	})

	t.Run("de-identified file read in place", func(t *testing.T) {
		data, rep := deidentified(t, k, ct)
		file := filepath.Join(t.TempDir(), "i.dcm")
		if err := os.WriteFile(file, data, 0o600); err != nil {
			t.Fatal(err)
		}
		f, err := os.Open(file)
		if err != nil {
			t.Fatal(err)
		}
		opts := k.options()
		opts.Deid.Source = nil
		opts.MemorySpool = 1 << 10 // the file is larger: read where it is
		enc, res := build(t, packet.Contents{Instances: list(packet.Instance{Body: f, Size: int64(len(data)), Report: rep})}, opts)
		sum := sha256.Sum256(data)
		var got *packet.File
		for i := range res.Manifest.Files {
			if strings.HasPrefix(res.Manifest.Files[i].Path, "DICOM/") {
				got = &res.Manifest.Files[i]
			}
		}
		if got == nil || got.SHA256 != hex.EncodeToString(sum[:]) || got.Size != int64(len(data)) {
			t.Fatalf("manifest entry %+v", got)
		}
		if _, err := f.Stat(); err == nil {
			t.Error("Build did not close the instance's file")
		}
		r, _ := packet.Open(bytes.NewReader(enc), k.id, k.pub)
		if _, err := r.Verify(ctx); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("keep burned-in and spool to disk", func(t *testing.T) {
		opts := k.options()
		opts.Deid.KeepBurnedIn = true
		opts.MemorySpool = 1 << 10
		opts.TempDir = t.TempDir()
		opts.ScanPixelData = true
		enc, res := build(t, packet.Contents{Instances: packet.Files(testdata(t, "dicom/modality/us/OBXXXX1A_rle_2frame.dcm"), ct)}, opts)
		if len(res.Manifest.Withheld) != 0 || res.Receipt.DICOM.Instances != 2 || !res.Receipt.ResidualScan.PixelData {
			t.Errorf("withheld %+v, receipt %+v", res.Manifest.Withheld, res.Receipt.DICOM)
		}
		if ents, _ := os.ReadDir(opts.TempDir); len(ents) != 0 {
			t.Errorf("%d spool files left", len(ents))
		}
		r, err := packet.Open(bytes.NewReader(enc), k.id, k.pub)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := r.Verify(ctx); err != nil {
			t.Fatal(err)
		}
	})
}
