package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"

	"github.com/consilium/consilium/deid"
	"github.com/consilium/consilium/dicom"
	"github.com/consilium/consilium/fhir"
)

const deidUsage = `Usage:
  consilium deid dicom --profile basic[,option...] --secret-file F --out DIR FILE_OR_DIR...
  consilium deid fhir  --profile shifted|safe-harbor[,keep-free-text] --secret-file F --out FILE_OR_DIR FILE_OR_DIR...

De-identifies DICOM instances (PS3.15 Annex E) or FHIR R4 resources, bundles
and NDJSON files, with pseudonyms derived from a secret (HMAC-SHA256): the
same secret gives the same pseudonym, date shift and UIDs in every run.

The secret file holds at least 32 bytes (for example: head -c 32 /dev/urandom
> secret); CONSILIUM_DEID_SECRET_FILE names it when --secret-file is not given.

Patient key: DICOM uses the Patient ID (else the Study Instance UID); FHIR the
Patient's MR identifier (else Patient.id). A study and a bundle of one patient
get the same pseudonym and date shift when the hospital's MRN is the DICOM
Patient ID; --patient-key overrides both for every input.

DICOM options: retain-long-modified-dates retain-long-full-dates
retain-patient-chars retain-device-id retain-institution-id retain-uids
retain-safe-private clean-descriptors clean-structured-content.

Outputs carry no identifiers in their names: DICOM files are named by their
new SOP Instance UID; FHIR outputs are numbered in input order. The summary
says what was removed, withheld (burned-in text, excluded resources) and why;
the exit status is 1 when any input failed.
`

func deidCommand(ctx context.Context, env *cli, args []string) error {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" {
		fmt.Fprint(env.stderr, deidUsage)
		if len(args) == 0 {
			return usagef("want dicom or fhir")
		}
		return flag.ErrHelp
	}
	kind := args[0]
	fset := flag.NewFlagSet("deid "+kind, flag.ContinueOnError)
	fset.SetOutput(env.stderr)
	fset.Usage = func() { fmt.Fprint(env.stderr, deidUsage, "\nFlags:\n"); fset.PrintDefaults() }
	profile := fset.String("profile", "", "profile and options, comma-separated (dicom: basic; fhir: shifted or safe-harbor)")
	secretFile := fset.String("secret-file", "", "file holding the pseudonym secret (env CONSILIUM_DEID_SECRET_FILE)")
	out := fset.String("out", "", "output directory (fhir: or file, for one input)")
	patientKey := fset.String("patient-key", "", "patient key for every input, instead of the one read from the data")
	labels := fset.String("exclude-labels", "", "fhir: more meta.security codes whose resources are excluded (besides PSY,HIV,ETH,SEX)")
	jobs := fset.Int("jobs", runtime.GOMAXPROCS(0), "dicom: files de-identified in parallel")
	if err := fset.Parse(args[1:]); err != nil {
		return err
	}
	if *secretFile == "" {
		*secretFile = env.getenv("CONSILIUM_DEID_SECRET_FILE")
	}
	switch {
	case kind != "dicom" && kind != "fhir":
		return usagef("unknown kind %q: want dicom or fhir", kind)
	case *secretFile == "":
		return usagef("--secret-file is required")
	case *out == "":
		return usagef("--out is required")
	case fset.NArg() == 0:
		return usagef("no input files")
	case *jobs < 1:
		return usagef("--jobs must be at least 1")
	}
	secret, err := os.ReadFile(*secretFile)
	if err != nil {
		return fmt.Errorf("reading the secret: %w", err)
	}
	src, err := deid.NewKeyed(secret, deid.KeyedOptions{})
	if err != nil {
		return err
	}
	if kind == "dicom" {
		p, err := deid.ParseDICOMProfile(*profile)
		if err != nil {
			return usagef("%v", err)
		}
		return deidDICOM(ctx, env, p, newMemoSource(src), *out, *patientKey, *jobs, fset.Args())
	}
	if *profile == "" {
		*profile = deid.Shifted
	}
	p, err := deid.ParseFHIRProfile(*profile)
	if err != nil {
		return usagef("%v", err)
	}
	var extra []string
	if *labels != "" {
		extra = strings.Split(*labels, ",")
	}
	return deidFHIR(ctx, env, p, src, *out, *patientKey, extra, fset.Args())
}

