package e2e

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io/fs"
	"math/big"
	"mime/multipart"
	"net/http"
	"net/textproto"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"filippo.io/age"

	"github.com/consilium/consilium/audit"
	"github.com/consilium/consilium/certs"
	"github.com/consilium/consilium/gateway"
	"github.com/consilium/consilium/gateway/gatewaytest"
	"github.com/consilium/consilium/internal/devenv"
	"github.com/consilium/consilium/internal/miniotest"
	"github.com/consilium/consilium/storage"
)

func TestMain(m *testing.M) { os.Exit(miniotest.Main(m)) }

// The patient of the journey: an adult with two names (official and
// maiden), a mother's maiden name, MRN, SSN, driver's licence and passport.
const syntheaBundle = "Liz_Conn_27c911c6-f045-4ffa-af5d-6eba57ac94b2.json"

// seriesSize is the number of instances of the DICOM series pushed.
const seriesSize = 6

// TestSecondOpinionJourney is issue 7's end-to-end test: st-marys pushes
// a Synthea patient's records, a Consent and a CT series; opens a case;
// cm-ana assigns dr-okafor and dr-garcia and releases; each specialist
// pulls its packet, which opens with Debian's age, verifies with
// minisign, matches every hash and holds nothing that identifies the
// patient; both send opinions that st-marys reads about its real patient.
// On the way: city-general never sees the case, a specialist not assigned
// is refused, revoking the consent refuses the packet at once (the stored
// copy too), and the audit trail on MinIO holds every step and verifies.
func TestSecondOpinionJourney(t *testing.T) {
	tl := lookTools(t)
	testdata := sharedTestdata(t)
	ctx := context.Background()

	// The gateway, with its data and its audit trail on MinIO (the trail
	// in a bucket of its own, under object lock).
	srv := miniotest.Start(t)
	dataStore, err := storage.NewMinIO(ctx, storage.MinIOConfig{
		Endpoint: srv.Endpoint, AccessKey: srv.AccessKey, SecretKey: srv.SecretKey, Bucket: srv.Bucket, UseTLS: srv.UseTLS,
	})
	if err != nil {
		t.Fatal(err)
	}
	auditSrv := miniotest.Start(t)
	auditStore, err := storage.NewMinIO(ctx, storage.MinIOConfig{
		Endpoint: auditSrv.Endpoint, AccessKey: auditSrv.AccessKey, SecretKey: auditSrv.SecretKey,
		Bucket: auditSrv.Bucket, UseTLS: auditSrv.UseTLS, ObjectLock: true,
	})
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	layout, _, err := devenv.Ensure(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	kr, err := storage.LoadKeyring(layout.KeyringFile())
	if err != nil {
		t.Fatal(err)
	}
	auditLog, err := audit.Open(ctx, audit.Config{Source: "e2e", RetentionMode: audit.RetentionGovernance, RetentionDays: 1},
		audit.Options{Store: auditStore, Signer: gatewaytest.SigningKey(t, layout), Logger: gatewaytest.Logger()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { auditLog.Close() }) // registered first, so it runs after the gateway has stopped
	g := gatewaytest.Start(t, storage.NewEncrypted(dataStore, kr), gatewaytest.Config{
		Dir: dir, Options: gateway.Options{Audit: auditLog, Names: kr.NameHash, PacketStore: dataStore},
	})
	as := func(id string) principal { return principal{id: id, c: g.Client(t, id), base: g.URL} }
	hospital, other, cm, co := as("st-marys"), as("city-general"), as("cm-ana"), as("co-lee")
	specialists := []principal{as("dr-okafor"), as("dr-garcia")}

	// st-marys pushes the patient's records.
	bundleFile := filepath.Join(testdata, "fhir", "synthea", syntheaBundle)
	id := readIdentity(t, bundleFile)
	bundle, err := os.ReadFile(bundleFile)
	if err != nil {
		t.Fatal(err)
	}
	patient := pushBundle(t, hospital, bundle)
	id.add(patient)
	patientKey := kr.NameHash("patient", "st-marys|"+patient)

	// ... a Consent permitting second opinions from the US and Spain ...
	consentPath := "/fhir/Consent/e2e-consent"
	hospital.do(t, http.MethodPut, consentPath, "application/fhir+json", bytes.NewReader(consent("e2e-consent", patient, "active"))).
		want(t, http.StatusCreated)

	// ... and a CT series of the same patient.
	series := writeSeries(t, tl, testdata, &id)
	body, ctype := gatewaytest.STOWBody(series.files)
	stow := hospital.do(t, http.MethodPost, "/dicomweb/studies", ctype, body).want(t, http.StatusOK)
	if got := dicomJSONStrings(t, stow.body, "00081199", "00081155"); len(got) != seriesSize {
		t.Fatalf("STOW-RS stored %d instances, want %d: %s", len(got), seriesSize, stow.body)
	}
	id.dedupeTerms()
	scannerFinds(t, tl, id, bundle, series.files[0])

	// The specialists register their age recipients (the embedded
	// default has done it already; registering again is harmless), and
	// none may register another's.
	for _, sp := range specialists {
		var reg struct {
			ID, Recipient string
		}
		sp.send(t, http.MethodPut, "/principals/"+sp.id+"/recipient", "", map[string]string{"recipient": recipientOf(t, layout.AgeIdentity(sp.id))}).
			want(t, http.StatusOK).decode(t, &reg)
		if reg.ID != sp.id || reg.Recipient != recipientOf(t, layout.AgeIdentity(sp.id)) {
			t.Fatalf("registration of %s: %+v", sp.id, reg)
		}
	}
	specialists[0].send(t, http.MethodPut, "/principals/dr-garcia/recipient", "", map[string]string{"recipient": recipientOf(t, layout.AgeIdentity("dr-okafor"))}).
		wantRefused(t, http.StatusForbidden)

	// st-marys opens the case.
	var c caseView
	created := hospital.send(t, http.MethodPost, "/cases", "", map[string]any{
		"patient": "Patient/" + patient, "question": "Is the lesion in the left lower lobe malignant? Is a biopsy needed?",
		"specialty": "oncology", "languages": []string{"en"}, "studies": []string{series.study},
		"deadline": time.Now().Add(72 * time.Hour).UTC().Format(time.RFC3339),
	}).want(t, http.StatusCreated)
	created.decode(t, &c)
	if c.Status != "draft" || c.Patient != "Patient/"+patient || !slices.Equal(c.Studies, []string{series.study}) ||
		created.header.Get("Location") != "/cases/"+c.ID || !regexp.MustCompile(`^c-[0-9a-f]{16}$`).MatchString(c.ID) {
		t.Fatalf("created case: %s %s", created.header.Get("Location"), created.body)
	}
	cu := "/cases/" + c.ID

	// cm-ana finds the specialists, assigns both and releases.
	var dirList struct {
		Specialists []struct {
			ID, Recipient string
		} `json:"specialists"`
	}
	cm.get(t, "/specialists?specialty=oncology").want(t, http.StatusOK).decode(t, &dirList)
	if len(dirList.Specialists) == 0 || dirList.Specialists[0].ID != "dr-okafor" {
		t.Fatalf("oncologists: %+v", dirList)
	}
	cm.send(t, http.MethodPost, cu+"/assign", "", map[string]any{"specialists": []string{"dr-okafor", "dr-garcia"}}).
		want(t, http.StatusOK).decode(t, &c)
	if c.Status != "assigned" || !slices.Equal(c.Assigned, []string{"dr-garcia", "dr-okafor"}) {
		t.Fatalf("assigned case: %+v", c)
	}
	specialists[0].get(t, cu+"/packet").wantRefused(t, http.StatusConflict) // not released yet
	cm.send(t, http.MethodPost, cu+"/release", "", nil).want(t, http.StatusOK).decode(t, &c)
	if c.Status != "released" || !slices.Equal(c.Released, []string{"dr-garcia", "dr-okafor"}) {
		t.Fatalf("released case: %+v", c)
	}

	// city-general cannot see the case at all.
	other.get(t, cu).wantRefused(t, http.StatusNotFound)
	other.get(t, cu+"/packet").wantRefused(t, http.StatusNotFound)
	other.get(t, cu+"/opinions").wantRefused(t, http.StatusNotFound)
	if ids := listCases(t, other); slices.Contains(ids, c.ID) {
		t.Errorf("city-general lists st-marys's case: %v", ids)
	}

	// A specialist who is not assigned (issued here: an oncologist in
	// the US, registered in the directory) gets 403 on the packet.
	lind := unassignedSpecialist(t, g)
	lind.send(t, http.MethodPut, "/principals/"+lind.id+"/recipient", "", map[string]string{"recipient": newRecipient(t)}).want(t, http.StatusOK)
	lind.get(t, cu+"/packet").wantRefused(t, http.StatusForbidden)
	lind.get(t, cu).wantRefused(t, http.StatusNotFound)
	if ids := listCases(t, lind); slices.Contains(ids, c.ID) {
		t.Errorf("an unassigned specialist lists the case: %v", ids)
	}

	// Each specialist pulls its packet and checks it with the standard
	// tools; it holds nothing that identifies the patient.
	pulled := map[string]*openedPacket{}
	for _, sp := range specialists {
		t.Run("packet of "+sp.id, func(t *testing.T) {
			// What the specialist sees of the case: not the patient, not the
			// real study, not the other specialist.
			view := sp.get(t, cu).want(t, http.StatusOK)
			var v caseView
			view.decode(t, &v)
			if v.Patient != "" || len(v.Studies) != 0 || !slices.Equal(v.Assigned, []string{sp.id}) ||
				bytes.Contains(view.body, []byte(patient)) || bytes.Contains(view.body, []byte(series.study)) {
				t.Errorf("the case as %s sees it: %s", sp.id, view.body)
			}
			if ids := listCases(t, sp); !slices.Contains(ids, c.ID) {
				t.Errorf("%s does not list its case: %v", sp.id, ids)
			}
			first := sp.get(t, cu+"/packet").want(t, http.StatusOK)
			if first.header.Get("X-Consilium-Packet-Status") != "building" ||
				first.header.Get("Content-Disposition") != `attachment; filename="`+c.ID+`.packet"` ||
				first.header.Get("Content-Type") != "application/octet-stream" {
				t.Errorf("first download's headers: %v", first.header)
			}
			if sp.id == "dr-okafor" {
				// A second download is the stored copy, byte for byte.
				again := sp.get(t, cu+"/packet").want(t, http.StatusOK)
				if again.header.Get("X-Consilium-Packet-Status") != "stored" || !bytes.Equal(again.body, first.body) ||
					again.header.Get("Content-Length") != fmt.Sprint(len(first.body)) || again.header.Get("ETag") != first.header.Get("ETag") {
					t.Errorf("second download: %d bytes (first %d), %v", len(again.body), len(first.body), again.header)
				}
			}
			p := openPacket(t, tl, layout, sp.id, first.body)
			checkPacket(t, tl, p, c.ID, sp.id, patient, id, series)
			pulled[sp.id] = p
		})
	}
	if t.Failed() {
		t.FailNow()
	}
	pseudonym := pulled["dr-okafor"].manifest.Case.Patient
	if got := pulled["dr-garcia"].manifest.Case.Patient; got != pseudonym {
		t.Errorf("the two packets name the patient %q and %q", pseudonym, got)
	}

	// Both send opinions about the pseudonymous patient: dr-okafor as FHIR
	// JSON naming the packet's study, dr-garcia as multipart with a PDF.
	pdf := readPDF(t, testdata)
	okafor, garcia := specialists[0], specialists[1]
	var op struct{ ID, Case, Specialist string }
	okafor.send(t, http.MethodPost, cu+"/opinions", "application/fhir+json",
		report(pseudonym, "Benign hamartoma; no biopsy needed.", pulled["dr-okafor"].studyUID)).
		want(t, http.StatusCreated).decode(t, &op)
	if op.Case != c.ID || op.Specialist != "dr-okafor" || op.ID == "" {
		t.Errorf("dr-okafor's opinion: %+v", op)
	}
	body, ctype = opinionForm(t, report(pseudonym, "Agree: benign, follow-up CT in 12 months.", ""), pdf)
	garcia.do(t, http.MethodPost, cu+"/opinions", ctype, body).want(t, http.StatusCreated).decode(t, &op)
	if op.Case != c.ID || op.Specialist != "dr-garcia" {
		t.Errorf("dr-garcia's opinion: %+v", op)
	}

	// st-marys reads them, about its real patient and study.
	checkOpinions(t, hospital.get(t, cu+"/opinions").want(t, http.StatusOK), patient, series.study, pdf)
	hospital.get(t, cu).want(t, http.StatusOK).decode(t, &c)
	if c.Status != "opinion-received" || c.Opinions != 2 {
		t.Errorf("the case after the opinions: %+v", c)
	}
	other.get(t, cu+"/opinions").wantRefused(t, http.StatusNotFound)

	// Revoking the consent refuses every packet at once, stored copies
	// included.
	hospital.do(t, http.MethodPut, consentPath, "application/fhir+json", bytes.NewReader(consent("e2e-consent", patient, "inactive"))).
		want(t, http.StatusOK)
	for _, sp := range specialists {
		sp.get(t, cu+"/packet").wantRefused(t, http.StatusForbidden)
	}

	// The audit trail holds every step and verifies.
	checkAudit(t, co, c.ID, patientKey, id)
	var rep audit.Report
	co.get(t, "/audit/verify").want(t, http.StatusOK).decode(t, &rep)
	if !rep.OK || rep.Entries == 0 || !rep.VersionsChecked {
		t.Errorf("audit verify: %+v", rep)
	}

	// No object name in either bucket carries the patient's identity.
	for _, st := range []storage.Store{dataStore, auditStore} {
		n := 0
		for info, err := range st.List(ctx, "") {
			if err != nil {
				t.Fatal(err)
			}
			n++
			for _, h := range id.scan(info.Name, "object name", []byte(info.Name), -1) {
				t.Errorf("an object name identifies the patient: %v", h)
			}
		}
		if n == 0 {
			t.Error("a bucket is empty")
		}
	}
}

// caseView is the part of a case view the test reads.
type caseView struct {
	ID       string   `json:"id"`
	Org      string   `json:"org"`
	Patient  string   `json:"patient"`
	Studies  []string `json:"studies"`
	Status   string   `json:"status"`
	Assigned []string `json:"assigned"`
	Released []string `json:"released"`
	Opinions int      `json:"opinions"`
}

func listCases(t *testing.T, p principal) []string {
	t.Helper()
	var list struct {
		Cases []caseView `json:"cases"`
	}
	p.get(t, "/cases").want(t, http.StatusOK).decode(t, &list)
	var ids []string
	for _, c := range list.Cases {
		ids = append(ids, c.ID)
	}
	return ids
}

// pushBundle posts a transaction bundle and returns the server's id of
// its Patient.
func pushBundle(t *testing.T, hospital principal, bundle []byte) string {
	t.Helper()
	var in struct {
		Entry []struct {
			Resource struct {
				ResourceType string `json:"resourceType"`
			} `json:"resource"`
		} `json:"entry"`
	}
	if err := json.Unmarshal(bundle, &in); err != nil {
		t.Fatal(err)
	}
	var out struct {
		Type  string `json:"type"`
		Entry []struct {
			Response struct {
				Status, Location string
			} `json:"response"`
		} `json:"entry"`
	}
	hospital.do(t, http.MethodPost, "/fhir", "application/fhir+json", bytes.NewReader(bundle)).want(t, http.StatusOK).decode(t, &out)
	if out.Type != "transaction-response" || len(out.Entry) != len(in.Entry) {
		t.Fatalf("transaction: %s with %d entries for %d", out.Type, len(out.Entry), len(in.Entry))
	}
	for i, e := range in.Entry {
		if e.Resource.ResourceType == "Patient" {
			parts := strings.Split(out.Entry[i].Response.Location, "/")
			if len(parts) < 2 || parts[0] != "Patient" || parts[1] == "" {
				t.Fatalf("the Patient's location: %q", out.Entry[i].Response.Location)
			}
			return parts[1]
		}
	}
	t.Fatal("no Patient in the bundle")
	return ""
}

// consent is a Consent of patient permitting second-opinion sharing with
// recipients in the US and Spain (policy/builtin/README.md).
func consent(id, patient, status string) []byte {
	b, _ := json.Marshal(map[string]any{
		"resourceType": "Consent", "id": id, "status": status,
		"scope":      map[string]any{"coding": []any{map[string]any{"system": "http://terminology.hl7.org/CodeSystem/consentscope", "code": "patient-privacy"}}},
		"category":   []any{map[string]any{"coding": []any{map[string]any{"system": "http://loinc.org", "code": "59284-0"}}}},
		"patient":    map[string]any{"reference": "Patient/" + patient},
		"dateTime":   "2026-01-15T10:00:00Z",
		"policyRule": map[string]any{"coding": []any{map[string]any{"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "OPTIN"}}},
		"provision": map[string]any{
			"type":    "permit",
			"period":  map[string]any{"start": "2020-01-01", "end": "2099-12-31"},
			"purpose": []any{map[string]any{"system": "https://consilium.health/fhir/CodeSystem/purpose", "code": "second-opinion"}},
			"extension": []any{
				map[string]any{"url": "https://consilium.health/fhir/StructureDefinition/recipient-country", "valueCode": "US"},
				map[string]any{"url": "https://consilium.health/fhir/StructureDefinition/recipient-country", "valueCode": "ES"},
			},
		},
	})
	return b
}

// series is the DICOM series the hospital pushes.
type series struct {
	files                []string
	study, seriesUID     string
	sops                 []string
	patientName, address string
}

// newUID returns a random "2.25." UID.
func newUID(t *testing.T) string {
	t.Helper()
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 128))
	if err != nil {
		t.Fatal(err)
	}
	return "2.25." + n.String()
}

// writeSeries writes a CT series of the patient (testdata/make_series.py)
// and adds its UIDs and DICOM renderings of the identity to id.
func writeSeries(t *testing.T, tl tools, testdata string, id *identity) series {
	t.Helper()
	s := series{study: newUID(t), seriesUID: newUID(t), patientName: id.dicomName(), address: id.Address}
	for range seriesSize {
		s.sops = append(s.sops, newUID(t))
	}
	out := t.TempDir()
	spec, err := json.Marshal(map[string]any{
		"base": filepath.Join(testdata, "dicom", "modality", "ct", "CT_small.dcm"), "out": out, "count": seriesSize,
		"study_uid": s.study, "series_uid": s.seriesUID, "sop_uids": s.sops,
		"patient_name": s.patientName, "patient_id": id.MRN, "issuer": id.Issuer, "birth_date": id.BirthDate, "sex": id.Sex,
		"other_ids": id.OtherIDs, "other_names": id.Maiden + "^" + id.Given, "mother_birth_name": id.Mother,
		"address": s.address, "phone": id.Phone,
		"comments": fmt.Sprintf("Referred by her GP; %s %s (née %s) prefers morning appointments.", id.Given, id.Family, id.Maiden),
	})
	if err != nil {
		t.Fatal(err)
	}
	run(t, bytes.NewReader(spec), tl.python, filepath.Join("testdata", "make_series.py"))
	files, err := filepath.Glob(filepath.Join(out, "*.dcm"))
	if err != nil || len(files) != seriesSize {
		t.Fatalf("make_series.py wrote %d files: %v", len(files), err)
	}
	s.files = files
	id.add(s.study, s.seriesUID, s.patientName, id.Family+"^"+id.Given)
	id.add(s.sops...)
	return s
}

func recipientOf(t *testing.T, identityFile string) string {
	t.Helper()
	data, err := os.ReadFile(identityFile)
	if err != nil {
		t.Fatal(err)
	}
	ids, err := age.ParseIdentities(bytes.NewReader(data))
	if err != nil || len(ids) != 1 {
		t.Fatalf("%s: %v", identityFile, err)
	}
	return ids[0].(*age.X25519Identity).Recipient().String()
}

func newRecipient(t *testing.T) string {
	t.Helper()
	k, err := age.GenerateX25519Identity()
	if err != nil {
		t.Fatal(err)
	}
	return k.Recipient().String()
}

// unassignedSpecialist issues a certificate for an oncologist in the US
// who is on no case.
func unassignedSpecialist(t *testing.T, g *gatewaytest.Gateway) principal {
	t.Helper()
	p := certs.Principal{ID: "dr-lind", Org: "dr-lind", Role: certs.RoleSpecialist, Country: "US", Specialty: "oncology", Languages: []string{"en"}}
	issued, err := g.CA.IssueClient(p, certs.IssueOptions{})
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	cert, key := filepath.Join(dir, "dr-lind.pem"), filepath.Join(dir, "dr-lind.key")
	if err := issued.WriteFiles(cert, key); err != nil {
		t.Fatal(err)
	}
	return principal{id: p.ID, c: g.ClientWithFiles(t, cert, key), base: g.URL}
}

// manifest is the part of manifest.json the test reads.
type manifest struct {
	Format string `json:"format"`
	Case   struct {
		ID, Patient, Question, Recipient string
	} `json:"case"`
	Files []struct {
		Path      string `json:"path"`
		Size      int64  `json:"size"`
		MediaType string `json:"mediaType"`
		SHA256    string `json:"sha256"`
	} `json:"files"`
	Withheld []struct {
		Kind, Reason string
	} `json:"withheld"`
}

// openedPacket is a packet decrypted and unpacked with the standard tools.
type openedPacket struct {
	dir      string // the unpacked files
	manifest manifest
	studyUID string // the study's UID in the packet
}

// openPacket decrypts a packet with age -d, unpacks it with tar and
// verifies its manifest with minisign -V, as a specialist without the
// consilium CLI does.
func openPacket(t *testing.T, tl tools, layout devenv.Layout, specialist string, data []byte) *openedPacket {
	t.Helper()
	work := t.TempDir()
	enc, plain := filepath.Join(work, "case.packet"), filepath.Join(work, "case.tar")
	if err := os.WriteFile(enc, data, 0o600); err != nil {
		t.Fatal(err)
	}
	run(t, nil, tl.age, "-d", "-i", layout.AgeIdentity(specialist), "-o", plain, enc)
	out := filepath.Join(work, "packet")
	if err := os.Mkdir(out, 0o700); err != nil {
		t.Fatal(err)
	}
	run(t, nil, tl.tar, "-xf", plain, "-C", out)
	mf := filepath.Join(out, "manifest.json")
	run(t, nil, tl.minisign, "-V", "-m", mf, "-p", layout.SigningPub())
	p := &openedPacket{dir: out}
	raw, err := os.ReadFile(mf)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(raw, &p.manifest); err != nil {
		t.Fatalf("manifest.json: %v", err)
	}

	// minisign must refuse a manifest changed by one byte, or the check
	// above proves nothing.
	bad := filepath.Join(work, "tampered.json")
	tampered := bytes.Replace(raw, []byte(p.manifest.Case.ID), []byte(strings.ToUpper(p.manifest.Case.ID)), 1)
	if err := os.WriteFile(bad, tampered, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := copyFile(mf+".minisig", bad+".minisig"); err != nil {
		t.Fatal(err)
	}
	if out, err := execQuiet(tl.minisign, "-V", "-m", bad, "-p", layout.SigningPub()); err == nil {
		t.Fatalf("minisign verifies a tampered manifest: %s", out)
	}
	// Another specialist's identity does not open the packet.
	for _, p := range devenv.Principals() {
		if p.Role == certs.RoleSpecialist && p.ID != specialist {
			if out, err := execQuiet(tl.age, "-d", "-i", layout.AgeIdentity(p.ID), "-o", filepath.Join(work, "other.tar"), enc); err == nil {
				t.Fatalf("%s's identity opens %s's packet: %s", p.ID, specialist, out)
			}
		}
	}
	return p
}

// checkPacket checks an unpacked packet: the manifest's case, every file
// listed with its size and SHA-256 and nothing else, the whole series
// there, one pseudonym for the patient across FHIR and DICOM, and no
// trace of the patient's identity in any file, DICOM headers included.
func checkPacket(t *testing.T, tl tools, p *openedPacket, caseID, specialist, patient string, id identity, s series) {
	t.Helper()
	m := p.manifest
	if m.Format != "consilium-packet/1" || m.Case.ID != caseID || m.Case.Recipient != specialist ||
		m.Case.Patient == "" || m.Case.Patient == patient {
		t.Errorf("manifest: format %q, case %+v", m.Format, m.Case)
	}
	listed := map[string]bool{}
	dicomFiles := 0
	for _, f := range m.Files {
		listed[f.Path] = true
		data, err := os.ReadFile(filepath.Join(p.dir, filepath.FromSlash(f.Path)))
		if err != nil {
			t.Errorf("%s is in the manifest but not in the packet: %v", f.Path, err)
			continue
		}
		sum := sha256.Sum256(data)
		if hex.EncodeToString(sum[:]) != f.SHA256 || int64(len(data)) != f.Size {
			t.Errorf("%s: %d bytes, SHA-256 %x; the manifest says %d bytes, %s", f.Path, len(data), sum, f.Size, f.SHA256)
		}
		if strings.HasPrefix(f.Path, "DICOM/") {
			dicomFiles++
		}
	}
	for _, want := range []string{"summary.html", "fhir/bundle.json", "DICOMDIR", "deid-receipt.json"} {
		if !listed[want] {
			t.Errorf("the manifest lists no %s", want)
		}
	}
	withheldImages := 0
	for _, w := range m.Withheld {
		if w.Kind == "dicom-instance" {
			withheldImages++
		}
	}
	if dicomFiles != seriesSize || withheldImages != 0 {
		t.Errorf("the packet holds %d of %d instances; withheld: %+v", dicomFiles, seriesSize, m.Withheld)
	}
	var files []string
	err := filepath.WalkDir(p.dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		rel, _ := filepath.Rel(p.dir, path)
		rel = filepath.ToSlash(rel)
		files = append(files, rel)
		if !listed[rel] && rel != "manifest.json" && rel != "manifest.json.minisig" {
			t.Errorf("%s is in the packet but not in the manifest", rel)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}

	// The bundle's Patient is the pseudonym.
	raw, err := os.ReadFile(filepath.Join(p.dir, "fhir", "bundle.json"))
	if err != nil {
		t.Fatal(err)
	}
	var b struct {
		Entry []struct {
			Resource struct{ ResourceType, ID string } `json:"resource"`
		} `json:"entry"`
	}
	if err := json.Unmarshal(raw, &b); err != nil {
		t.Fatalf("fhir/bundle.json: %v", err)
	}
	patients := 0
	for _, e := range b.Entry {
		if e.Resource.ResourceType == "Patient" {
			patients++
			if e.Resource.ID != m.Case.Patient {
				t.Errorf("the bundle's Patient is %q, the manifest's %q", e.Resource.ID, m.Case.Patient)
			}
		}
	}
	if patients != 1 || len(b.Entry) < 10 {
		t.Errorf("the bundle has %d entries, %d Patients", len(b.Entry), patients)
	}

	// Every file, scanned raw and, for DICOM, as dcmdump prints it.
	var hits []hit
	studies := map[string]bool{}
	for _, rel := range files {
		data, err := os.ReadFile(filepath.Join(p.dir, filepath.FromSlash(rel)))
		if err != nil {
			t.Fatal(err)
		}
		if !isDICOM(data) {
			hits = append(hits, id.scan(rel, "bytes", data, -1)...)
			continue
		}
		// Names are looked for in the header only: pixel values are binary.
		header := bytes.Index(data, []byte{0xe0, 0x7f, 0x10, 0x00})
		hits = append(hits, id.scan(rel, "bytes", data, header)...)
		dump := run(t, nil, tl.dcmdump, "-q", "+L", "+U8", filepath.Join(p.dir, filepath.FromSlash(rel)))
		hits = append(hits, id.scan(rel, "dcmdump", dump, -1)...)
		if rel == "DICOMDIR" {
			continue
		}
		if got := dumpValue(dump, "0010,0020"); got != m.Case.Patient {
			t.Errorf("%s: PatientID %q, the manifest's patient %q", rel, got, m.Case.Patient)
		}
		studies[dumpValue(dump, "0020,000d")] = true
	}
	for _, h := range hits {
		t.Errorf("the packet identifies the patient: %v", h)
	}
	if len(studies) != 1 {
		t.Fatalf("the instances carry %d study UIDs", len(studies))
	}
	for uid := range studies {
		if uid == "" || uid == s.study {
			t.Fatalf("the packet's study UID %q", uid)
		}
		p.studyUID = uid
	}
}

// scannerFinds checks the scan on the originals: it must find the
// patient's identity where it is, in the bundle and in the DICOM header
// (raw and as dcmdump prints it), or its silence on packets means nothing.
func scannerFinds(t *testing.T, tl tools, id identity, bundle []byte, dicomFile string) {
	t.Helper()
	found := func(hits []hit) map[string]bool {
		m := map[string]bool{}
		for _, h := range hits {
			m[h.term] = true
		}
		return m
	}
	inBundle := found(id.scan("bundle", "bytes", bundle, -1))
	for _, term := range append(slices.Clone(id.Names), id.MRN, id.Phone, id.BirthDate[:4]+"-"+id.BirthDate[4:6]+"-"+id.BirthDate[6:]) {
		if !inBundle[term] {
			t.Errorf("the scan does not find %q in the original bundle", term)
		}
	}
	data, err := os.ReadFile(dicomFile)
	if err != nil {
		t.Fatal(err)
	}
	header := bytes.Index(data, []byte{0xe0, 0x7f, 0x10, 0x00})
	inRaw := found(id.scan("dicom", "bytes", data, header))
	inDump := found(id.scan("dicom", "dcmdump", run(t, nil, tl.dcmdump, "-q", "+L", "+U8", dicomFile), -1))
	for _, term := range append(append(slices.Clone(id.Names), id.OtherIDs...), id.MRN, id.Phone, id.BirthDate, id.Address) {
		if !inRaw[term] || !inDump[term] {
			t.Errorf("the scan does not find %q in the original DICOM header (raw %v, dcmdump %v)", term, inRaw[term], inDump[term])
		}
	}
	if t.Failed() {
		t.FailNow()
	}
}

// isDICOM reports whether data is a DICOM Part 10 file.
func isDICOM(data []byte) bool { return len(data) > 132 && string(data[128:132]) == "DICM" }

// dumpValue returns the value of the first top-level attribute tag
// ("gggg,eeee", lower-case hex) in dcmdump's output.
func dumpValue(dump []byte, tag string) string {
	re := regexp.MustCompile(`(?m)^\(` + regexp.QuoteMeta(tag) + `\) [A-Z]{2} \[([^\]]*)\]`)
	m := re.FindSubmatch(dump)
	if m == nil {
		return ""
	}
	return string(m[1])
}

func copyFile(from, to string) error {
	data, err := os.ReadFile(from)
	if err != nil {
		return err
	}
	return os.WriteFile(to, data, 0o600)
}

// readPDF returns the PDF of the HL7 Binary example.
func readPDF(t *testing.T, testdata string) []byte {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(testdata, "fhir", "hl7-examples", "binary-example.json"))
	if err != nil {
		t.Fatal(err)
	}
	var b struct{ Data string }
	if err := json.Unmarshal(raw, &b); err != nil {
		t.Fatal(err)
	}
	pdf, err := base64.StdEncoding.DecodeString(strings.Join(strings.Fields(b.Data), ""))
	if err != nil || !bytes.HasPrefix(pdf, []byte("%PDF-")) {
		t.Fatalf("binary-example.json holds no PDF: %v", err)
	}
	return pdf
}

// report is an opinion about the packet's patient, naming study (the
// packet's UID) when given.
func report(pseudonym, conclusion, study string) map[string]any {
	r := map[string]any{
		"resourceType": "DiagnosticReport", "status": "final",
		"code":       map[string]any{"coding": []any{map[string]any{"system": "http://loinc.org", "code": "18748-4", "display": "Diagnostic imaging study"}}, "text": "Second opinion"},
		"subject":    map[string]any{"reference": "Patient/" + pseudonym},
		"conclusion": conclusion,
		"conclusionCode": []any{map[string]any{"coding": []any{map[string]any{
			"system": "http://snomed.info/sct", "code": "92110001", "display": "Hamartoma of lung"}}}},
	}
	if study != "" {
		r["imagingStudy"] = []any{map[string]any{"identifier": map[string]any{"system": "urn:dicom:uid", "value": "urn:oid:" + study}}}
	}
	return r
}

// opinionForm is a multipart/form-data opinion: the report and a PDF.
func opinionForm(t *testing.T, report map[string]any, pdf []byte) (*bytes.Buffer, string) {
	t.Helper()
	var buf bytes.Buffer
	mw := multipart.NewWriter(&buf)
	h := textproto.MIMEHeader{}
	h.Set("Content-Disposition", `form-data; name="report"; filename="report.json"`)
	h.Set("Content-Type", "application/fhir+json")
	w, err := mw.CreatePart(h)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.NewEncoder(w).Encode(report); err != nil {
		t.Fatal(err)
	}
	h = textproto.MIMEHeader{}
	h.Set("Content-Disposition", `form-data; name="pdf"; filename="opinion.pdf"`)
	h.Set("Content-Type", "application/pdf")
	if w, err = mw.CreatePart(h); err != nil {
		t.Fatal(err)
	}
	w.Write(pdf)
	if err := mw.Close(); err != nil {
		t.Fatal(err)
	}
	return &buf, mw.FormDataContentType()
}

// checkOpinions checks the hospital's Bundle of opinions: one per
// specialist, each about the real patient; dr-okafor's naming the real
// study, dr-garcia's carrying the PDF.
func checkOpinions(t *testing.T, r reply, patient, study string, pdf []byte) {
	t.Helper()
	var b struct {
		ResourceType, Type string
		Entry              []struct {
			Resource struct {
				ResourceType string
				Subject      struct{ Reference string }
				Performer    []struct{ Display string }
				Conclusion   string
				ImagingStudy []struct {
					Identifier struct{ System, Value string }
				}
				PresentedForm []struct{ ContentType, Data string }
			}
		}
	}
	r.decode(t, &b)
	if b.ResourceType != "Bundle" || b.Type != "collection" || len(b.Entry) != 2 {
		t.Fatalf("opinions: %s", r.body)
	}
	seen := map[string]bool{}
	for _, e := range b.Entry {
		res := e.Resource
		if res.ResourceType != "DiagnosticReport" || len(res.Performer) != 1 || res.Conclusion == "" {
			t.Errorf("an opinion: %+v", res)
			continue
		}
		by := res.Performer[0].Display
		seen[by] = true
		if res.Subject.Reference != "Patient/"+patient {
			t.Errorf("%s's opinion is about %q, not the hospital's Patient/%s", by, res.Subject.Reference, patient)
		}
		switch by {
		case "dr-okafor":
			if len(res.ImagingStudy) != 1 || res.ImagingStudy[0].Identifier.Value != "urn:oid:"+study ||
				res.ImagingStudy[0].Identifier.System != "urn:dicom:uid" {
				t.Errorf("dr-okafor's opinion names the studies %+v, want the real %s", res.ImagingStudy, study)
			}
		case "dr-garcia":
			if len(res.PresentedForm) != 1 || res.PresentedForm[0].ContentType != "application/pdf" {
				t.Errorf("dr-garcia's opinion carries %+v", res.PresentedForm)
			} else if got, err := base64.StdEncoding.DecodeString(res.PresentedForm[0].Data); err != nil || !bytes.Equal(got, pdf) {
				t.Errorf("dr-garcia's PDF comes back changed (%d bytes, sent %d): %v", len(got), len(pdf), err)
			}
		}
	}
	if !seen["dr-okafor"] || !seen["dr-garcia"] {
		t.Errorf("opinions by %v", seen)
	}
}

// checkAudit reads the case's audit trail as the compliance officer and
// checks that it holds every step, allowed and refused, and nothing that
// identifies the patient.
func checkAudit(t *testing.T, co principal, caseID, patientKey string, id identity) {
	t.Helper()
	type step struct {
		action, actor string
		outcome, n    int
	}
	want := []step{
		{"case.create", "st-marys", 201, 1},
		{"case.assign", "cm-ana", 200, 1},
		{"case.release", "cm-ana", 200, 1},
		{"packet.read", "dr-okafor", 200, 2}, // built, then stored
		{"packet.read", "dr-garcia", 200, 1},
		{"opinion.create", "dr-okafor", 201, 1},
		{"opinion.create", "dr-garcia", 201, 1},
		{"opinion.read", "st-marys", 200, 1},
		{"packet.read", "dr-okafor", 409, 1}, // before the release
		{"packet.read", "city-general", 404, 1},
		{"case.read", "city-general", 404, 1},
		{"packet.read", "dr-lind", 403, 1},
		{"packet.read", "dr-okafor", 403, 1}, // after the revocation
		{"packet.read", "dr-garcia", 403, 1},
	}
	var raw []byte
	eventually(t, 10*time.Second, func() error {
		raw = co.get(t, "/audit?case="+caseID).want(t, http.StatusOK).body
		got := map[step]int{}
		dec := json.NewDecoder(bytes.NewReader(raw))
		for dec.More() {
			var e audit.Entry
			if err := dec.Decode(&e); err != nil {
				return fmt.Errorf("GET /audit: %v", err)
			}
			if e.Target.Case != caseID {
				return fmt.Errorf("GET /audit?case=%s returned an entry of case %q", caseID, e.Target.Case)
			}
			if e.Outcome < 300 && e.Target.Patient != patientKey {
				return fmt.Errorf("%s by %s: target patient %q, want the keyed hash %q", e.Action, e.Actor.ID, e.Target.Patient, patientKey)
			}
			if e.Outcome == http.StatusForbidden && (e.Decision == nil || e.Decision.Allow || len(e.Decision.Reasons) == 0) {
				return fmt.Errorf("%s by %s refused without a recorded decision: %+v", e.Action, e.Actor.ID, e.Decision)
			}
			got[step{e.Action, e.Actor.ID, e.Outcome, 0}]++
		}
		for _, w := range want {
			if n := got[step{w.action, w.actor, w.outcome, 0}]; n != w.n {
				return fmt.Errorf("the audit trail has %d entries %s by %s with outcome %d, want %d:\n%s", n, w.action, w.actor, w.outcome, w.n, raw)
			}
		}
		return nil
	})
	// The trail is evidence, not a copy of the record: no name, identifier
	// or address of the patient in it.
	for _, h := range id.scan("GET /audit", "body", raw, -1) {
		t.Errorf("the audit trail identifies the patient: %v", h)
	}
}
