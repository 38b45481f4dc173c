package main

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"mime/multipart"
	"net/http"
	"net/textproto"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/consilium/consilium/cases"
)

// opinion sends a specialist's opinion (a FHIR DiagnosticReport about the
// packet's pseudonymous patient, with an optional PDF) and reads the
// opinions of a case back, as the gateway re-identifies them for the
// hospital.

const opinionUsage = `Usage: consilium opinion <subcommand> [connection flags] [flags]

  submit --case ID REPORT.json [--pdf F]   send your opinion (specialist); sending
                                           again replaces it with a new version
  list --case ID [--out DIR]               the opinions of a case: specialist,
                                           status, conclusion; --out writes the
                                           FHIR Bundle and the PDFs

REPORT.json is a FHIR R4 DiagnosticReport: status (final, preliminary,
amended or corrected), code, subject Patient/<pseudonym> (case.patient in
the packet's manifest.json, which pull prints) and conclusion; conclusionCode
and imagingStudy are optional.`

func opinionCommand() command {
	return command{summary: "send an opinion on a case (DiagnosticReport + PDF), list a case's opinions", run: runOpinion}
}

func runOpinion(ctx context.Context, env *cli, args []string) error {
	if len(args) == 0 {
		return usagef("%s", opinionUsage)
	}
	switch args[0] {
	case "submit":
		return runOpinionSubmit(ctx, env, args[1:])
	case "list":
		return runOpinionList(ctx, env, args[1:])
	case "-h", "--help", "help":
		fmt.Fprintln(env.stderr, opinionUsage)
		return flag.ErrHelp
	}
	return usagef("unknown opinion subcommand %q (want submit or list)", args[0])
}

// maxReport bounds REPORT.json as the gateway does.
const maxReport = 4 << 20

// opinionFiles are submit's files, read and checked.
type opinionFiles struct {
	report []byte
	pdf    string // path, streamed when sent
	pdfLen int64
}

// readOpinionFiles checks what submit is about to send, so that a wrong
// file is refused before anything leaves.
func readOpinionFiles(reportPath, pdfPath string) (opinionFiles, error) {
	var o opinionFiles
	f, err := os.Open(reportPath)
	if err != nil {
		return o, err
	}
	defer f.Close()
	if o.report, err = io.ReadAll(io.LimitReader(f, maxReport+1)); err != nil {
		return o, err
	}
	if len(o.report) > maxReport {
		return o, fmt.Errorf("%s is larger than %d bytes", reportPath, maxReport)
	}
	var head struct {
		ResourceType string `json:"resourceType"`
		Subject      struct {
			Reference string `json:"reference"`
		} `json:"subject"`
		Conclusion string `json:"conclusion"`
	}
	if err := json.Unmarshal(o.report, &head); err != nil {
		return o, fmt.Errorf("%s is not JSON: %w", reportPath, err)
	}
	switch {
	case head.ResourceType != "DiagnosticReport":
		return o, fmt.Errorf("%s is a %q, not a FHIR DiagnosticReport", reportPath, head.ResourceType)
	case !strings.HasPrefix(head.Subject.Reference, "Patient/"):
		return o, fmt.Errorf("%s: subject.reference must be Patient/<pseudonym>, case.patient in the packet's manifest.json", reportPath)
	case strings.TrimSpace(head.Conclusion) == "":
		return o, fmt.Errorf("%s: conclusion is required", reportPath)
	}
	if pdfPath == "" {
		return o, nil
	}
	pf, err := os.Open(pdfPath)
	if err != nil {
		return o, err
	}
	defer pf.Close()
	st, err := pf.Stat()
	if err != nil {
		return o, err
	}
	if st.Size() > cases.MaxPDF {
		return o, fmt.Errorf("%s has %s; the gateway takes at most %s", pdfPath, humanBytes(st.Size()), humanBytes(cases.MaxPDF))
	}
	magic := make([]byte, 5)
	if _, err := io.ReadFull(pf, magic); err != nil || string(magic) != "%PDF-" {
		return o, fmt.Errorf("%s is not a PDF file", pdfPath)
	}
	o.pdf, o.pdfLen = pdfPath, st.Size()
	return o, nil
}

