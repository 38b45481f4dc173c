package packet

import (
	"bytes"
	"cmp"
	"encoding/json"
	"fmt"
	"html/template"
	"slices"
	"strconv"
	"strings"
	"time"
)

// summaryRows bounds the timeline; the bundle has everything.
const summaryRows = 5000

// summaryTemplate is summary.html. html/template escapes every value; the
// page has no script and loads nothing (its Content-Security-Policy says
// so to the browser too).
var summaryTemplate = template.Must(template.New("summary").Parse(`<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; style-src 'unsafe-inline'">
<meta name="referrer" content="no-referrer">
<title>Case {{.Case.ID}}: second opinion request</title>
<style>
body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;margin:2rem auto;max-width:60rem;padding:0 1rem;color:#1b1b1b;line-height:1.45}
h1{font-size:1.5rem;margin-bottom:.2rem}h2{font-size:1.15rem;margin-top:2rem;border-bottom:1px solid #ccc}
.meta{color:#555;margin-top:0}.question{white-space:pre-wrap;background:#f4f6f8;border-left:4px solid #2b6cb0;padding:.75rem 1rem}
table{border-collapse:collapse;width:100%;font-size:.92rem}th,td{text-align:left;padding:.3rem .5rem;border-bottom:1px solid #e3e3e3;vertical-align:top}
th{background:#f0f0f0}td.date{white-space:nowrap}td.type{white-space:nowrap;color:#444}.note{color:#555;font-size:.9rem}
dl{display:grid;grid-template-columns:max-content auto;gap:.2rem 1rem}dt{font-weight:600}dd{margin:0}
</style>
</head>
<body>
<h1>Second opinion request: {{.Case.Specialty}}</h1>
<p class="meta">Case {{.Case.ID}}{{if .Case.Patient}} · patient {{.Case.Patient}}{{end}} · packet created {{.Created}}</p>
<h2>Question</h2>
<p class="question">{{.Case.Question}}</p>
<dl>
<dt>Specialty</dt><dd>{{.Case.Specialty}}</dd>
{{- if .Case.Languages}}<dt>Languages</dt><dd>{{range $i, $l := .Case.Languages}}{{if $i}}, {{end}}{{$l}}{{end}}</dd>{{end}}
{{- if .Deadline}}<dt>Deadline</dt><dd>{{.Deadline}}</dd>{{end}}
{{- if .Gender}}<dt>Sex</dt><dd>{{.Gender}}</dd>{{end}}
{{- if .BirthDate}}<dt>Birth date</dt><dd>{{.BirthDate}} (de-identified)</dd>{{end}}
</dl>
<p class="note">The records are de-identified: names and identifiers are replaced by pseudonyms, and dates are
{{- if .SafeHarbor}} cut to the year{{else}} moved by one offset for this patient, so intervals between them are kept{{end}}.
The complete records are in fhir/bundle.json; the images open from the DICOMDIR in any DICOM viewer.
What was changed or left out is listed in deid-receipt.json.</p>
<h2>Timeline</h2>
{{if .Rows -}}
<p class="note">{{range $i, $c := .Counts}}{{if $i}} · {{end}}{{$c}}{{end}}{{if .Dropped}} · the {{.Dropped}} oldest entries are only in the bundle{{end}}</p>
<table>
<thead><tr><th>Date</th><th>Type</th><th>What</th><th>Details</th></tr></thead>
<tbody>
{{range .Rows}}<tr><td class="date">{{.Date}}</td><td class="type">{{.Type}}</td><td>{{.What}}</td><td>{{.Detail}}</td></tr>
{{end}}</tbody>
</table>
{{- else}}
<p class="note">No clinical records are included in this packet.</p>
{{- end}}
</body>
</html>
`))

type summaryRow struct{ Date, Type, What, Detail string }

type summaryData struct {
	Case              Case
	Created, Deadline string
	Gender, BirthDate string
	SafeHarbor        bool
	Rows              []summaryRow
	Counts            []string
	Dropped           int
}

