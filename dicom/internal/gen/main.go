// Command gen writes dicom/tables_gen.go from the PS3.15 reference data:
// Table E.1-1 (dicom-confidentiality-profile.csv) and Table E.3.10-1
// (dicom-safe-private-tags.csv) in ../shared/reference. The VR of each
// attribute comes from github.com/suyashkumar/dicom's PS3.6 dictionary, and
// from the table below for attributes newer than that dictionary.
//
// It also writes dicom/dict_gen.go, that PS3.6 dictionary as a sorted
// static table (see dictSource).
//
// Run it with go generate ./dicom/; the dicom package's tests fail when the
// committed file is out of date.
package main

import (
	"bytes"
	"encoding/csv"
	"errors"
	"flag"
	"fmt"
	"go/format"
	"io"
	"log"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"

	"github.com/suyashkumar/dicom/pkg/tag"
)

// extraVRs gives the VR (PS3.6 2026d) of Table E.1-1 attributes that the
// dictionary of github.com/suyashkumar/dicom v1.1.0 does not have.
// Only the sequence/non-sequence distinction matters for reading implicit
// VR data; the exact VR matters only for attributes whose action writes a
// value (D, Z), and every attribute below whose VR is uncertain is X.
var extraVRs = map[uint32]string{
	0x00001000: "UI", // Affected SOP Instance UID
	0x00001001: "UI", // Requested SOP Instance UID
	0x00081301: "SQ", // Principal Diagnosis Code Sequence
	0x00081302: "SQ", // Primary Diagnosis Code Sequence
	0x00081303: "SQ", // Secondary Diagnoses Code Sequence
	0x00081304: "SQ", // Histological Diagnoses Code Sequence
	0x00100011: "SQ", // Person Names to Use Sequence
	0x00100012: "PN", // Name to Use
	0x00100013: "UT", // Name to Use Comment
	0x00100014: "SQ", // Third Person Pronouns Sequence
	0x00100015: "SQ", // Pronoun Code Sequence
	0x00100016: "UT", // Pronoun Comment
	0x00100041: "SQ", // Gender Identity Sequence
	0x00100042: "UT", // Sex Parameters for Clinical Use Category Comment
	0x00100043: "SQ", // Sex Parameters for Clinical Use Category Sequence
	0x00100044: "SQ", // Gender Identity Code Sequence
	0x00100045: "UT", // Gender Identity Comment
	0x00100046: "SQ", // Sex Parameters for Clinical Use Category Code Sequence
	0x00100047: "UR", // Sex Parameters for Clinical Use Category Reference
	0x00102161: "SQ", // Ethnic Group Code Sequence
	0x00102162: "UC", // Ethnic Groups
	0x0040A034: "DT", // Effective Start DateTime
	0x0040A035: "DT", // Effective Stop DateTime
	0x0040B034: "DT", // Annotation DateTime
	0x0040B036: "DT", // Segment Definition DateTime
	0x0040B03B: "LO", // Montage Name
	0x0040B03F: "LO", // Montage Channel Label
	0x0040E012: "UR", // Display URI
	0x3004007F: "LO", // Dose Calculation Model Name
	0x300A0054: "UI", // Table Top Position Alignment UID
}

// columns maps CSV option columns to the Go index constants in the dicom
// package.
var columns = []struct{ csv, goName string }{
	{"rtn_safe_private", "colSafePrivate"},
	{"rtn_uids", "colUIDs"},
	{"rtn_device_identity", "colDevice"},
	{"rtn_institution_identity", "colInstitution"},
	{"rtn_patient_characteristics", "colPatientChars"},
	{"rtn_long_full_dates", "colFullDates"},
	{"rtn_long_modified_dates", "colModifiedDates"},
	{"clean_descriptors", "colCleanDescriptors"},
	{"clean_structured_content", "colCleanStructured"},
	{"clean_graphics", "colCleanGraphics"},
}

var actions = map[string]string{
	"D": "ActionD", "Z": "ActionZ", "X": "ActionX", "K": "ActionK", "C": "ActionC", "U": "ActionU",
	"Z/D": "ActionZD", "X/Z": "ActionXZ", "X/D": "ActionXD", "X/Z/D": "ActionXZD", "X/Z/U*": "ActionXZU",
}