// inputs expands files and directories (recursively) into files, sorted;
// keep says which files of a directory to take.
func inputs(args []string, keep func(string) bool) ([]string, error) {
	var files []string
	for _, a := range args {
		fi, err := os.Stat(a)
		if err != nil {
			return nil, err
		}
		if !fi.IsDir() {
			files = append(files, a)
			continue
		}
		err = filepath.WalkDir(a, func(p string, d fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			if strings.HasPrefix(d.Name(), ".") && p != a {
				if d.IsDir() {
					return filepath.SkipDir
				}
				return nil
			}
			if d.Type().IsRegular() && keep(p) {
				files = append(files, p)
			}
			return nil
		})
		if err != nil {
			return nil, err
		}
	}
	sort.Strings(files)
	return files, nil
}

type dicomResult struct {
	in, out string
	rep     *dicom.Report // without its Actions: see actions
	keyNote string
	err     error
	// actions counts the attributes by the action applied (indexed by
	// dicom.Action), all the summary needs of rep.Actions; keeping every
	// report's per-attribute list until the end grew the heap by 5 KB per
	// file.
	actions [16]int
	removed int
}

func deidDICOM(ctx context.Context, env *cli, p deid.Profile, src deid.Source, outDir, key string, jobs int, args []string) error {
	files, err := inputs(args, func(string) bool { return true })
	if err != nil {
		return err
	}
	if err := os.MkdirAll(outDir, 0o755); err != nil {
		return err
	}
	d, err := dicom.NewDeidentifier(dicom.Options{Profile: p, Source: src, Reader: dicom.ReaderOptions{AllowNoMeta: true}})
	if err != nil {
		return err
	}
	results := make([]dicomResult, len(files))
	names := &outNames{taken: map[string]bool{}}
	// Workers take the next file from a counter: a channel hand-off per file
	// parked and woke goroutines (and threads) hundreds of times a series.
	var next atomic.Int64
	work := func() {
		for {
			i := int(next.Add(1) - 1)
			if i >= len(files) {
				return
			}
			if err := ctx.Err(); err != nil {
				results[i] = dicomResult{in: files[i], err: err}
				continue
			}
			results[i] = deidOneDICOM(ctx, d, files[i], outDir, key, names)
		}
	}
	var wg sync.WaitGroup
	for range min(jobs, len(files)) - 1 {
		wg.Go(work)
	}
	work()
	wg.Wait()

	// One write for the whole summary, not two per instance.
	stdout := bufio.NewWriter(env.stdout)
	defer stdout.Flush()
	var failed, withheld, removed, done int
	var byAction [16]int
	for _, r := range results {
		switch {
		case r.err != nil:
			failed++
			fmt.Fprintf(stdout, "FAIL     %s: %v\n", r.in, r.err)
			continue
		case r.rep.BurnedIn:
			withheld++
			fmt.Fprintf(stdout, "WITHHOLD %s -> %s: %s\n", r.in, r.out, r.rep.BurnedInReason)
		default:
			fmt.Fprintf(stdout, "ok       %s -> %s\n", r.in, r.out)
		}
		removed += r.removed
		done++
		for a, n := range r.actions {
			byAction[a] += n
		}
		if r.keyNote != "" {
			fmt.Fprintf(stdout, "         %s\n", r.keyNote)
		}
		if len(r.rep.Problems) > 0 {
			fmt.Fprintf(stdout, "         input defects (fixed or kept): %v\n", r.rep.Problems)
		}
	}
	fmt.Fprintf(stdout, "\nprofile %s: %d de-identified, %d may show burned-in text (withhold them), %d failed\n", p, done, withheld, failed)
	fmt.Fprintf(stdout, "attributes removed or emptied: %d; by action:\n", removed)
	for _, a := range []dicom.Action{dicom.ActionX, dicom.ActionZ, dicom.ActionD, dicom.ActionU, dicom.ActionC, dicom.ActionK} {
		if byAction[a] > 0 {
			fmt.Fprintf(stdout, "  %-2s %d\n", a, byAction[a])
		}
	}
	if failed > 0 {
		return fmt.Errorf("%d of %d inputs failed", failed, len(files))
	}
	return nil
}