// renderSummary writes summary.html from the case and the de-identified
// bundle (nil: no FHIR).
func renderSummary(c Case, created time.Time, bundle []byte, safeHarbor bool) ([]byte, error) {
	d := summaryData{Case: c, Created: created.UTC().Format("2006-01-02 15:04 MST"), SafeHarbor: safeHarbor}
	if !c.Deadline.IsZero() {
		d.Deadline = c.Deadline.UTC().Format("2006-01-02 15:04 MST")
	}
	if len(bundle) > 0 {
		var b struct {
			ResourceType string `json:"resourceType"`
			Entry        []struct {
				Resource map[string]any `json:"resource"`
			} `json:"entry"`
		}
		if err := json.Unmarshal(bundle, &b); err != nil {
			return nil, fmt.Errorf("packet: summary: reading the bundle: %w", err)
		}
		counts := map[string]int{}
		for _, e := range b.Entry {
			r := e.Resource
			if r["resourceType"] == "Patient" {
				d.Gender, _ = r["gender"].(string)
				d.BirthDate, _ = r["birthDate"].(string)
				continue
			}
			if row, ok := timelineRow(r); ok {
				d.Rows = append(d.Rows, row)
				counts[row.Type]++
			}
		}
		slices.SortStableFunc(d.Rows, func(a, b summaryRow) int { return cmp.Compare(a.Date, b.Date) })
		for i := range d.Rows {
			d.Rows[i].Date = displayDate(d.Rows[i].Date)
		}
		if len(d.Rows) > summaryRows {
			d.Dropped = len(d.Rows) - summaryRows
			d.Rows = d.Rows[d.Dropped:]
		}
		for _, t := range timelineTypes {
			switch n := counts[t.label]; n {
			case 0:
			case 1:
				d.Counts = append(d.Counts, "1 "+t.singular)
			default:
				d.Counts = append(d.Counts, fmt.Sprintf("%d %s", n, t.plural))
			}
		}
	}
	var out bytes.Buffer
	if err := summaryTemplate.Execute(&out, d); err != nil {
		return nil, fmt.Errorf("packet: summary: %w", err)
	}
	return out.Bytes(), nil
}

var timelineTypes = []struct{ resource, label, singular, plural string }{
	{"Condition", "Condition", "condition", "conditions"},
	{"Observation", "Observation", "observation", "observations"},
	{"Procedure", "Procedure", "procedure", "procedures"},
	{"ImagingStudy", "Imaging study", "imaging study", "imaging studies"},
	{"DiagnosticReport", "Report", "report", "reports"},
	{"MedicationRequest", "Medication", "medication", "medications"},
	{"AllergyIntolerance", "Allergy", "allergy", "allergies"},
	{"Immunization", "Immunization", "immunization", "immunizations"},
}

// displayDate shortens a FHIR dateTime to its date and minutes.
func displayDate(s string) string {
	if len(s) >= 16 && s[10] == 'T' {
		return s[:10] + " " + s[11:16]
	}
	return s
}

