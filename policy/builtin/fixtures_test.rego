# Shared inputs for the tests of consilium.authz.
package consilium.authz_test

now := "2025-06-01T12:00:00Z"

hospital := {"id": "ehr-st-mary", "org": "st-mary", "role": "hospital", "country": "GB", "specialty": "", "languages": ["en"]}

other_hospital := object.union(hospital, {"id": "ehr-north", "org": "north-general"})

manager := {"id": "cm-alice", "org": "consilium", "role": "case-manager", "country": "GB", "specialty": "", "languages": ["en"]}

specialist_us := {"id": "dr-us", "org": "boston-onc", "role": "specialist", "country": "US", "specialty": "oncology", "languages": ["en"]}

specialist_es := {"id": "dr-es", "org": "hospital-clinic", "role": "specialist", "country": "ES", "specialty": "oncology", "languages": ["es", "en"]}

specialist_cn := {"id": "dr-cn", "org": "beijing-onc", "role": "specialist", "country": "CN", "specialty": "oncology", "languages": ["zh"]}

compliance := {"id": "dpo-bob", "org": "consilium", "role": "compliance", "country": "GB", "specialty": "", "languages": ["en"]}

case_for(status) := {
	"id": "case-1",
	"org": "st-mary",
	"status": status,
	"specialty": "oncology",
	"assigned": ["dr-us", "dr-es", "dr-cn"],
	"deadline": "2025-07-01T00:00:00Z",
	"purpose": "second-opinion",
	"source_country": "GB",
}

released := case_for("released")

treat := "http://terminology.hl7.org/CodeSystem/v3-ActReason|TREAT"

second_opinion := "https://consilium.health/fhir/CodeSystem/purpose|second-opinion"

consent := {
	"id": "consent-1",
	"status": "active",
	"scope": "patient-privacy",
	"decision": "permit",
	"start": "2025-01-01T00:00:00Z",
	"end": "2026-01-01T00:00:00Z",
	"purposes": [treat],
	"recipient_countries": [],
	"exclude_labels": [],
	"uninterpreted": [],
}

# req builds a complete input the way the gateway does, with extra fields
# replacing the empty defaults.
req(who, what, extra) := object.union(
	{
		"time": now,
		"principal": who,
		"action": what,
		"resource": {"kind": "", "org": "", "type": "", "id": "", "labels": [], "patient": ""},
		"case": {},
		"recipient": {},
		"consents": [],
	},
	extra,
)

# share is a specialist's packet pull on the released case with consents cs.
share(who, cs) := req(who, "packet.read", {"case": released, "consents": cs})

decide(inp) := d if {
	d := data.consilium.authz.decision with input as inp
}

allows(inp) if decide(inp).allow

denies(inp) if not decide(inp).allow

# denies_with holds when the decision denies and gives reason msg.
denies_with(inp, msg) if {
	d := decide(inp)
	not d.allow
	msg in d.reasons
}

allows_with(inp, msg) if {
	d := decide(inp)
	d.allow
	msg in d.reasons
}
