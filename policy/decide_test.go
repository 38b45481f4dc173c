package policy

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

var testNow = time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)

func newTestEngine(t testing.TB, opts ...Option) *Engine {
	t.Helper()
	e, err := New(context.Background(), append([]Option{WithClock(func() time.Time { return testNow })}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	return e
}

// fixtureConsent reads testdata/consents/<name>.json through ConsentFromFHIR.
func fixtureConsent(t testing.TB, name string) Consent {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join("testdata", "consents", name+".json"))
	if err != nil {
		t.Fatal(err)
	}
	c, err := ConsentFromFHIR(raw)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

var (
	hospitalP   = Principal{ID: "ehr-st-mary", Org: "st-mary", Role: RoleHospital, Country: "GB", Languages: []string{"en"}}
	managerP    = Principal{ID: "cm-alice", Org: "consilium", Role: RoleCaseManager, Country: "GB"}
	specialistU = Principal{ID: "dr-us", Org: "boston-onc", Role: RoleSpecialist, Country: "US", Specialty: "oncology"}
	specialistE = Principal{ID: "dr-es", Org: "hospital-clinic", Role: RoleSpecialist, Country: "ES", Specialty: "oncology"}
	specialistC = Principal{ID: "dr-cn", Org: "beijing-onc", Role: RoleSpecialist, Country: "CN", Specialty: "oncology"}
	complianceP = Principal{ID: "dpo-bob", Org: "consilium", Role: RoleCompliance, Country: "GB"}
)

func testCase(status string) Case {
	return Case{
		ID: "case-1", Org: "st-mary", Status: status, Specialty: "oncology",
		Assigned: []string{"dr-us", "dr-es", "dr-cn"}, Deadline: "2025-07-01T00:00:00Z",
		Purpose: PurposeSecondOpinion, SourceCountry: "GB",
	}
}

func recipientOf(p Principal) Recipient { return Recipient{ID: p.ID, Org: p.Org, Country: p.Country} }

// TestDecideRoles: allow and deny for each role through the Go API.
func TestDecideRoles(t *testing.T) {
	e := newTestEngine(t)
	permit := fixtureConsent(t, "permit-treat")
	own := Resource{Kind: "fhir", Org: "st-mary", Type: "Observation", ID: "o1", Patient: "pk1"}
	other := Resource{Kind: "fhir", Org: "north-general", Type: "Observation", ID: "o2", Patient: "pk2"}
	tests := []struct {
		name   string
		in     Input
		allow  bool
		reason string
	}{
		{"whoami", Input{Principal: specialistC, Action: ActionWhoAmI}, true, "every authenticated principal may ask who it is"},
		{"anonymous", Input{Action: ActionWhoAmI}, false, "the request has no authenticated principal"},

		{"hospital reads own", Input{Principal: hospitalP, Action: ActionFHIRRead, Resource: own}, true, "hospitals may read and write their own organisation's FHIR and DICOM data"},
		{"hospital writes own dicom", Input{Principal: hospitalP, Action: ActionDICOMWrite, Resource: Resource{Kind: "dicom", Org: "st-mary"}}, true, ""},
		{"hospital reads other org", Input{Principal: hospitalP, Action: ActionFHIRRead, Resource: other}, false, `organisation "st-mary" may not access data owned by organisation "north-general"`},
		{"hospital opens case", Input{Principal: hospitalP, Action: ActionCaseCreate, Case: testCase(CaseDraft)}, true, "hospitals may open second-opinion cases for their own patients"},
		{"hospital reads opinion", Input{Principal: hospitalP, Action: ActionOpinionRead, Case: testCase(CaseOpinionReceived)}, true, ""},
		{"hospital pulls packet", Input{Principal: hospitalP, Action: ActionPacketRead, Case: testCase(CaseReleased), Consents: []Consent{permit}}, false, `no rule allows role "hospital" to perform "packet.read"`},

		{"manager assigns", Input{Principal: managerP, Action: ActionCaseAssign, Case: testCase(CaseDraft)}, true, "case managers may assign specialists"},
		{"manager releases", Input{Principal: managerP, Action: ActionCaseRelease, Case: testCase(CaseAssigned), Recipient: recipientOf(specialistE), Consents: []Consent{permit}}, true, "case managers may release packets to assigned specialists"},
		{"manager releases again", Input{Principal: managerP, Action: ActionCaseRelease, Case: testCase(CaseReleased), Recipient: recipientOf(specialistE), Consents: []Consent{permit}}, true, ""},
		{"manager releases a draft", Input{Principal: managerP, Action: ActionCaseRelease, Case: testCase(CaseDraft), Recipient: recipientOf(specialistE), Consents: []Consent{permit}}, false, `only a case with assigned specialists can be released; this case is "draft"`},
		{"manager reads clinical data", Input{Principal: managerP, Action: ActionFHIRRead, Resource: own}, false, `no rule allows role "case-manager" to perform "fhir.read" on Observation resources`},
		{"manager closes", Input{Principal: managerP, Action: ActionCaseClose, Case: testCase(CaseOpinionReceived)}, true, "case managers may cancel and close cases"},

		{"specialist pulls", Input{Principal: specialistU, Action: ActionPacketRead, Case: testCase(CaseReleased), Consents: []Consent{permit}}, true, "specialists may pull the packets of the cases assigned to them"},
		{"specialist before release", Input{Principal: specialistU, Action: ActionPacketRead, Case: testCase(CaseAssigned), Consents: []Consent{permit}}, false, `the case has not been released to specialists (status "assigned")`},
		{"specialist not assigned", Input{Principal: Principal{ID: "dr-x", Org: "x", Role: RoleSpecialist, Country: "US"}, Action: ActionPacketRead, Case: testCase(CaseReleased), Consents: []Consent{permit}}, false, `specialist "dr-x" is not assigned to this case`},
		{"specialist after deadline", Input{Time: time.Date(2025, 7, 2, 0, 0, 0, 0, time.UTC), Principal: specialistU, Action: ActionPacketRead, Case: testCase(CaseReleased), Consents: []Consent{permit}}, false, "the case deadline 2025-07-01T00:00:00Z has passed"},
		{"specialist opinion", Input{Principal: specialistE, Action: ActionOpinionCreate, Case: testCase(CaseReleased)}, true, "specialists may submit opinions on the cases assigned to them"},
		{"specialist reads fhir", Input{Principal: specialistU, Action: ActionFHIRRead, Resource: own}, false, ""},

		{"compliance audit", Input{Principal: complianceP, Action: ActionAuditExport}, true, "compliance officers manage policies and read consents and the audit trail"},
		{"compliance consent resource", Input{Principal: complianceP, Action: ActionFHIRRead, Resource: Resource{Kind: "fhir", Org: "north-general", Type: "Consent", ID: "c1"}}, true, "compliance officers may read Consent resources, and no other FHIR resources"},
		{"compliance clinical", Input{Principal: complianceP, Action: ActionFHIRRead, Resource: own}, false, `no rule allows role "compliance" to perform "fhir.read" on Observation resources`},
		{"compliance packet", Input{Principal: complianceP, Action: ActionPacketRead, Case: testCase(CaseReleased), Consents: []Consent{permit}}, false, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d, err := e.Decide(context.Background(), tt.in)
			if err != nil {
				t.Fatal(err)
			}
			if d.Allow != tt.allow {
				t.Fatalf("allow = %v, want %v; reasons %q", d.Allow, tt.allow, d.Reasons)
			}
			if tt.reason != "" && !slices.Contains(d.Reasons, tt.reason) {
				t.Errorf("reasons %q lack %q", d.Reasons, tt.reason)
			}
			if len(d.Reasons) == 0 {
				t.Error("no reasons")
			}
			if d.PolicyVersion != BuiltinVersion || len(d.InputDigest) != 64 {
				t.Errorf("version %q digest %q", d.PolicyVersion, d.InputDigest)
			}
			if err := d.Err(); (err == nil) != tt.allow || (err != nil && !errors.Is(err, ErrDenied)) {
				t.Errorf("Err() = %v", err)
			}
		})
	}
}

// TestDecideConsent: every consent condition, with consents read from FHIR.
func TestDecideConsent(t *testing.T) {
	e := newTestEngine(t)
	share := func(p Principal, names ...string) Input {
		in := Input{Principal: p, Action: ActionPacketRead, Case: testCase(CaseReleased)}
		for _, n := range names {
			in.Consents = append(in.Consents, fixtureConsent(t, n))
		}
		return in
	}
	tests := []struct {
		name    string
		in      Input
		allow   bool
		reason  string
		exclude []string
	}{
		{"demo journey to the US", share(specialistU, "permit-treat"), true, `consent "permit-treat" permits sharing for "second-opinion"`, nil},
		{"demo journey to Spain", share(specialistE, "permit-treat"), true, "", nil},
		{"consilium purpose code, countries US and ES", share(specialistU, "second-opinion-us-es"), true, "", nil},
		{"no consent", share(specialistU), false, "no consent is on record for the patient", nil},
		{"expired", share(specialistU, "expired"), false, `consent "expired" is not in force at 2025-06-01T12:00:00Z (period "2022-12-31T23:00:00Z" to "2024-07-01T00:00:00Z")`, nil},
		{"wrong purpose", share(specialistU, "research-only"), false, `consent "research-only" does not cover the purpose "second-opinion"`, nil},
		{"revoked", share(specialistU, "revoked"), false, `consent "revoked" is "inactive", not active`, nil},
		{"revoked and renewed", share(specialistU, "revoked", "permit-treat"), true, "", nil},
		{"opt-out wins", share(specialistU, "permit-treat", "opt-out"), false, `consent "opt-out" records the patient's refusal`, nil},
		{"country not allowed by consent", share(specialistU, "eu-only"), false, `consent "eu-only" limits recipients to ["ES", "FR"], not "US"`, nil},
		{"country allowed by consent", share(specialistE, "eu-only"), true, "", nil},
		{"country not in cross-border table", share(specialistC, "permit-treat"), false, `no transfer basis from "GB" to "CN" in the cross-border table`, nil},
		{"consent allows a country the table does not", share(specialistC, "second-opinion-us-es"), false, `consent "second-opinion-us-es" limits recipients to ["ES", "US"], not "CN"`, nil},
		{"sensitive labels excluded", share(specialistU, "exclude-sensitive"), true, "the patient's consent excludes data labelled PSY", []string{"HIV", "PSY", "SEX"}},
		{"uninterpretable restriction blocks", share(specialistU, "permit-treat", "actor-restricted"), false, `consent "actor-restricted" has parts that Consilium cannot interpret (provision.actor, provision.provision[0]: deny without securityLabel)`, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d, err := e.Decide(context.Background(), tt.in)
			if err != nil {
				t.Fatal(err)
			}
			if d.Allow != tt.allow {
				t.Fatalf("allow = %v, want %v; reasons %q", d.Allow, tt.allow, d.Reasons)
			}
			if tt.reason != "" && !slices.Contains(d.Reasons, tt.reason) {
				t.Errorf("reasons %q lack %q", d.Reasons, tt.reason)
			}
			if !tt.allow {
				if d.Obligations.DeidProfile != "" {
					t.Errorf("a deny carries obligations %+v", d.Obligations)
				}
				return
			}
			if !slices.Equal(d.Obligations.ExcludeLabels, tt.exclude) {
				t.Errorf("exclude labels %v, want %v", d.Obligations.ExcludeLabels, tt.exclude)
			}
			if d.Obligations.DeidProfile != ProfileShifted || !d.Obligations.WithholdBurnedIn {
				t.Errorf("obligations %+v", d.Obligations)
			}
			exp, ok := d.Obligations.ExpiresAt()
			if !ok || !exp.Equal(time.Date(2025, 7, 1, 0, 0, 0, 0, time.UTC)) {
				t.Errorf("expires %q, want the case deadline", d.Obligations.Expires)
			}
		})
	}
}