func main() {
	ref := flag.String("ref", "", "directory holding the reference CSV files (default: ../shared/reference next to the module)")
	out := flag.String("out", "tables_gen.go", "file to write")
	dictOut := flag.String("dict", "", "file to write the PS3.6 dictionary to (default: dict_gen.go next to -out)")
	flag.Parse()
	if *dictOut == "" {
		*dictOut = filepath.Join(filepath.Dir(*out), "dict_gen.go")
	}
	if *ref == "" {
		dir, err := defaultRef()
		if err != nil {
			log.Fatal(err)
		}
		*ref = dir
	}
	src, err := generate(*ref)
	if err != nil {
		log.Fatal(err)
	}
	if err := os.WriteFile(*out, src, 0o644); err != nil {
		log.Fatal(err)
	}
	dict, err := generateDict()
	if err != nil {
		log.Fatal(err)
	}
	if err := os.WriteFile(*dictOut, dict, 0o644); err != nil {
		log.Fatal(err)
	}
}

// defaultRef finds ../shared/reference beside the directory holding go.mod.
func defaultRef() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return filepath.Join(dir, "..", "shared", "reference"), nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("gen: go.mod not found")
		}
		dir = parent
	}
}

func readCSV(path string) ([]map[string]string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	r := csv.NewReader(f)
	r.Comment = '#'
	head, err := r.Read()
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	var rows []map[string]string
	for {
		rec, err := r.Read()
		if err == io.EOF {
			return rows, nil
		}
		if err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		row := map[string]string{}
		for i, h := range head {
			row[h] = strings.TrimSpace(rec[i])
		}
		rows = append(rows, row)
	}
}

func vrOf(t uint32) (string, error) {
	if vr, ok := extraVRs[t]; ok {
		return vr, nil
	}
	info, err := tag.Find(tag.Tag{Group: uint16(t >> 16), Element: uint16(t)})
	if err != nil {
		return "", fmt.Errorf("no VR for (%04X,%04X): add it to extraVRs", t>>16, t&0xFFFF)
	}
	return info.VRs[0], nil
}

func rule(w io.Writer, row map[string]string, vr string) error {
	basic, ok := actions[row["basic_profile"]]
	if !ok {
		return fmt.Errorf("%s: unknown basic action %q", row["tag"], row["basic_profile"])
	}
	fmt.Fprintf(w, "{keyword: %q, vr: %q, basic: %s", row["keyword"], vr, basic)
	var opts []string
	for _, c := range columns {
		v := row[c.csv]
		if v == "" {
			continue
		}
		a, ok := actions[v]
		if !ok {
			return fmt.Errorf("%s: unknown %s action %q", row["tag"], c.csv, v)
		}
		opts = append(opts, c.goName+": "+a)
	}
	if len(opts) > 0 {
		fmt.Fprintf(w, ", opts: [numCols]Action{%s}", strings.Join(opts, ", "))
	}
	fmt.Fprint(w, "}")
	return nil
}