// memoSource remembers what a source said: a series repeats its patient
// and most of its UIDs (study, series, frame of reference, references) in
// every instance, and deriving each again was a dozen HMACs per instance.
// A Source gives the same answers for the same patient key and original
// UIDs (see deid.Source), so this changes no output. It forgets everything
// when it holds memoMax entries.
type memoSource struct {
	src      deid.Source
	mu       sync.Mutex
	patients map[string]deid.Patient
	uids     map[[2]string]string // {patient key, original}
}

const memoMax = 4096

func newMemoSource(src deid.Source) *memoSource {
	return &memoSource{src: src, patients: map[string]deid.Patient{}, uids: map[[2]string]string{}}
}

func (m *memoSource) Patient(ctx context.Context, key string) (deid.Patient, error) {
	m.mu.Lock()
	p, ok := m.patients[key]
	m.mu.Unlock()
	if ok {
		return p, nil
	}
	p, err := m.src.Patient(ctx, key)
	if err != nil {
		return p, err
	}
	m.mu.Lock()
	if len(m.patients) >= memoMax {
		clear(m.patients)
	}
	m.patients[key] = p
	m.mu.Unlock()
	return p, nil
}

func (m *memoSource) UIDs(ctx context.Context, key string, originals []string) ([]string, error) {
	out := make([]string, len(originals))
	var missing []string
	var at []int // where each missing UID goes in out
	m.mu.Lock()
	for i, o := range originals {
		u, ok := m.uids[[2]string{key, o}]
		if !ok {
			missing = append(missing, o)
			at = append(at, i)
		}
		out[i] = u
	}
	m.mu.Unlock()
	if len(missing) == 0 {
		return out, nil
	}
	news, err := m.src.UIDs(ctx, key, missing)
	if err != nil {
		return nil, err
	}
	if len(news) != len(missing) {
		return nil, fmt.Errorf("pseudonym source returned %d UIDs for %d", len(news), len(missing))
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if len(m.uids)+len(missing) > memoMax {
		clear(m.uids)
	}
	for j, o := range missing {
		out[at[j]] = news[j]
		m.uids[[2]string{key, o}] = news[j]
	}
	return out, nil
}

// outNames hands out output names: two inputs may hold the same instance
// (the same SOP Instance UID in two encodings), and neither may overwrite
// the other.
type outNames struct {
	mu    sync.Mutex
	taken map[string]bool
}

func (o *outNames) claim(dir, uid string) (string, bool) {
	o.mu.Lock()
	defer o.mu.Unlock()
	name := uid + ".dcm"
	dup := false
	for n := 2; o.taken[name]; n++ {
		name, dup = fmt.Sprintf("%s-%d.dcm", uid, n), true
	}
	o.taken[name] = true
	return filepath.Join(dir, name), dup
}

func deidOneDICOM(ctx context.Context, d *dicom.Deidentifier, in, outDir, key string, names *outNames) (res dicomResult) {
	res.in = in
	f, err := openRead(in)
	if err != nil {
		res.err = err
		return res
	}
	defer f.Close()
	tmp, err := createTemp(outDir, ".deid-", ".dcm")
	if err != nil {
		res.err = err
		return res
	}
	defer func() {
		if res.err != nil {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	keyFn := func(s dicom.Summary) (string, error) {
		switch {
		case key != "":
			return key, nil
		case s.PatientID != "":
			return s.PatientID, nil
		case s.StudyInstanceUID != "":
			res.keyNote = "no Patient ID: pseudonym and date shift keyed by the study"
			return "study|" + s.StudyInstanceUID, nil
		}
		return "", errors.New("no Patient ID and no Study Instance UID: pass --patient-key")
	}
	rep, err := d.Rewrite(ctx, tmp, f, keyFn)
	if err != nil {
		res.err = err
		return res
	}
	if err := tmp.Close(); err != nil {
		res.err = err
		return res
	}
	var dup bool
	res.out, dup = names.claim(outDir, rep.SOPInstanceUID)
	if dup {
		res.keyNote = strings.TrimPrefix(res.keyNote+"; another input holds the same SOP Instance UID", "; ")
	}
	if err := rename(tmp.Name(), res.out); err != nil {
		res.err = err
		return res
	}
	res.removed = rep.Removed()
	for _, a := range rep.Actions {
		if int(a.Applied) < len(res.actions) {
			res.actions[a.Applied] += a.Count
		}
	}
	rep.Actions = nil
	res.rep = rep
	return res
}

func deidFHIR(ctx context.Context, env *cli, p deid.Profile, src deid.Source, out, key string, labels, args []string) error {
	files, err := inputs(args, func(p string) bool {
		return strings.HasSuffix(p, ".json") || strings.HasSuffix(p, ".ndjson")
	})
	if err != nil {
		return err
	}
	keyFn := func(pt fhir.DeidPatient) (string, error) {
		switch {
		case key != "":
			return key, nil
		case pt.MRN != "":
			return pt.MRN, nil
		case pt.ID != "":
			return pt.ID, nil
		}
		return pt.FullURL, nil
	}
	d, err := fhir.NewDeidentifier(fhir.DeidOptions{Profile: p, Source: src, PatientKey: keyFn, SensitiveLabels: labels})
	if err != nil {
		return err
	}
	// One input and an --out that is not a directory: write that file.
	single := false
	if fi, err := os.Stat(out); len(files) == 1 && (err != nil || !fi.IsDir()) && (strings.HasSuffix(out, ".json") || strings.HasSuffix(out, ".ndjson")) {
		single = true
		if err := os.MkdirAll(filepath.Dir(out), 0o755); err != nil {
			return err
		}
	} else if err := os.MkdirAll(out, 0o755); err != nil {
		return err
	}
	total := &fhir.DeidReport{Profile: p.String()}
	failed := 0
	for i, in := range files {
		target := out
		if !single {
			ext := ".json"
			if strings.HasSuffix(in, ".ndjson") {
				ext = ".ndjson"
			}
			target = filepath.Join(out, fmt.Sprintf("%06d%s", i+1, ext))
		}
		rep, wrote, err := deidOneFHIR(ctx, d, in, target)
		if err != nil {
			failed++
			fmt.Fprintf(env.stdout, "FAIL     %s: %v\n", in, err)
			continue
		}
		total.Merge(rep)
		switch {
		case !wrote:
			fmt.Fprintf(env.stdout, "EXCLUDED %s: %s\n", in, describeExcluded(rep))
		case rep.ExcludedCount() > 0:
			fmt.Fprintf(env.stdout, "ok       %s -> %s (left out: %s)\n", in, target, describeExcluded(rep))
		default:
			fmt.Fprintf(env.stdout, "ok       %s -> %s\n", in, target)
		}
	}
	fmt.Fprintf(env.stdout, "\nprofile %s: %d resources de-identified, %d excluded, %d elements removed, %d failed inputs\n",
		p, total.Resources, total.ExcludedCount(), total.Removed(), failed)
	for _, e := range total.Excluded {
		fmt.Fprintf(env.stdout, "  excluded %d %s: %s\n", e.Count, e.ResourceType, e.Reason)
	}
	if failed > 0 {
		return fmt.Errorf("%d of %d inputs failed", failed, len(files))
	}
	return nil
}

func describeExcluded(r *fhir.DeidReport) string {
	var parts []string
	for _, e := range r.Excluded {
		parts = append(parts, fmt.Sprintf("%d %s (%s)", e.Count, e.ResourceType, e.Reason))
	}
	return strings.Join(parts, ", ")
}

// deidOneFHIR de-identifies one file; wrote is false when everything in it
// was excluded.
func deidOneFHIR(ctx context.Context, d *fhir.Deidentifier, in, target string) (*fhir.DeidReport, bool, error) {
	b, err := os.ReadFile(in)
	if err != nil {
		return nil, false, err
	}
	var out []byte
	var rep *fhir.DeidReport
	if strings.HasSuffix(in, ".ndjson") {
		var buf bytes.Buffer
		rep, err = d.DeidentifyNDJSON(ctx, &buf, bytes.NewReader(b))
		out = buf.Bytes()
	} else {
		out, rep, err = d.Deidentify(ctx, b)
	}
	if err != nil {
		return nil, false, err
	}
	if len(out) == 0 {
		return rep, false, nil
	}
	if err := writeFileAtomic(target, out); err != nil {
		return nil, false, err
	}
	return rep, true, nil
}

func writeFileAtomic(path string, b []byte) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), ".deid-*")
	if err != nil {
		return err
	}
	if _, err := io.Copy(tmp, bytes.NewReader(b)); err != nil {
		tmp.Close()
		os.Remove(tmp.Name())
		return err
	}
	if err := tmp.Close(); err != nil {
		os.Remove(tmp.Name())
		return err
	}
	return os.Rename(tmp.Name(), path)
}