// timelineRow turns one resource into a timeline row.
func timelineRow(r map[string]any) (summaryRow, bool) {
	typ, _ := r["resourceType"].(string)
	var row summaryRow
	for _, t := range timelineTypes {
		if t.resource == typ {
			row.Type = t.label
		}
	}
	if row.Type == "" {
		return row, false
	}
	date := func(keys ...string) string {
		for _, k := range keys {
			switch v := r[k].(type) {
			case string:
				return v
			case map[string]any:
				if s, ok := v["start"].(string); ok {
					return s
				}
			}
		}
		return ""
	}
	switch typ {
	case "Condition":
		row.Date = date("onsetDateTime", "onsetPeriod", "recordedDate")
		row.What = codeText(r["code"])
		row.Detail = codeText(r["clinicalStatus"])
		if s := date("abatementDateTime", "abatementPeriod"); s != "" {
			row.Detail = strings.TrimSpace(row.Detail + ", resolved " + s)
		}
	case "Observation":
		row.Date = date("effectiveDateTime", "effectivePeriod", "issued")
		row.What = codeText(r["code"])
		row.Detail = observationValue(r)
		if comps, ok := r["component"].([]any); ok {
			var parts []string
			for _, c := range comps {
				if cm, ok := c.(map[string]any); ok {
					parts = append(parts, strings.TrimSpace(codeText(cm["code"])+": "+observationValue(cm)))
				}
			}
			row.Detail = strings.TrimSpace(row.Detail + " " + strings.Join(parts, "; "))
		}
	case "Procedure":
		row.Date = date("performedDateTime", "performedPeriod")
		row.What = codeText(r["code"])
		row.Detail, _ = r["status"].(string)
	case "ImagingStudy":
		row.Date = date("started")
		row.What, _ = r["description"].(string)
		var mods []string
		if ms, ok := r["modality"].([]any); ok {
			for _, m := range ms {
				if cm, ok := m.(map[string]any); ok {
					if c, ok := cm["code"].(string); ok {
						mods = append(mods, c)
					}
				}
			}
		}
		if row.What == "" {
			row.What = strings.Join(mods, ", ") + " study"
		}
		row.Detail = strings.Join(mods, ", ")
		if n, ok := r["numberOfSeries"].(float64); ok {
			row.Detail += fmt.Sprintf(" · %d series", int(n))
		}
		if n, ok := r["numberOfInstances"].(float64); ok {
			row.Detail += fmt.Sprintf(" · %d instances", int(n))
		}
		row.Detail = strings.TrimPrefix(row.Detail, " · ")
	case "DiagnosticReport":
		row.Date = date("effectiveDateTime", "effectivePeriod", "issued")
		row.What = codeText(r["code"])
		row.Detail, _ = r["conclusion"].(string)
	case "MedicationRequest":
		row.Date = date("authoredOn")
		row.What = codeText(r["medicationCodeableConcept"])
		row.Detail, _ = r["status"].(string)
	case "AllergyIntolerance":
		row.Date = date("recordedDate", "onsetDateTime")
		row.What = codeText(r["code"])
		row.Detail = codeText(r["clinicalStatus"])
	case "Immunization":
		row.Date = date("occurrenceDateTime")
		row.What = codeText(r["vaccineCode"])
		row.Detail, _ = r["status"].(string)
	}
	return row, true
}

// codeText is the text of a CodeableConcept: its text, else the first
// coding's display, else its code.
func codeText(v any) string {
	cc, ok := v.(map[string]any)
	if !ok {
		return ""
	}
	if t, ok := cc["text"].(string); ok && t != "" {
		return t
	}
	codings, _ := cc["coding"].([]any)
	for _, c := range codings {
		cm, _ := c.(map[string]any)
		if d, ok := cm["display"].(string); ok && d != "" {
			return d
		}
		if d, ok := cm["code"].(string); ok && d != "" {
			return d
		}
	}
	return ""
}

func observationValue(r map[string]any) string {
	switch {
	case r["valueQuantity"] != nil:
		q, _ := r["valueQuantity"].(map[string]any)
		unit, _ := q["unit"].(string)
		if unit == "" {
			unit, _ = q["code"].(string)
		}
		v := fmt.Sprint(q["value"])
		if f, ok := q["value"].(float64); ok {
			// Six significant digits: what a measurement can mean.
			v = strconv.FormatFloat(f, 'g', 6, 64)
		}
		return strings.TrimSpace(v + " " + unit)
	case r["valueCodeableConcept"] != nil:
		return codeText(r["valueCodeableConcept"])
	case r["valueString"] != nil:
		return fmt.Sprint(r["valueString"])
	case r["valueBoolean"] != nil:
		return fmt.Sprint(r["valueBoolean"])
	case r["valueInteger"] != nil:
		return fmt.Sprint(r["valueInteger"])
	case r["valueDateTime"] != nil:
		return fmt.Sprint(r["valueDateTime"])
	}
	return ""
}
