// Package packet writes and reads case packets: what a specialist
// receives for a second opinion. A packet is a tar stream encrypted with
// age (filippo.io/age) to the specialist's X25519 recipient; its manifest
// lists every file's size, media type and SHA-256 and is signed with the
// gateway's minisign key (aead.dev/minisign). A specialist opens it with
// the consilium CLI or with the standard tools alone:
//
//	age -d -i specialist.agekey case.packet | tar x
//	minisign -Vm manifest.json -p gateway.pub
//	sha256sum -c <(jq -r '.files[] | "\(.sha256)  \(.path)"' manifest.json)
//
// # Where to start
//
// [Build] writes a packet from [Contents] (the case, the patient's FHIR
// Bundle, an iterator of DICOM instances) under [Options] (recipient,
// signing key, de-identification). [Open] starts reading one;
// [Reader.Verify] checks it without writing anything and [Reader.Unpack]
// checks it and writes its files to a directory.
//
// # Layout
//
// The tar entries, in this order:
//
//	summary.html            readable overview: question, specialty, deadline,
//	                        timeline of conditions, observations, procedures,
//	                        imaging studies (escaped, no script, loads nothing)
//	fhir/bundle.json        the de-identified FHIR Bundle
//	DICOM/Pnnnnnnn/Snnnnnnn/SEnnnnnn/Innnnnnn
//	                        the de-identified instances, as PS3.10 media
//	DICOMDIR                the file-set's directory (PS3.3 Basic Directory)
//	deid-receipt.json       what de-identification changed, what was withheld
//	                        and why, and the residual scan's result
//	manifest.json           the list of files (not itself), signed
//	manifest.json.minisig   minisign signature of manifest.json
//
// The DICOMDIR sits at the root, as on a CD, and references the instances
// by File IDs such as DICOM\P0000001\S0000001\SE000001\I0000001; OsiriX,
// Horos, Weasis and PACS importers open the unpacked folder as it is.
//
// # Streaming: why the manifest is last
//
// The manifest must hold every file's size and SHA-256, which are known
// only once the file has been written. Putting it first would mean building
// the whole packet before sending a byte (a 300-instance study is 150 MB).
// So the content comes first, hashed as it streams, and manifest.json and
// its signature are the last two entries. The age header leaves at once,
// the summary and the bundle right after; a reader hashes each file as it
// arrives and checks them all against the manifest at the end. [Reader]
// therefore never trusts anything before the end: Unpack writes to a hidden
// directory and moves it into place only when the signature and every
// hash verified.
//
// The tar format needs each file's size before its content. De-identified
// instances are therefore spooled (in memory up to Options.MemorySpool,
// else in a temporary file), a few ahead of the tar stream. The work runs
// in parallel: one worker per core (up to four) de-identifies, spools,
// hashes and scans instances, fetched in order from the caller's
// iterator; one goroutine writes the tar stream in that order; one
// encrypts, and is lent each spooled instance without a copy.
//
// # De-identification
//
// Build de-identifies: callers pass originals, a [deid.Source], the
// patient key and the obligations of the policy decision (profiles,
// excluded labels, burned-in withholding) in [Deidentification]. This keeps
// the pseudonyms, date shift and UIDs of the bundle and the images
// consistent and lets Build record exactly what was applied. Content that a
// caller has already de-identified comes with its report
// ([Contents.BundleReport], [Instance.Report]) and is passed through. The
// DICOM default is "basic,retain-long-modified-dates" (dates shifted like
// the FHIR default "shifted"). Instances that may show burned-in text are
// withheld unless [Deidentification.KeepBurnedIn]; instances that cannot be
// read, duplicates and fragments without UIDs are withheld too, and the
// manifest and receipt say why.
//
// # Residual scan
//
// Every file is scanned for the patient's original identifiers
// ([Identifiers]: those the caller passes, plus the Patient of an original
// bundle and the patient attributes of every original instance): HTML,
// JSON and the DICOMDIR byte by byte, DICOM instances value by value at
// every depth (File Meta and preamble included), streaming, with Pixel Data
// only under [Options.ScanPixelData]. Hits go into the receipt (kind, file,
// attribute or offset and count, never the value) and into [Result.Hits];
// with [Options.FailOnResidual] Build fails before writing the file that
// holds one. The one exception: an identifier first seen in a DICOM
// original is searched for in the summary and the bundle (already sent)
// when the instances are done; a hit then fails the build before the
// manifest, so the packet never verifies.
package packet
