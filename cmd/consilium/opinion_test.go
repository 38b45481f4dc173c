package main

import (
	"bytes"
	"encoding/base64"
	"io"
	"mime"
	"mime/multipart"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/consilium/consilium/cases"
)

const reportJSON = `{"resourceType":"DiagnosticReport","status":"final","code":{"text":"Second opinion"},
"subject":{"reference":"Patient/2fcc4b98"},"conclusion":"Benign; follow-up CT in 6 months."}`

// pdfBytes is a small file that starts as a PDF does.
var pdfBytes = []byte("%PDF-1.4\n1 0 obj <<>> endobj\ntrailer <<>>\n%%EOF\n")

func writeTemp(t *testing.T, name string, b []byte) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestReadOpinionFiles(t *testing.T) {
	report := writeTemp(t, "report.json", []byte(reportJSON))
	pdf := writeTemp(t, "o.pdf", pdfBytes)
	bigPDF := writeTemp(t, "big.pdf", pdfBytes)
	if err := os.Truncate(bigPDF, cases.MaxPDF+1); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name, report, pdf, want string
	}{
		{"report alone", report, "", ""},
		{"report and PDF", report, pdf, ""},
		{"not JSON", writeTemp(t, "r.json", []byte("conclusion: benign")), "", "not JSON"},
		{"not a DiagnosticReport", writeTemp(t, "r.json", []byte(`{"resourceType":"Observation"}`)), "", `"Observation", not a FHIR DiagnosticReport`},
		{"no subject", writeTemp(t, "r.json", []byte(`{"resourceType":"DiagnosticReport","conclusion":"x"}`)), "", "subject.reference must be Patient/<pseudonym>"},
		{"no conclusion", writeTemp(t, "r.json", []byte(`{"resourceType":"DiagnosticReport","subject":{"reference":"Patient/x"}}`)), "", "conclusion is required"},
		{"report too large", writeTemp(t, "r.json", bytes.Repeat([]byte(" "), maxReport+1)), "", "larger than"},
		{"missing report", filepath.Join(t.TempDir(), "none.json"), "", "none.json"},
		{"PDF not a PDF", report, writeTemp(t, "o.pdf", []byte("<html>")), "is not a PDF file"},
		{"PDF too large", report, bigPDF, "at most 32.0 MiB"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := readOpinionFiles(tc.report, tc.pdf)
			if tc.want == "" && err != nil || tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)) {
				t.Fatalf("error %v, want %q", err, tc.want)
			}
		})
	}
}

func TestOpinionSubmit(t *testing.T) {
	l := devLayout(t)
	const id = "c-0123456789abcdef"
	rc := &recorder{answers: map[string]answer{
		"POST /cases/" + id + "/opinions": {201, `{"id":"c-0123456789abcdef-dr-okafor","case":"c-0123456789abcdef","specialist":"dr-okafor","version":2,"received":"2026-03-03T10:00:00Z"}`},
	}}
	url := fakeGateway(t, l, rc)
	report := writeTemp(t, "report.json", []byte(reportJSON))
	pdf := writeTemp(t, "opinion.pdf", pdfBytes)
	conn := []string{"--server", url, "--as", "dr-okafor", "--data", l.Dir}

	t.Run("report alone, as FHIR JSON", func(t *testing.T) {
		code, stdout, stderr := runCLI(t, nil, append([]string{"opinion", "submit", "--case", id, report}, conn...)...)
		if code != 0 {
			t.Fatalf("exit %d: %s", code, stderr)
		}
		r := rc.last()
		if r.method != "POST" || r.path != "/cases/"+id+"/opinions" || r.contentType != "application/fhir+json" || string(r.body) != reportJSON {
			t.Fatalf("request %s %s %s: %s", r.method, r.path, r.contentType, r.body)
		}
		if !strings.Contains(stdout, "opinion c-0123456789abcdef-dr-okafor received for case "+id+" from dr-okafor") || !strings.Contains(stdout, "(version 2)") {
			t.Fatalf("stdout: %s", stdout)
		}
	})
	t.Run("with a PDF, as multipart/form-data", func(t *testing.T) {
		code, stdout, stderr := runCLI(t, nil, append([]string{"opinion", "submit", report, "--pdf", pdf, "--case", id}, conn...)...)
		if code != 0 {
			t.Fatalf("exit %d: %s", code, stderr)
		}
		r := rc.last()
		mt, params, err := mime.ParseMediaType(r.contentType)
		if err != nil || mt != "multipart/form-data" {
			t.Fatalf("Content-Type %q", r.contentType)
		}
		parts := map[string][]byte{}
		types := map[string]string{}
		mr := multipart.NewReader(bytes.NewReader(r.body), params["boundary"])
		for {
			p, err := mr.NextPart()
			if err == io.EOF {
				break
			}
			if err != nil {
				t.Fatal(err)
			}
			parts[p.FormName()], _ = io.ReadAll(p)
			types[p.FormName()] = p.Header.Get("Content-Type")
		}
		if string(parts["report"]) != reportJSON || !bytes.Equal(parts["pdf"], pdfBytes) || len(parts) != 2 {
			t.Fatalf("parts: %q", parts)
		}
		if types["report"] != "application/fhir+json" || types["pdf"] != "application/pdf" {
			t.Fatalf("part types: %v", types)
		}
		if !strings.Contains(stdout, "opinion with PDF") {
			t.Fatalf("stdout: %s", stdout)
		}
	})
	t.Run("refused with the gateway's reason", func(t *testing.T) {
		rc.mu.Lock()
		rc.answers["POST /cases/"+id+"/opinions"] = answer{422, `{"error":"the opinion is not valid: subject must reference the packet's patient, Patient/abc (case.patient in manifest.json)","request_id":"r-9"}`}
		rc.mu.Unlock()
		code, _, stderr := runCLI(t, nil, append([]string{"opinion", "submit", "--case", id, report}, conn...)...)
		if code != 1 || !strings.Contains(stderr, "gateway answered 422: the opinion is not valid: subject must reference") {
			t.Fatalf("exit %d: %s", code, stderr)
		}
	})
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"no case", []string{"opinion", "submit", report}, "--case is required"},
		{"no report", []string{"opinion", "submit", "--case", id}, "exactly one REPORT.json"},
		{"two reports", []string{"opinion", "submit", "--case", id, report, report}, "exactly one REPORT.json"},
		{"unknown subcommand", []string{"opinion", "send"}, "unknown opinion subcommand"},
		{"list without case", []string{"opinion", "list"}, "--case is required"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, _, stderr := runCLI(t, nil, tc.args...)
			if code != 2 || !strings.Contains(stderr, tc.want) {
				t.Fatalf("exit %d (want 2): %s", code, stderr)
			}
		})
	}
}

