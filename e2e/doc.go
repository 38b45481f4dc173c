// Package e2e holds the end-to-end test of the second-opinion exchange:
// the journey of issue 7 from a hospital's records to a specialist's
// opinion, through one real gateway over mutual TLS, with its data and its
// audit trail on a real MinIO server, checked with the tools a specialist
// would use (Debian's age, minisign, tar and dcmtk's dcmdump) rather than
// with the gateway's own code.
//
// The package has no code of its own: start at TestSecondOpinionJourney in
// journey_test.go. Run it with
//
//	CONSILIUM_MINIO_BIN=/root/tools/bin/minio go test -race ./e2e/
//
// It needs age, minisign, tar, dcmdump and Debian's /usr/bin/python3 with
// python3-pydicom (to write the DICOM series); a missing one skips the
// test, or fails it under CI=true.
package e2e