func runOpinionSubmit(ctx context.Context, env *cli, args []string) error {
	fs := newFlagSet(env, "opinion submit", "opinion submit --case ID REPORT.json [--pdf F] [connection flags]")
	caseID := fs.String("case", "", "the case the opinion is about")
	pdf := fs.String("pdf", "", "a PDF to attach (at most 32 MiB)")
	asJSON := fs.Bool("json", false, "print the gateway's JSON answer")
	cf := addClientFlags(fs)
	pos, err := parseInterspersed(fs, args)
	if err != nil {
		return err
	}
	switch {
	case *caseID == "":
		return usagef("--case is required")
	case len(pos) != 1:
		return usagef("want exactly one REPORT.json, got %d arguments", len(pos))
	}
	if err := checkCaseID(*caseID); err != nil {
		return err
	}
	files, err := readOpinionFiles(pos[0], *pdf)
	if err != nil {
		return err
	}
	c, err := cf.client(env)
	if err != nil {
		return err
	}
	body, ct, closeBody := opinionBody(files)
	defer closeBody()
	resp, err := c.do(ctx, http.MethodPost, "/cases/"+url.PathEscape(*caseID)+"/opinions", body, ct)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return fmt.Errorf("reading the gateway's answer: %w", err)
	}
	if *asJSON {
		return printJSON(env.stdout, raw)
	}
	var ans struct {
		ID         string    `json:"id"`
		Case       string    `json:"case"`
		Specialist string    `json:"specialist"`
		Version    int       `json:"version"`
		Received   time.Time `json:"received"`
	}
	if err := json.Unmarshal(raw, &ans); err != nil {
		return fmt.Errorf("reading the gateway's answer: %w", err)
	}
	what := "opinion"
	if files.pdf != "" {
		what += " with PDF (" + humanBytes(files.pdfLen) + ")"
	}
	fmt.Fprintf(env.stdout, "%s %s received for case %s from %s at %s (version %d)\n",
		what, ans.ID, ans.Case, ans.Specialist, timeText(ans.Received), max(ans.Version, 1))
	return nil
}

// opinionBody is the request body: the report as application/fhir+json,
// or with a PDF multipart/form-data (parts "report" and "pdf"), the PDF
// streamed from its file.
func opinionBody(o opinionFiles) (io.Reader, string, func()) {
	if o.pdf == "" {
		return bytes.NewReader(o.report), "application/fhir+json", func() {}
	}
	pr, pw := io.Pipe()
	mw := multipart.NewWriter(pw)
	go func() {
		pw.CloseWithError(writeOpinionParts(mw, o))
	}()
	return pr, mw.FormDataContentType(), func() { pr.Close() }
}

func writeOpinionParts(mw *multipart.Writer, o opinionFiles) error {
	h := textproto.MIMEHeader{}
	h.Set("Content-Disposition", `form-data; name="report"; filename="report.json"`)
	h.Set("Content-Type", "application/fhir+json")
	w, err := mw.CreatePart(h)
	if err != nil {
		return err
	}
	if _, err := w.Write(o.report); err != nil {
		return err
	}
	h = textproto.MIMEHeader{}
	h.Set("Content-Disposition", `form-data; name="pdf"; filename="opinion.pdf"`)
	h.Set("Content-Type", "application/pdf")
	if w, err = mw.CreatePart(h); err != nil {
		return err
	}
	f, err := os.Open(o.pdf)
	if err != nil {
		return err
	}
	defer f.Close()
	if _, err := io.Copy(w, io.LimitReader(f, cases.MaxPDF+1)); err != nil {
		return err
	}
	return mw.Close()
}

// opinionBundle is the part of GET /cases/{id}/opinions that list shows.
type opinionBundle struct {
	Entry []struct {
		Resource opinionReport `json:"resource"`
	} `json:"entry"`
}

type opinionReport struct {
	ID   string `json:"id"`
	Meta struct {
		VersionID string `json:"versionId"`
	} `json:"meta"`
	Status     string `json:"status"`
	Issued     string `json:"issued"`
	Conclusion string `json:"conclusion"`
	Subject    struct {
		Reference string `json:"reference"`
	} `json:"subject"`
	Performer []struct {
		Display string `json:"display"`
	} `json:"performer"`
	ConclusionCode []struct {
		Text   string `json:"text"`
		Coding []struct {
			Code    string `json:"code"`
			Display string `json:"display"`
		} `json:"coding"`
	} `json:"conclusionCode"`
	ImagingStudy []struct {
		Display string `json:"display"`
	} `json:"imagingStudy"`
	PresentedForm []struct {
		ContentType string `json:"contentType"`
		Data        string `json:"data"`
	} `json:"presentedForm"`
}

func (r *opinionReport) specialist() string {
	if len(r.Performer) > 0 && r.Performer[0].Display != "" {
		return r.Performer[0].Display
	}
	return r.ID
}

