package dicom

import (
	"testing"

	"github.com/suyashkumar/dicom/pkg/tag"
)

// TestDictionary checks the static dictionary against the library it is
// generated from, and the lookups built on it.
func TestDictionary(t *testing.T) {
	for i, d := range dictionary {
		if i > 0 && dictionary[i-1].tag >= d.tag {
			t.Fatalf("dictionary not sorted at %v", d.tag)
		}
		info, err := tag.Find(tag.Tag{Group: d.tag.Group(), Element: d.tag.Element()})
		if err != nil {
			t.Fatalf("%v: not in the library's dictionary: %v", d.tag, err)
		}
		if info.Keyword != d.keyword {
			t.Errorf("%v: keyword %q, library says %q", d.tag, d.keyword, info.Keyword)
		}
		want := "UN"
		if len(info.VRs) > 0 && info.VRs[0] != "NA" {
			want = info.VRs[0]
		}
		for _, vr := range info.VRs {
			if vr == "OW" {
				want = "OW"
			}
		}
		if d.vr != want {
			t.Errorf("%v: VR %q, library says %v", d.tag, d.vr, info.VRs)
		}
	}
	for i := 1; i < len(profileRules); i++ {
		if profileRules[i-1].tag >= profileRules[i].tag {
			t.Fatalf("profileRules not sorted at %v", profileRules[i].tag)
		}
	}
	for _, r := range profileRules {
		if got, ok := profileRule(r.tag); !ok || got != r.rule {
			t.Errorf("profileRule(%v) = %v, %v", r.tag, got, ok)
		}
	}
	for i := 1; i < len(safePrivateTags); i++ {
		if comparePrivateKeys(safePrivateTags[i-1].key, safePrivateTags[i].key) >= 0 {
			t.Fatalf("safePrivateTags not sorted at %+v", safePrivateTags[i].key)
		}
	}
	for _, e := range safePrivateTags {
		if vr, ok := safePrivateTag(e.key); !ok || vr != e.vr {
			t.Errorf("safePrivateTag(%+v) = %q, %v", e.key, vr, ok)
		}
	}
	if _, ok := safePrivateTag(privateKey{group: 0x0019, creator: "GEMS_ACQU_01", elem: 0x22}); ok {
		t.Error("(0019,xx22) GEMS_ACQU_01 is not in Table E.3.10-1")
	}
	tests := []struct {
		tag     Tag
		vr      string
		keyword string
	}{
		{tagPixelData, "OW", "PixelData"},             // OB or OW
		{0x00280106, "US", "SmallestImagePixelValue"}, // US or SS
		{tagPatientName, "PN", "PatientName"},
		{0x00081110, "SQ", "ReferencedStudySequence"},
		{0x60023000, "OW", "OverlayData"}, // repeating group
		{0x501E0010, "US", "NumberOfPoints"},
		{0x00100000, "UL", "GenericGroupLength"},
		{0x00020000, "UL", "FileMetaInformationGroupLength"},
		{0x00091010, "UN", ""},                         // private
		{0x00090010, "LO", ""},                         // private creator
		{0x00080003, "UN", ""},                         // unknown
		{0xFFFFFFFF, "UN", ""},                         // past the end of the table
		{0x00000001, "UN", ""},                         // before its start
		{0x00100011, "SQ", "PersonNamesToUseSequence"}, // Table E.1-1, newer than the library
	}
	for _, tt := range tests {
		t.Run(tt.tag.String(), func(t *testing.T) {
			if got := lookupVR(uint32(tt.tag)); got != tt.vr {
				t.Errorf("lookupVR = %q, want %q", got, tt.vr)
			}
			if got := tt.tag.Keyword(); got != tt.keyword {
				t.Errorf("Keyword = %q, want %q", got, tt.keyword)
			}
		})
	}
}
