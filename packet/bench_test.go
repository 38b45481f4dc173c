package packet_test

import (
	"context"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"syscall"
	"testing"
	"time"

	"filippo.io/age"

	"github.com/consilium/consilium/dicom"
	"github.com/consilium/consilium/internal/testenv"
	"github.com/consilium/consilium/packet"
)

// benchStudy returns the files of the benchmark's CT series: the *.dcm
// files under $CONSILIUM_BENCH_STUDY (bench/packet/run.sh generates them
// on tmpfs), else a 300-slice series generated here.
func benchStudy(b *testing.B) []string {
	dir := os.Getenv("CONSILIUM_BENCH_STUDY")
	if dir == "" {
		return genStudy(b, 300)
	}
	var files []string
	filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() && filepath.Ext(p) == ".dcm" {
			files = append(files, p)
		}
		return err
	})
	if len(files) == 0 {
		b.Fatalf("no .dcm files under %s", dir)
	}
	sort.Strings(files)
	return files
}

// firstByte records when the first byte and the first 64 KiB of
// ciphertext (the header and the first encrypted payload chunk) arrive.
type firstByte struct {
	start       time.Time
	n           int64
	first, full time.Duration
}

func (f *firstByte) Write(p []byte) (int, error) {
	if f.n == 0 && len(p) > 0 {
		f.first = time.Since(f.start)
	}
	f.n += int64(len(p))
	if f.full == 0 && f.n >= 64<<10 {
		f.full = time.Since(f.start)
	}
	return len(p), nil
}