// safeName is what may name a file written from an opinion.
var safeName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$`)

func runOpinionList(ctx context.Context, env *cli, args []string) error {
	fs := newFlagSet(env, "opinion list", "opinion list --case ID [--out DIR] [connection flags]")
	caseID := fs.String("case", "", "the case whose opinions to read")
	out := fs.String("out", "", "write the FHIR Bundle (opinions.json) and each PDF (<specialist>.pdf) to this directory")
	asJSON := fs.Bool("json", false, "print the gateway's FHIR Bundle")
	cf := addClientFlags(fs)
	if err := parseFlags(fs, args, false); err != nil {
		return err
	}
	if *caseID == "" {
		return usagef("--case is required")
	}
	if err := checkCaseID(*caseID); err != nil {
		return err
	}
	c, err := cf.client(env)
	if err != nil {
		return err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.base+"/cases/"+url.PathEscape(*caseID)+"/opinions", nil)
	if err != nil {
		return err
	}
	req.Header.Set("Accept", "application/fhir+json")
	resp, err := c.http.Do(req)
	if err != nil {
		return fmt.Errorf("calling the gateway: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return readAPIError(resp)
	}
	// Each opinion may carry a 32 MiB PDF (base64 in the Bundle).
	raw, err := io.ReadAll(io.LimitReader(resp.Body, 1<<30))
	if err != nil {
		return fmt.Errorf("reading the gateway's answer: %w", err)
	}
	var b opinionBundle
	if err := json.Unmarshal(raw, &b); err != nil {
		return fmt.Errorf("reading the gateway's answer: %w", err)
	}
	if *out != "" {
		if err := writeOpinions(env, *out, raw, &b); err != nil {
			return err
		}
	}
	if *asJSON {
		return printJSON(env.stdout, raw)
	}
	if len(b.Entry) == 0 {
		fmt.Fprintf(env.stdout, "no opinions on case %s yet\n", *caseID)
		return nil
	}
	tw := tabwriter.NewWriter(env.stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "SPECIALIST\tSTATUS\tVERSION\tISSUED\tSUBJECT\tPDF\tCONCLUSION")
	for _, e := range b.Entry {
		r := e.Resource
		pdf := "-"
		for _, p := range r.PresentedForm {
			if p.ContentType == "application/pdf" {
				pdf = humanBytes(int64(base64.StdEncoding.DecodedLen(len(p.Data)) - strings.Count(p.Data[max(len(p.Data)-2, 0):], "=")))
			}
		}
		issued := r.Issued
		if t, err := time.Parse(time.RFC3339Nano, r.Issued); err == nil {
			issued = timeText(t)
		}
		concl := oneLine(r.Conclusion)
		var codes []string
		for _, cc := range r.ConclusionCode {
			for _, cd := range cc.Coding {
				codes = append(codes, firstNonEmpty(cd.Display, cd.Code))
			}
			if len(cc.Coding) == 0 && cc.Text != "" {
				codes = append(codes, cc.Text)
			}
		}
		if len(codes) > 0 {
			concl += " [" + strings.Join(codes, "; ") + "]"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", r.specialist(), r.Status, firstNonEmpty(r.Meta.VersionID, "1"),
			issued, r.Subject.Reference, pdf, concl)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	for _, e := range b.Entry {
		for _, st := range e.Resource.ImagingStudy {
			if st.Display != "" {
				fmt.Fprintf(env.stdout, "  %s refers to %s\n", e.Resource.specialist(), st.Display)
			}
		}
	}
	return nil
}

// writeOpinions writes the Bundle as received and each PDF to dir.
func writeOpinions(env *cli, dir string, raw []byte, b *opinionBundle) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	// Opinions are about a patient: readable by the owner only.
	bundle := filepath.Join(dir, "opinions.json")
	if err := os.WriteFile(bundle, raw, 0o600); err != nil {
		return err
	}
	fmt.Fprintf(env.stderr, "wrote %s\n", bundle)
	for i, e := range b.Entry {
		n := 0
		for _, p := range e.Resource.PresentedForm {
			if p.ContentType != "application/pdf" || p.Data == "" {
				continue
			}
			pdf, err := base64.StdEncoding.DecodeString(p.Data)
			if err != nil {
				return fmt.Errorf("the PDF of %s's opinion is not base64: %w", e.Resource.specialist(), err)
			}
			name := e.Resource.specialist()
			if !safeName.MatchString(name) {
				name = "opinion-" + strconv.Itoa(i+1)
			}
			if n++; n > 1 {
				name += "-" + strconv.Itoa(n)
			}
			path := filepath.Join(dir, name+".pdf")
			if err := os.WriteFile(path, pdf, 0o600); err != nil {
				return err
			}
			fmt.Fprintf(env.stderr, "wrote %s (%s)\n", path, humanBytes(int64(len(pdf))))
		}
	}
	return nil
}
