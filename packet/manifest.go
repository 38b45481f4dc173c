package packet

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"path"
	"strconv"
	"strings"
	"time"
)

// Format is the value of [Manifest.Format] this package writes and reads.
const Format = "consilium-packet/1"

// Names of the fixed files of a packet.
const (
	ManifestPath  = "manifest.json"
	SignaturePath = "manifest.json.minisig"
	BundlePath    = "fhir/bundle.json"
	ReceiptPath   = "deid-receipt.json"
	SummaryPath   = "summary.html"
	DICOMDIRPath  = "DICOMDIR"
)

// Media types of the files.
const (
	MediaHTML  = "text/html; charset=utf-8"
	MediaFHIR  = "application/fhir+json"
	MediaJSON  = "application/json"
	MediaDICOM = "application/dicom"
)

// Manifest is manifest.json: what the packet holds and what it is about.
// The gateway signs its exact bytes.
type Manifest struct {
	// Format is [Format].
	Format string `json:"format"`
	// PacketID identifies this packet (a random "2.25." UID).
	PacketID string `json:"packetId"`
	// Created is when the builder started.
	Created time.Time `json:"created"`
	// GatewayKeyID is the ID of the minisign key that signed the manifest,
	// 16 upper-case hexadecimal digits as minisign prints it.
	GatewayKeyID string `json:"gatewayKeyId"`
	// Case says what the specialist is asked.
	Case Case `json:"case"`
	// Deidentification says how the content was de-identified.
	Deidentification Deidentified `json:"deidentification"`
	// Files lists every file of the packet but the manifest and its
	// signature, in the order of the tar stream.
	Files []File `json:"files"`
	// Withheld lists what was left out, and why.
	Withheld []Withheld `json:"withheld"`
}

// Case is the case a packet is for. It holds no patient identifier.
type Case struct {
	// ID is the case's pseudonymous identifier.
	ID string `json:"id"`
	// Patient is the patient's pseudonym (the id of the de-identified FHIR
	// Patient and the DICOM Patient ID); the builder fills it in when it
	// de-identifies.
	Patient   string    `json:"patient,omitempty"`
	Question  string    `json:"question"`
	Specialty string    `json:"specialty"`
	Languages []string  `json:"languages,omitempty"`
	Deadline  time.Time `json:"deadline,omitzero"`
	// Recipient is the principal the packet is encrypted to.
	Recipient string `json:"recipient,omitempty"`
}

// Deidentified records the profiles and obligations applied.
type Deidentified struct {
	DICOM *Profile `json:"dicom,omitempty"`
	FHIR  *Profile `json:"fhir,omitempty"`
	// ExcludedLabels are the meta.security codes whose FHIR resources
	// were left out.
	ExcludedLabels []string `json:"excludedLabels,omitempty"`
	// BurnedInWithheld says whether instances that may show burned-in
	// text were left out.
	BurnedInWithheld bool `json:"burnedInWithheld"`
	// ResidualScan says whether every file was scanned for the patient's
	// original identifiers and whether anything was found (details in
	// deid-receipt.json).
	ResidualScan string `json:"residualScan"`
}

// Profile is a de-identification profile and its options.
type Profile struct {
	Name    string   `json:"name"`
	Options []string `json:"options,omitempty"`
}

// File is one file of the packet.
type File struct {
	// Path is the file's path in the packet: slash-separated, relative,
	// clean, of letters, digits and "._-".
	Path      string `json:"path"`
	Size      int64  `json:"size"`
	MediaType string `json:"mediaType"`
	// SHA256 is the lower-case hexadecimal SHA-256 of the content.
	SHA256 string `json:"sha256"`
}

// Withheld is something the packet leaves out.
type Withheld struct {
	// Kind is "dicom-instance", "fhir-resource" or a caller's kind.
	Kind   string `json:"kind"`
	Reason string `json:"reason"`
	// For a DICOM instance: its de-identified UIDs and modality.
	StudyInstanceUID  string `json:"studyInstanceUID,omitempty"`
	SeriesInstanceUID string `json:"seriesInstanceUID,omitempty"`
	SOPInstanceUID    string `json:"sopInstanceUID,omitempty"`
	Modality          string `json:"modality,omitempty"`
	// For FHIR resources: their type and how many.
	ResourceType string `json:"resourceType,omitempty"`
	Count        int    `json:"count,omitempty"`
}

// Residual scan states in [Deidentified.ResidualScan].
const (
	ScanClean = "clean"
	ScanHits  = "hits"
	ScanNone  = "not-run"
)

