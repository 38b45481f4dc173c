package policy_test

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/consilium/consilium/policy"
)

// A specialist in the United States pulls the packet of a case that a
// hospital in the United Kingdom opened, with the patient's consent.
func ExampleEngine_Decide() {
	ctx := context.Background()
	engine, err := policy.New(ctx)
	if err != nil {
		panic(err)
	}
	consent, err := policy.ConsentFromFHIR([]byte(`{
		"resourceType": "Consent", "id": "c-17", "status": "active",
		"policyRule": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "OPTIN"}]},
		"provision": {
			"period": {"start": "2025-01-01", "end": "2025-12-31"},
			"purpose": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ActReason", "code": "TREAT"}],
			"provision": [{"type": "deny", "securityLabel": [{"code": "PSY"}]}]
		}}`))
	if err != nil {
		panic(err)
	}
	d, err := engine.Decide(ctx, policy.Input{
		Time:      time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC),
		Principal: policy.Principal{ID: "dr-us", Org: "boston-onc", Role: policy.RoleSpecialist, Country: "US"},
		Action:    policy.ActionPacketRead,
		Case: policy.Case{
			ID: "case-1", Org: "st-mary", Status: policy.CaseReleased, Assigned: []string{"dr-us"},
			Deadline: "2025-07-01T00:00:00Z", Purpose: policy.PurposeSecondOpinion, SourceCountry: "GB",
		},
		Consents: []policy.Consent{consent},
	})
	if err != nil {
		panic(err)
	}
	fmt.Println("allow:", d.Allow, "policy:", d.PolicyVersion)
	fmt.Println("profile:", d.Obligations.DeidProfile, "exclude:", d.Obligations.ExcludeLabels, "expires:", d.Obligations.Expires)

	// Without the case being released, the same request is denied.
	d, _ = engine.Decide(ctx, policy.Input{
		Principal: policy.Principal{ID: "dr-us", Org: "boston-onc", Role: policy.RoleSpecialist, Country: "US"},
		Action:    policy.ActionPacketRead,
		Case:      policy.Case{ID: "case-1", Status: policy.CaseAssigned, Assigned: []string{"dr-us"}, Purpose: policy.PurposeSecondOpinion, SourceCountry: "GB"},
		Consents:  []policy.Consent{consent},
	})
	fmt.Println("denied:", errors.Is(d.Err(), policy.ErrDenied))
	// Output:
	// allow: true policy: builtin
	// profile: shifted exclude: [PSY] expires: 2025-07-01T00:00:00Z
	// denied: true
}

func ExampleConsentFromFHIR() {
	c, err := policy.ConsentFromFHIR([]byte(`{
		"resourceType": "Consent", "id": "eu-only", "status": "active",
		"provision": {
			"type": "permit",
			"period": {"end": "2025"},
			"purpose": [{"system": "https://consilium.health/fhir/CodeSystem/purpose", "code": "second-opinion"}],
			"extension": [{"url": "https://consilium.health/fhir/StructureDefinition/recipient-country", "valueCode": "FR"}]
		}}`))
	if err != nil {
		panic(err)
	}
	fmt.Println(c.Decision, c.End, c.Purposes, c.RecipientCountries)
	// Output: permit 2026-01-01T00:00:00Z [https://consilium.health/fhir/CodeSystem/purpose|second-opinion] [FR]
}

// CheckDir runs what an upload checks, offline, on a bundle directory.
func ExampleCheckDir() {
	report, err := policy.CheckDir(context.Background(), "builtin")
	failed := 0
	for _, t := range report.Tests {
		if !t.Pass {
			failed++
		}
	}
	fmt.Println("tests ran:", len(report.Tests) > 0, "failed:", failed, "error:", err)
	// Output: tests ran: true failed: 0 error: <nil>
}