func generate(ref string) ([]byte, error) {
	profile, err := readCSV(filepath.Join(ref, "dicom-confidentiality-profile.csv"))
	if err != nil {
		return nil, err
	}
	safe, err := readCSV(filepath.Join(ref, "dicom-safe-private-tags.csv"))
	if err != nil {
		return nil, err
	}
	var b bytes.Buffer
	fmt.Fprint(&b, `// Code generated by go run ./internal/gen from ../shared/reference; DO NOT EDIT.

// DICOM PS3.15 2026d, (c) NEMA. Table E.1-1 (Application Level
// Confidentiality Profile Attributes) and Table E.3.10-1 (Safe Private
// Attributes).

package dicom

import (
	"cmp"
	"slices"
	"strings"
)

`)
	fmt.Fprintln(&b, `// profileRule returns the single-tag row of Table E.1-1 for t. It runs
// several times per element: the binary search is written out, which
// makes it several times faster than with a comparison function.
func profileRule(t Tag) (rule, bool) {
	lo, hi := 0, len(profileRules)
	for lo < hi {
		m := int(uint(lo+hi) >> 1)
		if profileRules[m].tag < t {
			lo = m + 1
		} else {
			hi = m
		}
	}
	if lo < len(profileRules) && profileRules[lo].tag == t {
		return profileRules[lo].rule, true
	}
	return rule{}, false
}

// taggedRule is a single-tag row of Table E.1-1.
type taggedRule struct {
	tag Tag
	rule
}

// profileRules holds the single-tag rows of Table E.1-1, sorted by tag. A
// static table, unlike a map, costs nothing when the program starts.`)
	fmt.Fprintln(&b, "var profileRules = [...]taggedRule{")
	var special []string
	n := 0
	// Exact rows first, by tag (the table lists them by tag already).
	sort.SliceStable(profile, func(i, j int) bool {
		ei, ej := profile[i]["match"] == "exact", profile[j]["match"] == "exact"
		if ei != ej {
			return ei
		}
		return ei && strings.ToUpper(profile[i]["tag_hex"]) < strings.ToUpper(profile[j]["tag_hex"])
	})
	for _, row := range profile {
		switch row["match"] {
		case "exact":
			t, err := strconv.ParseUint(row["tag_hex"], 16, 32)
			if err != nil {
				return nil, fmt.Errorf("tag %q: %w", row["tag_hex"], err)
			}
			vr, err := vrOf(uint32(t))
			if err != nil {
				return nil, err
			}
			fmt.Fprintf(&b, "\t{0x%08X, rule", t)
			if err := rule(&b, row, vr); err != nil {
				return nil, err
			}
			fmt.Fprintf(&b, "}, // %s\n", row["name"])
			n++
		case "repeating_group", "private_odd_group":
			var name, vr string
			switch row["tag_hex"] {
			case "50xxxxxx":
				name, vr = "curveRule", ""
			case "60xx3000":
				name, vr = "overlayDataRule", "OW"
			case "60xx4000":
				name, vr = "overlayCommentsRule", "LT"
			case "gggg odd":
				name, vr = "privateRule", ""
			default:
				return nil, fmt.Errorf("unknown pattern row %q", row["tag_hex"])
			}
			var s bytes.Buffer
			fmt.Fprintf(&s, "// %s is the row %s %s.\nvar %s = rule", name, row["tag"], row["name"], name)
			if err := rule(&s, row, vr); err != nil {
				return nil, err
			}
			special = append(special, s.String())
		default:
			return nil, fmt.Errorf("unknown match %q", row["match"])
		}
	}
	fmt.Fprintln(&b, "}")
	fmt.Fprintln(&b)
	sort.Strings(special)
	for _, s := range special {
		fmt.Fprintln(&b, s)
		fmt.Fprintln(&b)
	}
	if n != 653 || len(special) != 4 {
		return nil, fmt.Errorf("table E.1-1: %d single-tag rows and %d pattern rows, want 653 and 4", n, len(special))
	}

	type safeRow struct {
		key privateKeyGen
		vr  string
	}
	var rows []safeRow
	for _, row := range safe {
		g, err := strconv.ParseUint(row["group"], 16, 16)
		if err != nil {
			return nil, fmt.Errorf("safe private group %q: %w", row["group"], err)
		}
		e, err := strconv.ParseUint(row["element_low_byte"], 16, 8)
		if err != nil {
			return nil, fmt.Errorf("safe private element %q: %w", row["element_low_byte"], err)
		}
		rows = append(rows, safeRow{privateKeyGen{uint16(g), row["private_creator"], uint8(e)}, row["vr"]})
	}
	sort.SliceStable(rows, func(i, j int) bool { return rows[i].key.less(rows[j].key) })
	fmt.Fprintln(&b, `// safePrivateTag returns the VR of a safe private attribute (Table
// E.3.10-1), or false.
func safePrivateTag(k privateKey) (string, bool) {
	i, ok := slices.BinarySearchFunc(safePrivateTags[:], k, func(e safePrivateEntry, k privateKey) int { return comparePrivateKeys(e.key, k) })
	if !ok {
		return "", false
	}
	return safePrivateTags[i].vr, true
}

// comparePrivateKeys orders private keys by group, private creator and
// element low byte.
func comparePrivateKeys(a, b privateKey) int {
	return cmp.Or(cmp.Compare(a.group, b.group), strings.Compare(a.creator, b.creator), cmp.Compare(a.elem, b.elem))
}

// safePrivateEntry is a row of Table E.3.10-1.
type safePrivateEntry struct {
	key privateKey
	vr  string
}

// safePrivateTags holds Table E.3.10-1, sorted by group, private creator
// and element low byte (see comparePrivateKeys).`)
	fmt.Fprintln(&b, "var safePrivateTags = [...]safePrivateEntry{")
	for _, r := range rows {
		fmt.Fprintf(&b, "\t{privateKey{group: 0x%04X, creator: %q, elem: 0x%02X}, %q},\n", r.key.group, r.key.creator, r.key.elem, r.vr)
	}
	fmt.Fprintln(&b, "}")
	return format.Source(b.Bytes())
}