func TestOpinionList(t *testing.T) {
	l := devLayout(t)
	const id = "c-0123456789abcdef"
	pdf64 := base64.StdEncoding.EncodeToString(pdfBytes)
	bundle := `{"resourceType":"Bundle","type":"collection","total":2,"entry":[
{"fullUrl":"https://gw/fhir/DiagnosticReport/c-0123456789abcdef-dr-garcia","resource":{"resourceType":"DiagnosticReport","id":"c-0123456789abcdef-dr-garcia",
 "meta":{"versionId":"1"},"status":"preliminary","code":{"text":"x"},"subject":{"reference":"Patient/p1"},"issued":"2026-03-03T10:00:00Z",
 "performer":[{"display":"dr-garcia"}],"conclusion":"Probably benign."}},
{"fullUrl":"https://gw/fhir/DiagnosticReport/c-0123456789abcdef-dr-okafor","resource":{"resourceType":"DiagnosticReport","id":"c-0123456789abcdef-dr-okafor",
 "meta":{"versionId":"2"},"status":"final","code":{"text":"x"},"subject":{"reference":"Patient/p1"},"issued":"2026-03-03T11:00:00Z",
 "performer":[{"display":"dr-okafor"}],"conclusion":"Benign.",
 "conclusionCode":[{"coding":[{"system":"http://snomed.info/sct","code":"108369006","display":"Neoplasm, benign"}]}],
 "imagingStudy":[{"identifier":{"system":"urn:dicom:uid","value":"urn:oid:1.2.3"},"display":"study 1.2.3"}],
 "presentedForm":[{"contentType":"application/pdf","data":"` + pdf64 + `"}]}}]}`
	rc := &recorder{answers: map[string]answer{"GET /cases/" + id + "/opinions": {200, bundle}}}
	url := fakeGateway(t, l, rc)
	out := filepath.Join(t.TempDir(), "opinions")
	code, stdout, stderr := runCLI(t, nil, "opinion", "list", "--case", id, "--out", out, "--server", url, "--as", "st-marys", "--data", l.Dir)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	for _, w := range []string{
		"SPECIALIST", "dr-garcia   preliminary  1", "Probably benign.",
		"dr-okafor   final        2", "Patient/p1", "Benign. [Neoplasm, benign]", "dr-okafor refers to study 1.2.3",
	} {
		if !strings.Contains(stdout, w) {
			t.Errorf("stdout does not hold %q:\n%s", w, stdout)
		}
	}
	if got, _ := os.ReadFile(filepath.Join(out, "opinions.json")); string(got) != bundle {
		t.Errorf("opinions.json differs from the Bundle")
	}
	if got, _ := os.ReadFile(filepath.Join(out, "dr-okafor.pdf")); !bytes.Equal(got, pdfBytes) {
		t.Errorf("dr-okafor.pdf: %q", got)
	}
	if _, err := os.Stat(filepath.Join(out, "dr-garcia.pdf")); err == nil {
		t.Error("a PDF for an opinion without one")
	}
	if !strings.Contains(stderr, "wrote "+filepath.Join(out, "dr-okafor.pdf")) {
		t.Errorf("stderr: %s", stderr)
	}

	// Refusals print the gateway's reasons.
	rc.mu.Lock()
	rc.answers["GET /cases/"+id+"/opinions"] = answer{403, `{"error":"forbidden by policy","reasons":["no rule allows role \"specialist\" to perform \"opinion.read\""],"request_id":"r-3"}`}
	rc.mu.Unlock()
	code, _, stderr = runCLI(t, nil, "opinion", "list", "--case", id, "--server", url, "--as", "dr-garcia", "--data", l.Dir)
	if code != 1 || !strings.Contains(stderr, `  - no rule allows role "specialist"`) {
		t.Fatalf("exit %d: %s", code, stderr)
	}
}