// KeyID formats a minisign key ID as minisign prints it.
func KeyID(id uint64) string { return fmt.Sprintf("%016X", id) }

// maxPathLen bounds a file path.
const maxPathLen = 255

// ValidPath reports whether p may name a file in a packet: relative,
// clean, slash-separated, at most 16 levels, each component of ASCII
// letters, digits, '.', '_' and '-' and not "." or ".."; this is what makes
// unpacking safe on every file system.
func ValidPath(p string) error {
	if p == "" || len(p) > maxPathLen {
		return fmt.Errorf("%w: path of %d bytes", ErrUnsafePath, len(p))
	}
	if path.Clean(p) != p || strings.HasPrefix(p, "/") {
		return fmt.Errorf("%w: %q is not a clean relative path", ErrUnsafePath, p)
	}
	parts := strings.Split(p, "/")
	if len(parts) > 16 {
		return fmt.Errorf("%w: %q is too deep", ErrUnsafePath, p)
	}
	for _, c := range parts {
		if c == "." || c == ".." || c == "" {
			return fmt.Errorf("%w: %q", ErrUnsafePath, p)
		}
		for i := 0; i < len(c); i++ {
			ch := c[i]
			if !('a' <= ch && ch <= 'z' || 'A' <= ch && ch <= 'Z' || '0' <= ch && ch <= '9' || ch == '.' || ch == '_' || ch == '-') {
				return fmt.Errorf("%w: %q has character %q", ErrUnsafePath, p, ch)
			}
		}
	}
	return nil
}

// ParseManifest parses and checks manifest.json: the format, every path,
// size and digest, and no duplicate or reserved paths. It does not check
// the signature.
func ParseManifest(b []byte) (*Manifest, error) {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	var m Manifest
	if err := dec.Decode(&m); err != nil {
		return nil, fmt.Errorf("%w: manifest: %v", ErrMalformed, err)
	}
	if dec.More() {
		return nil, fmt.Errorf("%w: manifest: data after the object", ErrMalformed)
	}
	if m.Format != Format {
		return nil, fmt.Errorf("%w: manifest format %q, want %q", ErrMalformed, m.Format, Format)
	}
	if _, err := strconv.ParseUint(m.GatewayKeyID, 16, 64); err != nil || len(m.GatewayKeyID) != 16 {
		return nil, fmt.Errorf("%w: manifest gateway key ID %q", ErrMalformed, m.GatewayKeyID)
	}
	seen := map[string]bool{ManifestPath: true, SignaturePath: true}
	for _, f := range m.Files {
		if err := ValidPath(f.Path); err != nil {
			return nil, fmt.Errorf("manifest: %w", err)
		}
		if seen[f.Path] {
			return nil, fmt.Errorf("%w: manifest lists %q twice or names a reserved file", ErrMalformed, f.Path)
		}
		seen[f.Path] = true
		if f.Size < 0 {
			return nil, fmt.Errorf("%w: manifest: negative size for %q", ErrMalformed, f.Path)
		}
		if d, err := hex.DecodeString(f.SHA256); err != nil || len(d) != 32 || strings.ToLower(f.SHA256) != f.SHA256 {
			return nil, fmt.Errorf("%w: manifest: bad SHA-256 for %q", ErrMalformed, f.Path)
		}
	}
	return &m, nil
}

// Errors of building and reading packets.
var (
	// ErrResidualIdentifiers is returned by [Build] with
	// Options.FailOnResidual when the residual scan finds an identifier.
	ErrResidualIdentifiers = errors.New("packet: residual identifiers found")
	// ErrBadSignature is returned when manifest.json does not verify with
	// the gateway's key.
	ErrBadSignature = errors.New("packet: manifest signature does not verify")
	// ErrIntegrity is returned when a file's size or SHA-256 differs from
	// the manifest, or a file is missing or not listed.
	ErrIntegrity = errors.New("packet: content does not match the manifest")
	// ErrUnsafePath is returned for a tar entry that is not a regular
	// file with a safe path.
	ErrUnsafePath = errors.New("packet: unsafe entry")
	// ErrTooLarge is returned when a limit of [Limits] is exceeded.
	ErrTooLarge = errors.New("packet: limit exceeded")
	// ErrMalformed is returned for a stream that is not a packet: a bad
	// tar stream, a missing or unparsable manifest, files in the wrong
	// order.
	ErrMalformed = errors.New("packet: malformed")
)