// BenchmarkBuild measures packet throughput for a 300-instance CT study
// (plus a Synthea bundle), with de-identification on (originals) and off
// (instances de-identified beforehand and read in place), against the age
// CLI encrypting the same packet's tar in the same run. All report MB/s of
// the same plaintext tar; ttfb-ms is the time to the first byte of output,
// first-chunk-ms to the first 64 KiB of ciphertext.
//
//	go test -run '^$' -bench BenchmarkBuild -benchtime 10x ./packet/
func BenchmarkBuild(b *testing.B) {
	k := newKeys(b)
	study := benchStudy(b)
	bundle := readFile(b, testdata(b, busterBundle))
	opts := k.options()
	work := b.TempDir()
	if fi, err := os.Stat("/dev/shm"); err == nil && fi.IsDir() {
		if d, err := os.MkdirTemp("/dev/shm", "consilium-bench-packet-"); err == nil {
			work = d
			b.Cleanup(func() { os.RemoveAll(d) })
		}
	}
	opts.TempDir = work
	contents := func() packet.Contents {
		return packet.Contents{
			Case:        packet.Case{ID: "bench", Question: "Second read of a chest CT", Specialty: "radiology"},
			Bundle:      bundle,
			Instances:   packet.Files(study...),
			Identifiers: studyIdentifiers,
		}
	}

	// One packet, decrypted: the tar the age CLI encrypts, and its size,
	// which every sub-benchmark reports its throughput against.
	encFile, err := os.Create(filepath.Join(work, "packet.age"))
	if err != nil {
		b.Fatal(err)
	}
	defer encFile.Close()
	if _, err := packet.Build(context.Background(), encFile, contents(), opts); err != nil {
		b.Fatal(err)
	}
	encFile.Seek(0, io.SeekStart)
	dr, err := age.Decrypt(encFile, k.id)
	if err != nil {
		b.Fatal(err)
	}
	tarFile := filepath.Join(work, "packet.tar")
	f, err := os.Create(tarFile)
	if err != nil {
		b.Fatal(err)
	}
	size, err := io.Copy(f, dr)
	f.Close()
	if err != nil {
		b.Fatal(err)
	}

	// The same instances de-identified beforehand, with their reports.
	pre := filepath.Join(work, "deidentified")
	os.Mkdir(pre, 0o700)
	d, err := dicom.NewDeidentifier(dicom.Options{Profile: mustDICOMProfile(b), Source: k.src})
	if err != nil {
		b.Fatal(err)
	}
	var preFiles []string
	var reports []*dicom.Report
	for i, p := range study {
		in, _ := os.Open(p)
		out := filepath.Join(pre, filepath.Base(p))
		o, _ := os.Create(out)
		rep, err := d.Rewrite(context.Background(), o, in, dicom.PatientKey(opts.Deid.PatientKey))
		in.Close()
		o.Close()
		if err != nil {
			b.Fatalf("%d: %v", i, err)
		}
		preFiles = append(preFiles, out)
		reports = append(reports, rep)
	}
	fd, err := newFHIRDeidentifier(k, opts.Deid.PatientKey)
	if err != nil {
		b.Fatal(err)
	}
	deidBundle, frep, err := fd.Deidentify(context.Background(), bundle)
	if err != nil {
		b.Fatal(err)
	}
	preContents := func() packet.Contents {
		i := 0
		return packet.Contents{
			Case:         packet.Case{ID: "bench", Question: "Second read of a chest CT", Specialty: "radiology"},
			Bundle:       deidBundle,
			BundleReport: frep,
			Identifiers:  studyIdentifiers,
			Instances: packet.InstancesFunc(func(ctx context.Context) (packet.Instance, error) {
				if i == len(preFiles) {
					return packet.Instance{}, io.EOF
				}
				f, err := os.Open(preFiles[i])
				if err != nil {
					return packet.Instance{}, err
				}
				fi, _ := f.Stat()
				rep := reports[i]
				i++
				return packet.Instance{Body: f, Size: fi.Size(), Report: rep}, nil
			}),
		}
	}

	run := func(b *testing.B, c func() packet.Contents) {
		b.SetBytes(size)
		var first, full time.Duration
		cpu := cpuTime(syscall.RUSAGE_SELF)
		for b.Loop() {
			fb := &firstByte{start: time.Now()}
			if _, err := packet.Build(context.Background(), fb, c(), opts); err != nil {
				b.Fatal(err)
			}
			first += fb.first
			full += fb.full
		}
		reportCPU(b, cpu, syscall.RUSAGE_SELF)
		b.ReportMetric(float64(first.Microseconds())/1000/float64(b.N), "ttfb-ms")
		b.ReportMetric(float64(full.Microseconds())/1000/float64(b.N), "first-chunk-ms")
	}
	b.Run("deid=on", func(b *testing.B) { run(b, contents) })
	b.Run("deid=off", func(b *testing.B) { run(b, preContents) })
	b.Run("age-cli", func(b *testing.B) {
		bin := testenv.LookPath(b, "age", "apt-get install age")
		recipient := k.id.Recipient().String()
		b.SetBytes(size)
		cpu := cpuTime(syscall.RUSAGE_CHILDREN)
		for b.Loop() {
			if out, err := exec.Command(bin, "-r", recipient, "-o", "/dev/null", tarFile).CombinedOutput(); err != nil {
				b.Fatalf("age: %v\n%s", err, out)
			}
		}
		reportCPU(b, cpu, syscall.RUSAGE_CHILDREN)
	})
	b.Run("age-lib", func(b *testing.B) {
		// The library in this process, for reference: what the CLI costs
		// beyond it is process start-up.
		b.SetBytes(size)
		cpu := cpuTime(syscall.RUSAGE_SELF)
		for b.Loop() {
			in, _ := os.Open(tarFile)
			w, _ := age.Encrypt(io.Discard, k.id.Recipient())
			io.Copy(w, in)
			w.Close()
			in.Close()
		}
		reportCPU(b, cpu, syscall.RUSAGE_SELF)
	})
}

// cpuTime is the user and system time of this process (RUSAGE_SELF) or of
// its waited-for children (RUSAGE_CHILDREN): the CPU a build costs,
// whatever else runs on the machine.
func cpuTime(who int) time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(who, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func reportCPU(b *testing.B, start time.Duration, who int) {
	b.ReportMetric(float64((cpuTime(who)-start).Microseconds())/1000/float64(b.N), "cpu-ms/op")
}
