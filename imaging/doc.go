// Package imaging is Consilium's imaging archive: the DICOM instances that
// hospitals store, kept byte for byte as they were received and encrypted
// in the object store, and the index that searches and retrievals read.
// The DICOMweb handlers of the gateway (STOW-RS, QIDO-RS, WADO-RS) and the
// case packet builder use it; it knows nothing about HTTP.
//
// Start with [New]. [Archive.Begin] opens an [Ingest] for one request:
// [Ingest.Add] streams one instance through [dicom.Check] into the store
// (the header decides where it goes, then Pixel Data flows through without
// being held), and [Ingest.Commit] publishes what was stored in one index
// update per study. [Archive.Search] answers QIDO-RS queries parsed by
// [ParseQuery]; [Archive.Study], [Archive.Open], [Archive.Metadata] and
// [Archive.BulkData] serve retrievals.
//
// # Object layout
//
// Everything is per organisation, and every name component is a keyed hash
// (the keyring's name key, see [Options.Names]) so that no UID or patient
// identifier appears in a name:
//
//	dicom/<org>/instances/<sop>   one instance, exactly as received
//	dicom/<org>/studies/<study>   the study's index: study attributes,
//	                              series, instances (size, SHA-256, offsets)
//	dicom/<org>/catalog/<x>       study summaries for study-level searches,
//	                              16 shards by the first digit of <study>
//
// A STOW-RS request therefore writes one object per instance plus, per
// study it touches, one study index update and at most one catalog shard
// update, each a compare-and-swap (PutOptions.IfMatch) retried on
// conflict, so that any number of gateway instances may share a store.
// Instances become visible when the study index lists them: an instance
// whose index update failed is invisible, and storing it again adopts it.
//
// # Identity and duplicates
//
// An instance is identified by its SOP Instance UID within the
// organisation. Storing the same bytes again is a success that changes
// nothing ([Unchanged]); different bytes under a stored SOP Instance UID
// are refused with [StatusDuplicateInstance] unless the request asks to
// replace ([IngestOptions.Replace]). All instances of a study must name the
// same Patient ID: the study belongs to one patient, whose pseudonymous key
// the policy decides on.
package imaging