func TestDecideReleaseObligations(t *testing.T) {
	e := newTestEngine(t)
	c := fixtureConsent(t, "permit-treat")
	c.End = "2025-06-20T00:00:00Z"
	d, err := e.Decide(context.Background(), Input{
		Principal: managerP, Action: ActionCaseRelease, Case: testCase(CaseAssigned),
		Recipient: recipientOf(specialistU), Consents: []Consent{c},
	})
	if err != nil || !d.Allow {
		t.Fatalf("release: %v %q", err, d.Reasons)
	}
	want := Obligations{
		DeidProfile:      ProfileShifted,
		DeidOptions:      []string{"retain-long-modified-dates", "clean-descriptors", "clean-graphics", "clean-structured-content"},
		WithholdBurnedIn: true,
		Expires:          "2025-06-20T00:00:00Z",
	}
	if !slices.Equal(d.Obligations.DeidOptions, want.DeidOptions) || d.Obligations.Expires != want.Expires ||
		d.Obligations.DeidProfile != want.DeidProfile || len(d.Obligations.ExcludeLabels) != 0 {
		t.Errorf("obligations %+v, want %+v", d.Obligations, want)
	}
	var transfer bool
	for _, r := range d.Reasons {
		transfer = transfer || strings.HasPrefix(r, `transfer from "GB" to "US": `) && strings.Contains(r, "United States of America) Regulations 2023")
	}
	if !transfer {
		t.Errorf("reasons %q do not name the UK-US data bridge", d.Reasons)
	}
}

