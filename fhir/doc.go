// Package fhir owns FHIR R4 records: parsing and validation (with
// github.com/google/fhir's R4 unmarshaller), the organisation-scoped,
// versioned record store behind the gateway's FHIR API, Bundle and NDJSON
// ingest, patient linkage, search, and de-identification.
//
// # Where to start
//
// [NewStore] over an (encrypted) storage.Store gives a [Store]. Hospitals'
// writes go through [Store.ProcessBundle] (transaction and batch Bundles),
// [Store.LoadNDJSON] (bulk loads, streamed), [Store.Create],
// [Store.Update], [Store.ConditionalUpdate] and [Store.Delete]; every write
// asks the caller's [Authorizer] about each resource before anything is
// stored. Reads: [Store.Read], [Store.VRead], [Store.History],
// [Store.Search] and [Store.Everything], with bodies streamed by
// [Store.Bodies]. Errors are [*Error] values whose Kind is one of the
// sentinel errors (ErrInvalid, ErrNotFound, ...) and whose issues carry
// FHIRPath expressions such as "Bundle.entry[3].resource.code".
//
// # For other components
//
//   - Policy inputs: [Store.Consents] returns a patient's current Consent
//     resources (JSON) for policy.ConsentFromFHIR.
//   - Case packets: [Store.Everything] lists a patient's record (the
//     Patient, every resource linked to it, and the non-patient resources
//     they reference); [Store.Bodies] streams the JSON of those versions.
//
// A resource is linked to a patient when it is the Patient, or its
// subject, patient or beneficiary element references a Patient of the same
// organisation (after urn:uuid references of a Bundle are rewritten).
//
// # Storage
//
// Each organisation's records are a sequence of commits, each one object
// written create-if-absent (see segment.go for the layout): a commit is
// all or nothing, concurrent gateways cannot lose each other's updates,
// and versions follow from commit order. Resources are stored as
// canonical JSON re-encoded from the validated tree (keys sorted,
// meta.versionId and meta.lastUpdated added at read time). Object names
// carry only keyed hashes of the organisation and sequence numbers, never
// resource ids. Each instance keeps every organisation's index it has
// served in memory, rebuilt from the latest checkpoint and the commits
// after it.
//
// # De-identification
//
// De-identification starts at [NewDeidentifier]: it rewrites a resource, a
// Bundle or an NDJSON export on the JSON tree (not through typed protos, which
// is an order of magnitude slower), applying the rules of
// ../shared/reference/fhir-r4-deid-rules.md under the "shifted" or
// "safe-harbor" profile of package deid, with the same pseudonyms, date
// offsets and UID mapping as package dicom.
package fhir
