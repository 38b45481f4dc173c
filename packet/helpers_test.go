package packet_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"

	"aead.dev/minisign"
	"filippo.io/age"

	"github.com/consilium/consilium/deid"
	"github.com/consilium/consilium/dicom"
	"github.com/consilium/consilium/internal/testenv"
	"github.com/consilium/consilium/packet"
)

// sharedDir finds ../shared next to the directory holding go.mod.
func sharedDir(t testing.TB) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			break
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatal("go.mod not found")
		}
		dir = parent
	}
	shared := filepath.Join(dir, "..", "shared")
	if _, err := os.Stat(filepath.Join(shared, "testdata", "dicom")); err != nil {
		testenv.Missing(t, "../shared/testdata", "the shared test corpus must sit next to the repository")
	}
	return shared
}

func testdata(t testing.TB, rel string) string {
	return filepath.Join(sharedDir(t), "testdata", filepath.FromSlash(rel))
}

// busterBundle is the Synthea patient the tests build packets for.
const busterBundle = "fhir/synthea/Buster_Hoeger_ad2e3fc5-2b5d-4cb9-8d03-9ea0f4ac8423.json"

// genStudy generates a CT series of n slices with the shared generator
// and returns its files, sorted.
func genStudy(t testing.TB, n int) []string {
	t.Helper()
	gen := filepath.Join(sharedDir(t), "tools", "gen_dicom.py")
	py := "/usr/bin/python3"
	if _, err := os.Stat(gen); err != nil {
		testenv.Missing(t, gen, "the shared tools must sit next to the repository")
	}
	if err := exec.Command(py, "-c", "import pydicom, numpy").Run(); err != nil {
		testenv.Missing(t, "pydicom and numpy for /usr/bin/python3", "apt-get install python3-pydicom python3-numpy")
	}
	dir := t.TempDir()
	if out, err := exec.Command(py, gen, dir, "--slices", fmt.Sprint(n), "--skip-multiframe").CombinedOutput(); err != nil {
		t.Fatalf("gen_dicom.py: %v\n%s", err, out)
	}
	files, err := filepath.Glob(filepath.Join(dir, "ct", "*.dcm"))
	if err != nil || len(files) != n {
		t.Fatalf("generated %d files (%v), want %d", len(files), err, n)
	}
	sort.Strings(files)
	return files
}

// keys are a specialist's age identity and the gateway's signing key.
type keys struct {
	id  *age.X25519Identity
	pub minisign.PublicKey
	key minisign.PrivateKey
	src deid.Source
}

var testSecret = bytes.Repeat([]byte{0x42}, 32)

func newKeys(t testing.TB) keys {
	t.Helper()
	id, err := age.GenerateX25519Identity()
	if err != nil {
		t.Fatal(err)
	}
	pub, key, err := minisign.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	src, err := deid.NewKeyed(testSecret, deid.KeyedOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return keys{id: id, pub: pub, key: key, src: src}
}

func (k keys) options() packet.Options {
	return packet.Options{
		Recipients: []age.Recipient{k.id.Recipient()},
		SigningKey: k.key,
		Deid:       packet.Deidentification{Source: k.src, PatientKey: "st-marys|patient-1"},
	}
}

func build(t testing.TB, c packet.Contents, opts packet.Options) ([]byte, *packet.Result) {
	t.Helper()
	var out bytes.Buffer
	res, err := packet.Build(context.Background(), &out, c, opts)
	if err != nil {
		t.Fatalf("Build: %v", err)
	}
	if res.Size != int64(out.Len()) {
		t.Fatalf("Result.Size %d, wrote %d", res.Size, out.Len())
	}
	return out.Bytes(), res
}

func readFile(t testing.TB, p string) []byte {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// originalIdentity lists the identifying values of Buster Hoeger (the
// Synthea bundle) and of the generated study's patient, as an independent
// check spells them: every name part, identifier, phone, address line and
// the birth dates in FHIR and DICOM form.
var originalIdentity = []string{
	// Synthea: Patient Buster Hoeger.
	"Buster", "Hoeger", "Faith Tremblay", "ad2e3fc5-2b5d-4cb9-8d03-9ea0f4ac8423", "e4531916-b162-4f4b-90c2-ce37e132b8d4",
	"999-59-2277", "S99935998", "X66226025X", "555-866-2259", "535 Howe Neck Apt 38", "1988-03-16", "19880316",
	// gen_dicom.py: DOE^JANE^Q, the patient of the generated study.
	"DOE^JANE", "JANE", "SMITH^JANE", "MRN-00012345", "+33 123456789", "123456789", "12 Rue de la Paix",
	"19610423", "1961-04-23", "ACC-2024-0031177",
}

// studyIdentifiers is what a caller passes for the generated study.
var studyIdentifiers = packet.Identifiers{
	Names:      []string{"DOE^JANE^Q", "SMITH^JANE"},
	IDs:        []string{"MRN-00012345", "ACC-2024-0031177"},
	Phones:     []string{"+33 123456789"},
	Addresses:  []string{"12 Rue de la Paix, 75002 Paris"},
	BirthDates: []string{"19610423"},
}

// leaks searches every unpacked file for the original identity, outside
// DICOM Pixel Data (headers, File Meta and preamble included), case
// insensitively, as a word. It returns "file: value" for each find.
func leaks(t *testing.T, dir string) []string {
	t.Helper()
	var res []*regexp.Regexp
	for _, v := range originalIdentity {
		res = append(res, regexp.MustCompile(`(?i)(^|[^a-z0-9])`+regexp.QuoteMeta(v)+`($|[^a-z0-9])`))
	}
	var found []string
	err := filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b := readFile(t, p)
		rel, _ := filepath.Rel(dir, p)
		if strings.HasPrefix(filepath.ToSlash(rel), "DICOM/") {
			if start, end, ok := pixelRange(t, b); ok {
				b = append(b[:start:start], b[end:]...)
			}
		}
		for i, re := range res {
			if re.Match(b) {
				found = append(found, rel+": "+originalIdentity[i])
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return found
}

// pixelRange returns where the Pixel Data value sits in a Part 10 file.
func pixelRange(t testing.TB, file []byte) (start, end int64, ok bool) {
	t.Helper()
	rd, err := dicom.NewReader(bytes.NewReader(file), dicom.ReaderOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for {
		e, err := rd.Next()
		if err == io.EOF {
			return 0, 0, false
		}
		if err != nil {
			t.Fatal(err)
		}
		if e.Tag == dicom.NewTag(0x7FE0, 0x0010) && rd.PixelData() != nil {
			if rd.TransferSyntax().Deflated {
				return 0, 0, false
			}
			start = rd.Offset()
			if _, err := io.Copy(io.Discard, rd.PixelData()); err != nil {
				t.Fatal(err)
			}
			return start, rd.Offset(), true
		}
	}
}
