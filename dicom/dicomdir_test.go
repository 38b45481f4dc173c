package dicom_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	sdicom "github.com/suyashkumar/dicom"
	"github.com/suyashkumar/dicom/pkg/tag"

	"github.com/consilium/consilium/dicom"
	"github.com/consilium/consilium/internal/testenv"
)

// readHeader returns the File Meta and top-level elements of an instance,
// Pixel Data excluded.
func readHeader(t testing.TB, b []byte) (*dicom.FileMeta, []*dicom.Element) {
	t.Helper()
	rd, err := dicom.NewReader(bytes.NewReader(b), dicom.ReaderOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var header []*dicom.Element
	for {
		e, err := rd.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if e.Value != nil || e.IsSequence() {
			header = append(header, e)
		}
	}
	return rd.Meta(), header
}

// fileSet de-identifies the valid corpus, lays the outputs out under dir
// with a Directory, writes the DICOMDIR and returns its bytes and the file
// IDs by SOP Instance UID.
func fileSet(t *testing.T, dir string) ([]byte, map[string]string) {
	t.Helper()
	valid, _ := corpus(t)
	d := newDeidentifier(t, "basic,retain-long-modified-dates", keyedSource(t))
	set, err := dicom.NewDirectory(dicom.DirectoryOptions{FileSetID: "CONSILIUM_TEST"})
	if err != nil {
		t.Fatal(err)
	}
	ids := map[string]string{}
	for _, p := range valid {
		f, err := os.Open(p)
		if err != nil {
			t.Fatal(err)
		}
		var out bytes.Buffer
		_, err = d.Rewrite(context.Background(), &out, f, testKey)
		f.Close()
		if err != nil {
			// Bare datasets without File Meta are read with AllowNoMeta
			// and rewritten; anything else the corpus tests cover.
			t.Logf("%s: %v", rel(t, p), err)
			continue
		}
		meta, header := readHeader(t, out.Bytes())
		id, err := set.Add(meta, header)
		if errors.Is(err, dicom.ErrNotPlaceable) || errors.Is(err, dicom.ErrDuplicateInstance) {
			// Fragments without UIDs; files of the corpus that share a
			// SOP Instance UID (the same image in several syntaxes).
			t.Logf("%s: %v", rel(t, p), err)
			continue
		}
		if err != nil {
			t.Fatalf("%s: %v", rel(t, p), err)
		}
		if err := dicom.ValidFileID(id); err != nil {
			t.Fatal(err)
		}
		path := filepath.Join(append([]string{dir}, id...)...)
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, out.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
		ids[meta.MediaStorageSOPInstanceUID] = strings.Join(id, `\`)
		// The same instance again is refused.
		if _, err := set.Add(meta, header); !errors.Is(err, dicom.ErrDuplicateInstance) {
			t.Fatalf("second Add: %v, want ErrDuplicateInstance", err)
		}
	}
	if set.Len() < 30 || set.Len() != len(ids) {
		t.Fatalf("%d instances in the directory (%d ids), want at least 30", set.Len(), len(ids))
	}
	var buf bytes.Buffer
	n, err := set.WriteTo(&buf)
	if err != nil || n != int64(buf.Len()) {
		t.Fatalf("WriteTo: %d, %v (wrote %d)", n, err, buf.Len())
	}
	if err := os.WriteFile(filepath.Join(dir, "DICOMDIR"), buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes(), ids
}

func TestDirectoryCorpus(t *testing.T) {
	dir := t.TempDir()
	dd, ids := fileSet(t, dir)

	t.Run("offsets", func(t *testing.T) { checkOffsets(t, dd, len(ids)) })

	t.Run("suyashkumar", func(t *testing.T) {
		ds, err := sdicom.Parse(bytes.NewReader(dd), int64(len(dd)), nil)
		if err != nil {
			t.Fatal(err)
		}
		e, err := ds.FindElementByTag(tag.DirectoryRecordSequence)
		if err != nil {
			t.Fatal(err)
		}
		items := e.Value.GetValue().([]*sdicom.SequenceItemValue)
		types := map[string]int{}
		found := 0
		for _, it := range items {
			var typ, fileID, sop string
			for _, el := range it.GetValue().([]*sdicom.Element) {
				switch el.Tag {
				case tag.DirectoryRecordType:
					typ = strings.TrimSpace(el.Value.GetValue().([]string)[0])
				case tag.ReferencedFileID:
					fileID = strings.Join(el.Value.GetValue().([]string), `\`)
				case tag.ReferencedSOPInstanceUIDInFile:
					sop = strings.TrimRight(el.Value.GetValue().([]string)[0], "\x00 ")
				}
			}
			types[typ]++
			if fileID == "" {
				continue
			}
			found++
			if ids[sop] != fileID {
				t.Errorf("record for %s points at %q, want %q", sop, fileID, ids[sop])
			}
			if _, err := os.Stat(filepath.Join(dir, filepath.FromSlash(strings.ReplaceAll(fileID, `\`, "/")))); err != nil {
				t.Errorf("referenced file: %v", err)
			}
		}
		if found != len(ids) {
			t.Errorf("%d referencing records, want %d", found, len(ids))
		}
		for _, want := range []string{"PATIENT", "STUDY", "SERIES", "IMAGE", "SR DOCUMENT", "RT DOSE", "RT PLAN", "RT STRUCTURE SET", "WAVEFORM"} {
			if types[want] == 0 {
				t.Errorf("no %s record (have %v)", want, types)
			}
		}
	})

	t.Run("dcmdump", func(t *testing.T) {
		bin := testenv.LookPath(t, "dcmdump", "apt-get install dcmtk")
		out, err := exec.Command(bin, "-q", "--load-all", filepath.Join(dir, "DICOMDIR")).CombinedOutput()
		if err != nil {
			t.Fatalf("dcmdump: %v\n%s", err, out)
		}
		if !bytes.Contains(out, []byte("DirectoryRecordSequence")) {
			t.Fatalf("dcmdump output lacks the record sequence")
		}
		for _, l := range strings.Split(string(out), "\n") {
			if strings.HasPrefix(l, "E:") || strings.HasPrefix(l, "W:") {
				t.Errorf("dcmdump: %s", l)
			}
		}
	})

	t.Run("dciodvfy", func(t *testing.T) {
		bin := testenv.LookPath(t, "dciodvfy", "apt-get install dicom3tools")
		out, _ := exec.Command(bin, filepath.Join(dir, "DICOMDIR")).CombinedOutput()
		if !bytes.Contains(out, []byte("BasicDirectory")) {
			t.Fatalf("dciodvfy did not recognise a Basic Directory:\n%s", out)
		}
		for _, l := range strings.Split(string(out), "\n") {
			if strings.HasPrefix(l, "Error") {
				t.Errorf("dciodvfy: %s", l)
			}
		}
	})

	t.Run("dcmmkdir", func(t *testing.T) {
		// dcmmkdir, asked to append the file-set's own files, loads the
		// DICOMDIR through its record offsets and finds a record for every
		// instance; a broken offset makes it warn that it cannot resolve
		// it and add the instance again.
		bin := testenv.LookPath(t, "dcmmkdir", "apt-get install dcmtk")
		args := []string{"+A", "-nb", "-v", "+I", "-Nxc", "-Nec", "-Nrc", "+Nrs", "+id", dir, "+D", filepath.Join(dir, "DICOMDIR")}
		for _, id := range ids {
			args = append(args, strings.ReplaceAll(id, `\`, "/"))
		}
		out, err := exec.Command(bin, args...).CombinedOutput()
		if err != nil {
			t.Fatalf("dcmmkdir: %v\n%s", err, out)
		}
		if n := bytes.Count(out, []byte("directory record for this SOP instance already exists")); n != len(ids) {
			t.Errorf("dcmmkdir found %d of the %d instances in the DICOMDIR:\n%s", n, len(ids), out)
		}
		for _, l := range strings.Split(string(out), "\n") {
			if strings.HasPrefix(l, "E:") || strings.Contains(l, "resolve") {
				t.Errorf("dcmmkdir: %s", l)
			}
		}
	})
}

// checkOffsets walks the directory from the root offsets as a media reader
// does and checks that every record is reached exactly once, that every
// offset points at an item, and that the hierarchy is patient, study,
// series, instance.
func checkOffsets(t *testing.T, dd []byte, instances int) {
	rd, err := dicom.NewReader(bytes.NewReader(dd), dicom.ReaderOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var first, last uint32
	var items []*dicom.Item
	for {
		e, err := rd.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		switch e.Tag {
		case dicom.NewTag(0x0004, 0x1200):
			first = binary.LittleEndian.Uint32(e.Value)
		case dicom.NewTag(0x0004, 0x1202):
			last = binary.LittleEndian.Uint32(e.Value)
		case dicom.NewTag(0x0004, 0x1220):
			items = e.Items
		}
	}
	byOffset := map[uint32]*dicom.Item{}
	for _, it := range items {
		byOffset[uint32(it.Offset)] = it
	}
	get := func(it *dicom.Item, el uint16) *dicom.Element {
		return dicom.Find(it.Elements, dicom.NewTag(0x0004, el))
	}
	ul := func(it *dicom.Item, el uint16) uint32 { return binary.LittleEndian.Uint32(get(it, el).Value) }
	levels := []string{"PATIENT", "STUDY", "SERIES", ""}
	visited := map[uint32]bool{}
	leaves := 0
	var walk func(off uint32, depth int) uint32
	walk = func(off uint32, depth int) (lastOff uint32) {
		for off != 0 {
			it := byOffset[off]
			if it == nil {
				t.Fatalf("offset %d does not point at a record", off)
			}
			if visited[off] {
				t.Fatalf("record at %d reached twice", off)
			}
			visited[off] = true
			typ := get(it, 0x1430).String()
			if want := levels[depth]; want != "" && typ != want {
				t.Fatalf("record at depth %d is %s, want %s", depth, typ, want)
			}
			lower := ul(it, 0x1420)
			if depth == 3 {
				leaves++
				if lower != 0 || get(it, 0x1500) == nil {
					t.Fatalf("instance record at %d: lower %d, file ID %v", off, lower, get(it, 0x1500))
				}
			} else if lower == 0 {
				t.Fatalf("%s record at %d has no lower level", typ, off)
			} else {
				walk(lower, depth+1)
			}
			lastOff = off
			off = ul(it, 0x1400)
		}
		return lastOff
	}
	if got := walk(first, 0); got != last {
		t.Errorf("last root record at %d, the file says %d", got, last)
	}
	if len(visited) != len(items) || leaves != instances {
		t.Errorf("reached %d of %d records, %d instance records of %d", len(visited), len(items), leaves, instances)
	}
}

func TestDirectoryErrors(t *testing.T) {
	if _, err := dicom.NewDirectory(dicom.DirectoryOptions{FileSetID: "lower case"}); err == nil {
		t.Error("lower-case File-set ID accepted")
	}
	if _, err := dicom.NewDirectory(dicom.DirectoryOptions{Root: "TOO_LONG_ROOT"}); err == nil {
		t.Error("root of 13 characters accepted")
	}
	for _, id := range [][]string{nil, {"a"}, {""}, {"DICOM", "ABCDEFGHI"}, {"A", "B", "C", "D", "E", "F", "G", "H", "I"}, {"../X"}} {
		if dicom.ValidFileID(id) == nil {
			t.Errorf("ValidFileID(%q) = nil", id)
		}
	}
	d, err := dicom.NewDirectory(dicom.DirectoryOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := d.Add(&dicom.FileMeta{TransferSyntaxUID: dicom.ExplicitVRLittleEndian}, nil); !errors.Is(err, dicom.ErrNotPlaceable) {
		t.Errorf("Add of an empty header: %v, want ErrNotPlaceable", err)
	}
	// An empty directory is still a valid file.
	var buf bytes.Buffer
	if _, err := d.WriteTo(&buf); err != nil {
		t.Fatal(err)
	}
	if _, err := sdicom.Parse(bytes.NewReader(buf.Bytes()), int64(buf.Len()), nil); err != nil {
		t.Fatalf("empty DICOMDIR: %v", err)
	}
}

func TestRecordType(t *testing.T) {
	for uid, want := range map[string]string{
		"1.2.840.10008.5.1.4.1.1.2":       "IMAGE",
		"1.2.840.10008.5.1.4.1.1.66.4":    "IMAGE", // Segmentation
		"1.2.840.10008.5.1.4.1.1.66":      "RAW DATA",
		"1.2.840.10008.5.1.4.1.1.88.22":   "SR DOCUMENT",
		"1.2.840.10008.5.1.4.1.1.88.59":   "KEY OBJECT DOC",
		"1.2.840.10008.5.1.4.1.1.481.2":   "RT DOSE",
		"1.2.840.10008.5.1.4.1.1.104.1":   "ENCAP DOC",
		"1.2.840.10008.5.1.4.1.1.9.1.1":   "WAVEFORM",
		"1.2.840.10008.5.1.4.1.1.11.1":    "PRESENTATION",
		"1.2.840.10008.5.1.4.1.1.1.2":     "IMAGE",
		"1.2.840.10008.5.1.4.1.1.4810":    "IMAGE",
		"1.2.840.10008.5.1.4.1.1.481.5.9": "RT PLAN",
	} {
		if got := dicom.RecordType(uid); got != want {
			t.Errorf("RecordType(%s) = %q, want %q", uid, got, want)
		}
	}
}

func TestReportReadsBack(t *testing.T) {
	in := dicom.Report{Actions: []dicom.ActionCount{{Tag: dicom.NewTag(0x0010, 0x0010), Keyword: "PatientName", Rule: dicom.ActionZ, Applied: dicom.ActionZ, Count: 2}, {Tag: dicom.NewTag(0x7FE0, 0x0010), Rule: dicom.ActionXZU, Applied: dicom.ActionNone, Count: 1}}}
	b, err := json.Marshal(in)
	if err != nil {
		t.Fatal(err)
	}
	var out dicom.Report
	if err := json.Unmarshal(b, &out); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(in.Actions, out.Actions) {
		t.Errorf("read back %+v, want %+v", out.Actions, in.Actions)
	}
	var tg dicom.Tag
	for _, bad := range []string{"", "(0010,0010", "0010,0010)", "(001G,0010)", "(0010,0010)x"} {
		if tg.UnmarshalText([]byte(bad)) == nil {
			t.Errorf("tag %q accepted", bad)
		}
	}
	var a dicom.Action
	if a.UnmarshalText([]byte("Q")) == nil {
		t.Error("action Q accepted")
	}
}
