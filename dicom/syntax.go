package dicom

import "github.com/consilium/consilium/dicom/internal/wire"

// Transfer syntax UIDs this package handles specially.
const (
	ImplicitVRLittleEndian         = "1.2.840.10008.1.2"
	ExplicitVRLittleEndian         = "1.2.840.10008.1.2.1"
	DeflatedExplicitVRLittleEndian = "1.2.840.10008.1.2.1.99"
	ExplicitVRBigEndian            = "1.2.840.10008.1.2.2"
)

// TransferSyntax describes how a dataset is encoded.
type TransferSyntax struct {
	// UID is the Transfer Syntax UID.
	UID string
	// Implicit and BigEndian give the element encoding.
	Implicit, BigEndian bool
	// Deflated means the dataset after the File Meta group is a raw
	// DEFLATE stream.
	Deflated bool
	// Encapsulated means Pixel Data holds compressed fragments.
	Encapsulated bool
}

func (ts TransferSyntax) wire() wire.Syntax {
	return wire.Syntax{Implicit: ts.Implicit, BigEndian: ts.BigEndian}
}

// encapsulated lists the encapsulated (compressed or otherwise
// fragment-encoded) transfer syntaxes of PS3.5 Table A-1 (2026). All of
// them use Explicit VR Little Endian for the dataset.
var encapsulated = map[string]bool{
	"1.2.840.10008.1.2.1.98": true, // Encapsulated Uncompressed Explicit VR Little Endian
	"1.2.840.10008.1.2.4.50": true, // JPEG Baseline
	"1.2.840.10008.1.2.4.51": true, // JPEG Extended
	"1.2.840.10008.1.2.4.52": true, "1.2.840.10008.1.2.4.53": true, "1.2.840.10008.1.2.4.54": true,
	"1.2.840.10008.1.2.4.55": true, "1.2.840.10008.1.2.4.56": true, "1.2.840.10008.1.2.4.57": true,
	"1.2.840.10008.1.2.4.58": true, "1.2.840.10008.1.2.4.59": true, "1.2.840.10008.1.2.4.60": true,
	"1.2.840.10008.1.2.4.61": true, "1.2.840.10008.1.2.4.62": true, "1.2.840.10008.1.2.4.63": true,
	"1.2.840.10008.1.2.4.64": true, "1.2.840.10008.1.2.4.65": true, "1.2.840.10008.1.2.4.66": true,
	"1.2.840.10008.1.2.4.70": true,                                 // JPEG Lossless SV1
	"1.2.840.10008.1.2.4.80": true,                                 // JPEG-LS Lossless
	"1.2.840.10008.1.2.4.81": true,                                 // JPEG-LS Near-Lossless
	"1.2.840.10008.1.2.4.90": true,                                 // JPEG 2000 Lossless
	"1.2.840.10008.1.2.4.91": true,                                 // JPEG 2000
	"1.2.840.10008.1.2.4.92": true, "1.2.840.10008.1.2.4.93": true, // JPEG 2000 Part 2
	"1.2.840.10008.1.2.4.94": true, "1.2.840.10008.1.2.4.95": true, // JPIP
	"1.2.840.10008.1.2.4.100": true, "1.2.840.10008.1.2.4.100.1": true, // MPEG2
	"1.2.840.10008.1.2.4.101": true, "1.2.840.10008.1.2.4.101.1": true,
	"1.2.840.10008.1.2.4.102": true, "1.2.840.10008.1.2.4.102.1": true, // MPEG-4
	"1.2.840.10008.1.2.4.103": true, "1.2.840.10008.1.2.4.103.1": true,
	"1.2.840.10008.1.2.4.104": true, "1.2.840.10008.1.2.4.104.1": true,
	"1.2.840.10008.1.2.4.105": true, "1.2.840.10008.1.2.4.105.1": true,
	"1.2.840.10008.1.2.4.106": true, "1.2.840.10008.1.2.4.106.1": true,
	"1.2.840.10008.1.2.4.107": true, "1.2.840.10008.1.2.4.108": true, // HEVC
	"1.2.840.10008.1.2.4.110": true, "1.2.840.10008.1.2.4.111": true, "1.2.840.10008.1.2.4.112": true, // JPEG XL
	"1.2.840.10008.1.2.4.201": true, "1.2.840.10008.1.2.4.202": true, "1.2.840.10008.1.2.4.203": true, // HTJ2K
	"1.2.840.10008.1.2.4.204": true, "1.2.840.10008.1.2.4.205": true, // HTJ2K (2025)
	"1.2.840.10008.1.2.5":   true, // RLE Lossless
	"1.2.840.10008.1.2.8.1": true, // Deflated Image Frame Compression
}

// LookupTransferSyntax returns the encoding of a Transfer Syntax UID and
// whether this package can read it. Private transfer syntaxes are not
// supported: their encoding is unknown.
func LookupTransferSyntax(uid string) (TransferSyntax, bool) {
	switch uid {
	case ImplicitVRLittleEndian:
		return TransferSyntax{UID: uid, Implicit: true}, true
	case ExplicitVRLittleEndian:
		return TransferSyntax{UID: uid}, true
	case DeflatedExplicitVRLittleEndian:
		return TransferSyntax{UID: uid, Deflated: true}, true
	case ExplicitVRBigEndian:
		return TransferSyntax{UID: uid, BigEndian: true}, true
	}
	if encapsulated[uid] {
		return TransferSyntax{UID: uid, Encapsulated: true}, true
	}
	return TransferSyntax{UID: uid}, false
}