func TestDecideInvalidInput(t *testing.T) {
	e := newTestEngine(t)
	tests := []struct {
		name string
		in   Input
	}{
		{"unknown action", Input{Principal: hospitalP, Action: "fhir.delete-everything"}},
		{"unknown role", Input{Principal: Principal{ID: "x", Role: "root"}, Action: ActionWhoAmI}},
		{"lower-case country", Input{Principal: Principal{ID: "x", Role: RoleSpecialist, Country: "us"}, Action: ActionWhoAmI}},
		{"bad deadline", Input{Principal: specialistU, Action: ActionCaseRead, Case: Case{Deadline: "soon"}}},
		{"bad consent period", Input{Principal: specialistU, Action: ActionPacketRead, Consents: []Consent{{ID: "c", End: "2025"}}}},
		{"bad consent decision", Input{Principal: specialistU, Action: ActionPacketRead, Consents: []Consent{{ID: "c", Decision: "maybe"}}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d, err := e.Decide(context.Background(), tt.in)
			if !errors.Is(err, ErrInvalidInput) {
				t.Errorf("err = %v, want ErrInvalidInput", err)
			}
			if d.Allow {
				t.Error("an invalid input was allowed")
			}
		})
	}
}

// TestDecideDigest: the digest is a function of the input's content, not of
// the order of set-like lists.
func TestDecideDigest(t *testing.T) {
	e := newTestEngine(t)
	a := Input{Principal: specialistU, Action: ActionPacketRead, Case: testCase(CaseReleased),
		Consents: []Consent{fixtureConsent(t, "permit-treat"), fixtureConsent(t, "eu-only")}}
	b := a
	b.Case.Assigned = []string{"dr-cn", "dr-es", "dr-us"}
	b.Consents = []Consent{a.Consents[1], a.Consents[0]}
	c := a
	c.Case.Deadline = "2025-08-01T00:00:00Z"
	da, _ := e.Decide(context.Background(), a)
	db, _ := e.Decide(context.Background(), b)
	dc, _ := e.Decide(context.Background(), c)
	if da.InputDigest != db.InputDigest {
		t.Error("reordering sets changed the digest")
	}
	if da.InputDigest == dc.InputDigest {
		t.Error("a different deadline gave the same digest")
	}
	if !slices.Equal(a.Case.Assigned, []string{"dr-us", "dr-es", "dr-cn"}) {
		t.Error("Decide modified the caller's input")
	}
}

func TestDecideConcurrent(t *testing.T) {
	e := newTestEngine(t)
	in := Input{Principal: specialistU, Action: ActionPacketRead, Case: testCase(CaseReleased), Consents: []Consent{fixtureConsent(t, "permit-treat")}}
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for range 50 {
				d, err := e.Decide(context.Background(), in)
				if err != nil || !d.Allow {
					t.Errorf("decide: %v %v", err, d.Reasons)
					return
				}
			}
		})
	}
	wg.Wait()
}
