// Package deid holds what DICOM and FHIR de-identification share: the
// profile and options a caller asks for, and the pseudonym source that gives
// one patient one pseudonym, one date offset and one UID mapping across every
// file and every packet.
//
// # Where to start
//
// Parse what the user asked for with [ParseDICOMProfile] or
// [ParseFHIRProfile]. Pick a [Source]:
//
//   - [NewKeyed] derives everything from a secret with HMAC-SHA256. It is
//     deterministic (the same secret gives the same pseudonym in every run and
//     on every machine), which is GDPR pseudonymisation. The offline CLI uses
//     it; it can record its mapping into a store for reverse lookups.
//   - [NewSurrogate] draws random values and records them in a mapping kept in
//     a [storage.Store] (the gateway passes an encrypted one). HIPAA
//     45 CFR 164.514(c) requires this for Safe Harbor: a re-identification code
//     must not be derived from the patient's own data.
//
// Both implement [Reverser] (the keyed source only when it records into a
// store), which the gateway uses to map a returned opinion back to the
// patient.
//
// # The patient key
//
// Every call names the patient by a key that the caller chooses; this package
// never derives one. The gateway uses "<organisation>|<FHIR Patient id>"; the
// CLI uses the DICOM Patient ID and the FHIR Patient's MR identifier value
// (falling back to Patient.id), so a study and a bundle of the same patient
// get the same pseudonym and date shift when the hospital's MRN is the DICOM
// Patient ID. A key is identifying: it is only ever stored encrypted, and
// object names carry keyed hashes of it, never the key itself.
package deid