// privateKeyGen mirrors the dicom package's privateKey; less orders as
// its comparePrivateKeys does.
type privateKeyGen struct {
	group   uint16
	creator string
	elem    uint8
}

func (a privateKeyGen) less(b privateKeyGen) bool {
	if a.group != b.group {
		return a.group < b.group
	}
	if a.creator != b.creator {
		return a.creator < b.creator
	}
	return a.elem < b.elem
}

// dictModule is the module whose PS3.6 dictionary dict_gen.go copies.
const dictModule = "github.com/suyashkumar/dicom"

// dictSource returns the source of the tag package's definitions. That
// package keeps its dictionary in an unexported map that it fills when a
// program starts (4 to 10 ms and 900 KB for every run of the CLI, measured
// with GODEBUG=inittrace=1) and has no way to list it, so the generator
// lists the tags from the Go source of the module version in go.mod and
// asks tag.Find about each.
func dictSource() (src []byte, version string, err error) {
	out, err := exec.Command("go", "list", "-m", "-f", "{{.Dir}} {{.Version}}", dictModule).Output()
	if err != nil {
		return nil, "", fmt.Errorf("locating %s: %w", dictModule, err)
	}
	dir, version, _ := strings.Cut(strings.TrimSpace(string(out)), " ")
	src, err = os.ReadFile(filepath.Join(dir, "pkg", "tag", "tag_definitions.go"))
	return src, version, err
}

var tagVar = regexp.MustCompile(`(?m)^var \w+ = Tag\{0x([0-9a-fA-F]{4}), 0x([0-9a-fA-F]{4})\}$`)

// implicitVR picks, from the VRs PS3.6 allows for an attribute, the one
// Implicit VR Little Endian data is read with: OW where OB or OW (and US,
// SS or OW) is allowed, else the first (US for US or SS); UN for none.
func implicitVR(vrs []string) string {
	for _, vr := range vrs {
		if vr == "OW" {
			return "OW"
		}
	}
	if len(vrs) == 0 || vrs[0] == "NA" || vrs[0] == "" {
		return "UN"
	}
	return vrs[0]
}

// generateDict writes dict_gen.go: every attribute of the tag package's
// dictionary with its implicit VR and keyword, sorted by tag.
func generateDict() ([]byte, error) {
	src, version, err := dictSource()
	if err != nil {
		return nil, err
	}
	seen := map[uint32]bool{}
	var tags []uint32
	for _, m := range tagVar.FindAllSubmatch(src, -1) {
		g, _ := strconv.ParseUint(string(m[1]), 16, 16)
		e, _ := strconv.ParseUint(string(m[2]), 16, 16)
		t := uint32(g)<<16 | uint32(e)
		if !seen[t] {
			seen[t] = true
			tags = append(tags, t)
		}
	}
	sort.Slice(tags, func(i, j int) bool { return tags[i] < tags[j] })
	var b bytes.Buffer
	fmt.Fprintf(&b, `// Code generated by go run ./internal/gen from %s %s; DO NOT EDIT.

// The PS3.6 data dictionary of github.com/suyashkumar/dicom (MIT), which
// derives it from innolitics/dicom-standard (MIT, (c) 2017 Innolitics, LLC).

package dicom

// dictionary holds every attribute of the PS3.6 data dictionary, sorted by
// tag, with the VR Implicit VR Little Endian data is read with (see
// implicitVR in internal/gen) and its keyword. Repeating groups (50xx,
// 60xx) are listed under their first group. Being a static table, it costs
// nothing when the program starts.
var dictionary = [...]dictEntry{
`, dictModule, version)
	n := 0
	for _, t := range tags {
		info, err := tag.Find(tag.Tag{Group: uint16(t >> 16), Element: uint16(t)})
		if err != nil {
			continue // declared but not in the dictionary
		}
		fmt.Fprintf(&b, "\t{0x%08X, %q, %q},\n", t, implicitVR(info.VRs), info.Keyword)
		n++
	}
	fmt.Fprintln(&b, "}")
	if n < 5000 {
		return nil, fmt.Errorf("dictionary: %d attributes found in %s, want over 5000", n, dictModule)
	}
	return format.Source(b.Bytes())
}
