package dicom

import (
	"fmt"
	"slices"
	"strings"
)

// BurnedInRules decide which instances are reported as possibly carrying
// burned-in text in their pixels. An instance is flagged when Burned In
// Annotation (0028,0301) is YES, or when it is absent and the modality or
// SOP class is listed. Masking the text is not done: a packet withholds
// flagged instances.
type BurnedInRules struct {
	// Modalities that commonly burn text into the pixels.
	Modalities []string
	// SOPClasses whose instances are screen captures or documents. A SOP
	// Class UID matches an entry equal to it or starting with the entry
	// followed by a dot.
	SOPClasses []string
}

// DefaultBurnedInRules flags ultrasound, angiography and fluoroscopy,
// photography and endoscopy (US, XA, RF, XC, ES, GM, OP, DOC, OT), every
// Secondary Capture class, video, and encapsulated documents (PDF, CDA,
// STL, OBJ, MTL).
func DefaultBurnedInRules() BurnedInRules {
	return BurnedInRules{
		Modalities: []string{"US", "XA", "RF", "XC", "ES", "GM", "OP", "DOC", "OT"},
		SOPClasses: []string{
			"1.2.840.10008.5.1.4.1.1.7",        // Secondary Capture (and the multi-frame ones, .7.1-.7.4)
			"1.2.840.10008.5.1.4.1.1.104",      // Encapsulated PDF, CDA, STL, OBJ, MTL (.104.1-.104.5)
			"1.2.840.10008.5.1.4.1.1.77.1.1.1", // Video Endoscopic
			"1.2.840.10008.5.1.4.1.1.77.1.2.1", // Video Microscopic
			"1.2.840.10008.5.1.4.1.1.77.1.4.1", // Video Photographic
			"1.2.840.10008.5.1.4.1.1.77.1.4",   // VL Photographic
		},
	}
}

// check returns whether the instance may carry burned-in text, and why.
func (b BurnedInRules) check(s *Summary) (bool, string) {
	switch s.BurnedInAnnotation {
	case "YES":
		return true, "Burned In Annotation is YES"
	case "NO":
		return false, ""
	}
	for _, c := range b.SOPClasses {
		if s.SOPClassUID == c || strings.HasPrefix(s.SOPClassUID, c+".") {
			return true, fmt.Sprintf("Burned In Annotation absent for SOP class %s", s.SOPClassUID)
		}
	}
	if !s.HasPixelData {
		return false, ""
	}
	if slices.Contains(b.Modalities, strings.ToUpper(s.Modality)) {
		return true, fmt.Sprintf("Burned In Annotation absent for modality %s", s.Modality)
	}
	return false, ""
}
