// Package audit is Consilium's evidence trail: an append-only,
// hash-chained log of who did what to which (pseudonymous) target, what
// the policy decided and how the request ended, kept in the object
// store, with signed checkpoints, offline verification and a FHIR
// AuditEvent export. Compliance officers use it to prove who saw what,
// when and why it was allowed, and that nobody erased the record.
//
// Start with [Open] (the writer, [Log.Record]), [Verify] (the checker,
// also behind `consilium audit verify`) and [WriteFHIRBundle]. Package
// gateway records every request through it (see gateway/audit.go for
// the hook handlers use).
//
// # Entries and their hash
//
// An [Entry] is stored as one line of canonical JSON. Its "hash" member
// is the lower-case hex SHA-256 of the canonical encoding of the entry
// without the "hash" member; its "prev" member is the hash of the entry
// before it (64 zeros for seq 1). So every entry commits to the whole
// chain before it.
//
// The canonical encoding is RFC 8785 (JSON Canonicalization Scheme) for
// the values entries use: objects, arrays, strings, booleans, null and
// integers up to 2^53-1 (no fractions). Members are sorted by the UTF-16
// code units of their names, there is no whitespace, strings escape only
// '"', '\\' and control characters (\b \t \n \f \r, others as lower-case
// \u00xx) and hold every other character as UTF-8. Duplicate member
// names and invalid UTF-8 are refused. For entries, whose member names
// are ASCII, this is exactly what Python prints, so anyone can recompute
// a hash offline:
//
//	import json, hashlib
//	e = json.loads(line); claimed = e.pop("hash")
//	canon = json.dumps(e, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
//	assert hashlib.sha256(canon.encode()).hexdigest() == claimed
//
// # Segments: one chain for many gateway instances
//
// Entries are grouped in segments, objects named by the sequence number
// of their first entry (zero-padded, under a group folder, see
// segment.go), written create-if-absent (storage.PutOptions.IfAbsent).
// A writer puts the entries waiting at once into one segment starting at
// head+1. If another instance created that name first, the store refuses
// (ErrExists); the writer reads the new head, re-sequences its entries
// after it and tries again. A name can be created once, and a writer only
// creates the name that follows the last segment it has read, so the
// chain never forks, whatever the number of instances, and no entry is
// lost: an entry is reported recorded only after the Put that holds it
// succeeded. A write whose outcome is unknown (a timeout, a retry inside
// the client) is settled by reading the name back.
//
// Grouping concurrent appends into one segment (group commit) is what
// makes durable appends fast: one Put carries as many entries as arrived
// while the previous Put was in flight (see BenchmarkDurableAppend).
//
// The head is found without listing the whole log: checkpoint names
// count down, so the newest checkpoint is the first listed; from there
// the writer lists the few segment groups after it.
//
// # Checkpoints
//
// Every CheckpointEvery entries or CheckpointInterval (and on [Log.Close])
// an instance signs a [Checkpoint] with the gateway's minisign key: a
// statement of the head's seq and hash. Verification checks that the
// chain holds that hash at that seq, so no entry up to a checkpoint can
// be changed, removed or reordered, and cutting the tail short of a
// checkpoint is detected. The window: entries written after the newest
// checkpoint (at most CheckpointEvery entries or CheckpointInterval, plus
// what a crash left unsigned) could be cut from the end, or have forged
// entries appended after them, by someone who can write the store,
// without verification noticing from the store alone. [Report.Uncovered]
// says how many entries are in that window. A running gateway knows its
// head, so GET /audit/verify also reports a chain shorter than what it
// wrote; and each checkpoint's seq and hash go to the operations log, a
// witness outside the store.
//
// # Storage and what is guaranteed
//
// The log goes to the raw storage backend, not the encrypted store:
// entries hold pseudonymous ids only (see [Target]; [Log.Record] refuses
// anything but short tokens), and verification then needs nothing but
// the store and the gateway's public key.
//
// On MinIO with object lock, segments and checkpoints are written with
// retention (governance or compliance, RetentionDays long). MinIO then
// refuses to delete the written version or change it until retention
// ends (compliance: not even an administrator; governance: only a user
// allowed to bypass governance). What a locked, versioned bucket still
// allows is to add a version on top (a plain PUT) or a delete marker (a
// plain DELETE); the original stays. Verification on MinIO lists object
// versions, verifies the original (oldest) version of each object and
// reports every added version or delete marker as "overwritten" at that
// object. A deletion with governance bypass, or after retention, shows as
// a gap in the chain.
//
// On the filesystem backend, segments and checkpoints are fsynced,
// renamed into place and made read-only, and the store refuses to delete
// or overwrite them until retention ends. Anyone who can write the
// folder can still change files; verification finds it (as above).
//
// Without retention (a MinIO bucket without object lock), the same
// checks find changes, but nothing prevents them.
//
// # Verification
//
// [Verify] reads every segment in order and reports, in chain order,
// each [Problem] with its kind, the sequence number, the object name and
// the entry's line index: a missing segment, an overlapping segment, a
// reordered or removed entry (out-of-order), an edited entry
// (hash-mismatch), an edited and re-hashed entry (broken-link at the
// next entry), a bad or forged checkpoint, a truncated tail, an
// overwritten object, a stray object.
package audit
