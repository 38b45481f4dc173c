// Package dicom reads DICOM Part 10 instances as streams and de-identifies
// them under the PS3.15 Annex E Basic Application Level Confidentiality
// Profile. Pixel Data is never held in memory: a 1 GB instance is read and
// rewritten in a few hundred kilobytes.
//
// # Reading
//
// [NewReader] reads the preamble and File Meta and then returns one
// top-level element per [Reader.Next], sequences included; Pixel Data comes
// back without its value, which [Reader.PixelData] streams (the item stream
// as encoded, for compressed data). [Reader.Summary] holds the key
// attributes (SOP Class/Instance, Study/Series UIDs, transfer syntax,
// patient and study attributes, the image pixel module). [Inspect] reads a
// whole instance, checks it as a Part 10 receiver should, and returns a
// [*ParseError] with a [Reason] and the byte offset when it must be refused.
// A DICOMweb store can tee the request body to storage and into Inspect, so
// that the stored bytes are exactly the received ones.
//
// Values are kept as raw bytes in the dataset's byte order and character
// set; elements are tokenized by the internal wire package because the
// DICOM library we build on (github.com/suyashkumar/dicom, used here for the
// PS3.6 dictionary and in tests) cannot copy Pixel Data through from a
// stream without re-encoding or buffering it.
//
// # De-identification
//
// [NewDeidentifier] takes a profile from package deid (for example
// "basic,retain-long-modified-dates") and a [deid.Source];
// [Deidentifier.Rewrite] rewrites one instance. Table E.1-1 and the safe
// private list of Table E.3.10-1 are generated from the reference CSVs
// (tables_gen.go, go generate). Rewrite applies every action code at every
// nesting depth, replaces the File Meta, sets Patient ID and Patient's Name
// to the pseudonym, records Patient Identity Removed, De-identification
// Method (and its CID 7050 codes) and Longitudinal Temporal Information
// Modified, and returns a [Report] of what it did, per attribute and
// action, for a packet's receipt ([MergeActions] adds reports up).
//
// Decisions beyond the table:
//   - Compound codes resolve by attribute Type where it is the same in every
//     IOD (a short list), and otherwise to the choice valid for every Type
//     the code allows: D for Z/D, X/D and X/Z/D; Z for X/Z; for X/Z/U* the
//     sequence is kept with its UIDs replaced. D on a code sequence replaces
//     the code with a dummy one; D or C on another sequence applies the
//     profile to its items.
//   - Whole overlay groups (60xx) go with their Overlay Data; curves (50xx)
//     and private groups go (Retain Safe Private keeps the listed ones and
//     their Private Creator); group lengths are dropped.
//   - Attributes the table does not list are kept, except that a person name
//     is emptied wherever it is, and text (LO, SH, ST, LT, UT, UC, such as
//     SR Text Value) has the identifying values of the instance masked.
//     Clean (C) on text masks the same way; C on dates shifts them by the
//     patient's offset; C on binary values removes them.
//   - Text in a multi-byte ISO 2022 character set that must be cleaned is
//     emptied, since it cannot be searched byte by byte.
//   - Instances whose pixels may show text are reported ([Report.BurnedIn],
//     [BurnedInRules]) so a packet can withhold them; pixels are not masked.
package dicom