// The DICOM de-identifier opens two files and renames one for every
// instance. os.OpenFile registers every file with the runtime's poller,
// which fails for a regular file after four system calls (fcntl twice to
// set and clear O_NONBLOCK, epoll_ctl, fcntl), and os.Rename stats the
// target first: together a few percent of the command's CPU time on a
// 300-file series. These helpers make only the calls needed.

// openRead opens a file for reading.
func openRead(path string) (*os.File, error) {
	fd, err := open(path, syscall.O_RDONLY|syscall.O_CLOEXEC, 0)
	if err != nil {
		return nil, &os.PathError{Op: "open", Path: path, Err: err}
	}
	return os.NewFile(uintptr(fd), path), nil
}

// createTemp creates a new file in dir named prefix, random digits and
// suffix, readable by the owner only, as os.CreateTemp does.
func createTemp(dir, prefix, suffix string) (*os.File, error) {
	for try := 0; ; try++ {
		name := filepath.Join(dir, prefix+strconv.FormatUint(uint64(rand.Uint32()), 10)+suffix)
		fd, err := open(name, syscall.O_RDWR|syscall.O_CREAT|syscall.O_EXCL|syscall.O_CLOEXEC, 0o600)
		if errors.Is(err, syscall.EEXIST) && try < 10000 {
			continue
		}
		if err != nil {
			return nil, &os.PathError{Op: "createtemp", Path: name, Err: err}
		}
		return os.NewFile(uintptr(fd), name), nil
	}
}

// rename renames a file over another (never a directory: rename(2) fails
// then).
func rename(from, to string) error {
	for {
		err := syscall.Rename(from, to)
		if err == syscall.EINTR {
			continue
		}
		if err != nil {
			return &os.LinkError{Op: "rename", Old: from, New: to, Err: err}
		}
		return nil
	}
}

func open(path string, flags int, perm uint32) (int, error) {
	for {
		fd, err := syscall.Open(path, flags, perm)
		if err != syscall.EINTR {
			return fd, err
		}
	}
}
