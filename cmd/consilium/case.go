package main

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
)

// case drives the second-opinion workflow from the command line: a
// hospital opens a case, a case manager assigns specialists and releases
// it, anyone involved reads it. Every subcommand is one call of the case
// API (gateway/cases.go); the gateway decides who may do what and says
// why it refuses.

const caseUsage = `Usage: consilium case <subcommand> [connection flags] [flags]

  create --patient Patient/ID --question Q --specialty S
         [--language L]... [--study UID]... [--resource TYPE]...
         [--deadline RFC3339 | --due 14d]       open a case (hospital)
  assign ID SPECIALIST...                        set the assigned specialists (case manager)
  release ID                                     release to the assigned specialists (case manager)
  show ID                                        a case with its timeline
  list [--status S] [--overdue]                  the cases you may see
  cancel ID                                      cancel (hospital, case manager)
  close ID                                       close (case manager)
  specialists [--specialty S] [--language L]     the specialist directory (case manager)

--json prints the gateway's JSON answer instead of text. The connection
flags (--as, --server, --cert, --key, --ca) are those of every client
command: see 'consilium case list -h'.`

func caseCommand() command {
	return command{summary: "open, assign, release, show, list, cancel and close cases", run: runCase}
}

func runCase(ctx context.Context, env *cli, args []string) error {
	if len(args) == 0 {
		return usagef("%s", caseUsage)
	}
	switch args[0] {
	case "create":
		return runCaseCreate(ctx, env, args[1:])
	case "assign":
		return runCaseAssign(ctx, env, args[1:])
	case "release", "cancel", "close":
		return runCaseStep(ctx, env, args[0], args[1:])
	case "show":
		return runCaseShow(ctx, env, args[1:])
	case "list":
		return runCaseList(ctx, env, args[1:])
	case "specialists":
		return runCaseSpecialists(ctx, env, args[1:])
	case "-h", "--help", "help":
		fmt.Fprintln(env.stderr, caseUsage)
		return flag.ErrHelp
	}
	return usagef("unknown case subcommand %q (want create, assign, release, show, list, cancel, close or specialists)", args[0])
}

// caseInfo is a case as the gateway shows it (GET /cases/{id}); fields
// the caller may not see are absent.
type caseInfo struct {
	ID        string      `json:"id"`
	Org       string      `json:"org"`
	Patient   string      `json:"patient"`
	Studies   []string    `json:"studies"`
	Resources []string    `json:"resources"`
	Question  string      `json:"question"`
	Specialty string      `json:"specialty"`
	Languages []string    `json:"languages"`
	Deadline  *time.Time  `json:"deadline"`
	Status    string      `json:"status"`
	Assigned  []string    `json:"assigned"`
	Released  []string    `json:"released"`
	Created   time.Time   `json:"created"`
	Updated   time.Time   `json:"updated"`
	Overdue   bool        `json:"overdue"`
	Opinions  int         `json:"opinions"`
	Timeline  []caseEvent `json:"timeline"`
}

type caseEvent struct {
	At     time.Time `json:"at"`
	Status string    `json:"status"`
	By     string    `json:"by"`
	Note   string    `json:"note"`
}

// caseStatuses are the states of a case, for --status.
var caseStatuses = []string{"draft", "assigned", "released", "opinion-received", "closed", "cancelled"}

// caseIDRE is what a case id may look like on the command line: it becomes
// part of a URL path and of file names (pull), so nothing else passes.
var caseIDRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$`)

func checkCaseID(id string) error {
	if !caseIDRE.MatchString(id) {
		return usagef("%q is not a case id (such as c-3f9a0b7c1d2e4f56)", id)
	}
	return nil
}

// caseCreateRequest is the body of POST /cases.
type caseCreateRequest struct {
	Patient   string     `json:"patient"`
	Question  string     `json:"question"`
	Specialty string     `json:"specialty"`
	Languages []string   `json:"languages,omitempty"`
	Studies   []string   `json:"studies,omitempty"`
	Resources []string   `json:"resources,omitempty"`
	Deadline  *time.Time `json:"deadline,omitempty"`
}

// caseCreateFlags are the flags of case create, as given.
type caseCreateFlags struct {
	patient, question, specialty  string
	languages, studies, resources stringList
	deadline, due                 string
}

// request checks the flags and builds the request; now is the clock for
// --due.
func (f *caseCreateFlags) request(now time.Time) (caseCreateRequest, error) {
	req := caseCreateRequest{
		Patient: strings.TrimSpace(f.patient), Question: strings.TrimSpace(f.question), Specialty: strings.TrimSpace(f.specialty),
		Languages: splitList(f.languages), Studies: splitList(f.studies), Resources: splitList(f.resources),
	}
	id := strings.TrimPrefix(req.Patient, "Patient/")
	switch {
	case req.Patient == "":
		return req, usagef("--patient is required: the hospital's Patient/ID")
	case id == "" || strings.ContainsAny(id, "/? \t"):
		return req, usagef("--patient %q: want Patient/ID, the id of one of your Patients", f.patient)
	case req.Question == "":
		return req, usagef("--question is required: what the specialist is asked")
	case req.Specialty == "":
		return req, usagef("--specialty is required (oncology, radiology, ...)")
	case f.deadline != "" && f.due != "":
		return req, usagef("give --deadline or --due, not both")
	}
	if !strings.HasPrefix(req.Patient, "Patient/") {
		req.Patient = "Patient/" + req.Patient
	}
	for _, r := range req.Resources {
		if r == "" || strings.ToUpper(r[:1]) != r[:1] || strings.ContainsAny(r, "/?") {
			return req, usagef("--resource %q: want a FHIR resource type such as Condition", r)
		}
	}
	var deadline time.Time
	switch {
	case f.deadline != "":
		d, err := time.Parse(time.RFC3339, f.deadline)
		if err != nil {
			return req, usagef("--deadline %q: want an RFC 3339 time such as 2026-12-31T00:00:00Z", f.deadline)
		}
		deadline = d
	case f.due != "":
		d, err := parseDue(f.due)
		if err != nil {
			return req, err
		}
		deadline = now.Add(d).Truncate(time.Second)
	}
	if !deadline.IsZero() {
		if !deadline.After(now) {
			return req, usagef("--deadline %s is not in the future", deadline.Format(time.RFC3339))
		}
		deadline = deadline.UTC()
		req.Deadline = &deadline
	}
	return req, nil
}

// parseDue reads a time from now: "14d", "2w", or a Go duration ("36h").
func parseDue(s string) (time.Duration, error) {
	bad := usagef("--due %q: want a positive time from now such as 14d, 2w or 36h", s)
	var d time.Duration
	if n, ok := strings.CutSuffix(s, "d"); ok {
		days, err := strconv.Atoi(n)
		if err != nil || days > 3650 {
			return 0, bad
		}
		d = time.Duration(days) * 24 * time.Hour
	} else if n, ok := strings.CutSuffix(s, "w"); ok {
		weeks, err := strconv.Atoi(n)
		if err != nil || weeks > 520 {
			return 0, bad
		}
		d = time.Duration(weeks) * 7 * 24 * time.Hour
	} else {
		var err error
		if d, err = time.ParseDuration(s); err != nil {
			return 0, bad
		}
	}
	if d <= 0 {
		return 0, bad
	}
	return d, nil
}

// splitList flattens repeated flags that may also hold comma-separated
// values ("--language en,es").
func splitList(l stringList) []string {
	var out []string
	for _, v := range l {
		for p := range strings.SplitSeq(v, ",") {
			if p = strings.TrimSpace(p); p != "" && !slices.Contains(out, p) {
				out = append(out, p)
			}
		}
	}
	return out
}

func runCaseCreate(ctx context.Context, env *cli, args []string) error {
	fs := newFlagSet(env, "case create", "case create --patient Patient/ID --question Q --specialty S [--language L]... [--study UID]... [--resource TYPE]... [--deadline RFC3339 | --due 14d] [connection flags]")
	var f caseCreateFlags
	fs.StringVar(&f.patient, "patient", "", "the patient, as your FHIR reference Patient/ID")
	fs.StringVar(&f.question, "question", "", "what the specialist is asked")
	fs.StringVar(&f.specialty, "specialty", "", "the specialty asked for (oncology, radiology, ...)")
	fs.Var(&f.languages, "language", "a language the specialist should read (BCP 47: en, es); repeatable")
	fs.Var(&f.studies, "study", "a StudyInstanceUID of the patient's to share; repeatable")
	fs.Var(&f.resources, "resource", "a FHIR resource type to share (Condition, Observation...); repeatable; default all")
	fs.StringVar(&f.deadline, "deadline", "", "when the opinion is due, RFC 3339 (2026-12-31T00:00:00Z)")
	fs.StringVar(&f.due, "due", "", "when the opinion is due, from now: 14d, 2w, 36h")
	asJSON := fs.Bool("json", false, "print the gateway's JSON answer")
	cf := addClientFlags(fs)
	if err := parseFlags(fs, args, false); err != nil {
		return err
	}
	req, err := f.request(time.Now())
	if err != nil {
		return err
	}
	c, err := cf.client(env)
	if err != nil {
		return err
	}
	var raw json.RawMessage
	if err := c.doJSON(ctx, http.MethodPost, "/cases", req, &raw); err != nil {
		return err
	}
	return printCase(env, raw, *asJSON, "created")
}

func runCaseAssign(ctx context.Context, env *cli, args []string) error {
	fs := newFlagSet(env, "case assign", "case assign [connection flags] ID SPECIALIST...\n\n"+
		"The specialists named replace the assignment: to unassign one, assign the\n"+
		"others. A specialist added after a release needs another release.")
	asJSON := fs.Bool("json", false, "print the gateway's JSON answer")
	cf := addClientFlags(fs)
	pos, err := parseInterspersed(fs, args)
	if err != nil {
		return err
	}
	if len(pos) < 2 {
		return usagef("want a case ID and at least one specialist")
	}
	if err := checkCaseID(pos[0]); err != nil {
		return err
	}
	specialists := splitList(pos[1:])
	c, err := cf.client(env)
	if err != nil {
		return err
	}
	var raw json.RawMessage
	if err := c.doJSON(ctx, http.MethodPost, "/cases/"+url.PathEscape(pos[0])+"/assign", map[string]any{"specialists": specialists}, &raw); err != nil {
		return err
	}
	return printCase(env, raw, *asJSON, "assigned")
}

// runCaseStep is release, cancel and close: POST /cases/{id}/<step>.
func runCaseStep(ctx context.Context, env *cli, step string, args []string) error {
	fs := newFlagSet(env, "case "+step, "case "+step+" [connection flags] ID")
	asJSON := fs.Bool("json", false, "print the gateway's JSON answer")
	cf := addClientFlags(fs)
	pos, err := parseInterspersed(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return usagef("want exactly one case ID")
	}
	if err := checkCaseID(pos[0]); err != nil {
		return err
	}
	c, err := cf.client(env)
	if err != nil {
		return err
	}
	var raw json.RawMessage
	if err := c.doJSON(ctx, http.MethodPost, "/cases/"+url.PathEscape(pos[0])+"/"+step, nil, &raw); err != nil {
		return err
	}
	verb := map[string]string{"release": "released", "cancel": "cancelled", "close": "closed"}[step]
	return printCase(env, raw, *asJSON, verb)
}

func runCaseShow(ctx context.Context, env *cli, args []string) error {
	fs := newFlagSet(env, "case show", "case show [connection flags] ID")
	asJSON := fs.Bool("json", false, "print the gateway's JSON answer")
	cf := addClientFlags(fs)
	pos, err := parseInterspersed(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return usagef("want exactly one case ID")
	}
	if err := checkCaseID(pos[0]); err != nil {
		return err
	}
	c, err := cf.client(env)
	if err != nil {
		return err
	}
	var raw json.RawMessage
	if err := c.doJSON(ctx, http.MethodGet, "/cases/"+url.PathEscape(pos[0]), nil, &raw); err != nil {
		return err
	}
	return printCase(env, raw, *asJSON, "")
}

// printCase prints a case answer: the JSON as the gateway sent it, or
// (after a step, named by verb) a line saying what happened and the case
// with its timeline.
func printCase(env *cli, raw json.RawMessage, asJSON bool, verb string) error {
	if asJSON {
		return printJSON(env.stdout, raw)
	}
	var ci caseInfo
	if err := json.Unmarshal(raw, &ci); err != nil {
		return fmt.Errorf("reading the gateway's answer: %w", err)
	}
	switch verb {
	case "":
	case "released":
		fmt.Fprintf(env.stdout, "case %s released to %s; each can now run: consilium pull --case %s\n\n", ci.ID, orNone(ci.Released), ci.ID)
	case "assigned":
		fmt.Fprintf(env.stdout, "case %s assigned to %s; release it with: consilium case release %s\n\n", ci.ID, orNone(ci.Assigned), ci.ID)
	default:
		fmt.Fprintf(env.stdout, "case %s %s\n\n", ci.ID, verb)
	}
	writeCase(env.stdout, &ci, time.Now())
	return nil
}

// writeCase writes a case's fields and timeline for people.
func writeCase(w io.Writer, ci *caseInfo, now time.Time) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	status := ci.Status
	if ci.Overdue {
		status += " (overdue)"
	}
	row := func(k, v string) {
		if v != "" {
			fmt.Fprintf(tw, "%s\t%s\n", k, v)
		}
	}
	row("case", ci.ID)
	row("status", status)
	row("organisation", ci.Org)
	row("patient", ci.Patient)
	row("studies", strings.Join(ci.Studies, ", "))
	row("resources", strings.Join(ci.Resources, ", "))
	row("question", oneLine(ci.Question))
	row("specialty", ci.Specialty)
	row("languages", strings.Join(ci.Languages, ", "))
	row("deadline", deadlineText(ci.Deadline, ci.Overdue, now))
	row("assigned", orNone(ci.Assigned))
	row("released to", orNone(ci.Released))
	row("opinions", strconv.Itoa(ci.Opinions))
	row("created", timeText(ci.Created))
	row("updated", timeText(ci.Updated))
	tw.Flush()
	if len(ci.Timeline) == 0 {
		return
	}
	fmt.Fprintln(w, "\ntimeline:")
	tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	for _, e := range ci.Timeline {
		fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\n", timeText(e.At), e.Status, e.By, oneLine(e.Note))
	}
	tw.Flush()
}

func timeText(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.Local().Format("2006-01-02 15:04 MST")
}

func deadlineText(d *time.Time, overdue bool, now time.Time) string {
	if d == nil || d.IsZero() {
		return "none"
	}
	s := timeText(*d)
	switch left := d.Sub(now); {
	case overdue || left <= 0:
		s += " (overdue)"
	case left < 48*time.Hour:
		s += fmt.Sprintf(" (in %d hours)", int(left.Hours()))
	default:
		s += fmt.Sprintf(" (in %d days)", int((left+12*time.Hour)/(24*time.Hour)))
	}
	return s
}

func orNone(l []string) string {
	if len(l) == 0 {
		return "none"
	}
	return strings.Join(l, ", ")
}

// oneLine keeps a text to one line of at most 200 characters.
func oneLine(s string) string {
	s = strings.Join(strings.Fields(s), " ")
	if r := []rune(s); len(r) > 200 {
		s = string(r[:199]) + "…"
	}
	return s
}

func runCaseList(ctx context.Context, env *cli, args []string) error {
	fs := newFlagSet(env, "case list", "case list [--status S] [--overdue] [connection flags]\n\n"+
		"Lists the cases you may see: a hospital its own, a specialist those\n"+
		"released to it, a case manager all, newest first.")
	status := fs.String("status", "", "only cases in this state: "+strings.Join(caseStatuses, ", "))
	overdue := fs.Bool("overdue", false, "only cases past their deadline and not closed or cancelled")
	asJSON := fs.Bool("json", false, "print the gateway's JSON answer")
	cf := addClientFlags(fs)
	if err := parseFlags(fs, args, false); err != nil {
		return err
	}
	if *status != "" && !slices.Contains(caseStatuses, *status) {
		return usagef("--status %q: want one of %s", *status, strings.Join(caseStatuses, ", "))
	}
	q := url.Values{}
	if *status != "" {
		q.Set("status", *status)
	}
	if *overdue {
		q.Set("overdue", "true")
	}
	var list struct {
		Cases []caseInfo `json:"cases"`
	}
	if printed, err := getListing(ctx, env, cf, "/cases", q, *asJSON, &list); err != nil || printed {
		return err
	}
	if len(list.Cases) == 0 {
		fmt.Fprintln(env.stdout, "no cases")
		return nil
	}
	withPatient := slices.ContainsFunc(list.Cases, func(c caseInfo) bool { return c.Patient != "" })
	tw := tabwriter.NewWriter(env.stdout, 0, 0, 2, ' ', 0)
	head := "CASE\tSTATUS\tSPECIALTY\tDEADLINE\tASSIGNED\tOPINIONS\tORG"
	if withPatient {
		head += "\tPATIENT"
	}
	fmt.Fprintln(tw, head+"\tQUESTION")
	for _, ci := range list.Cases {
		deadline := "-"
		if ci.Deadline != nil {
			deadline = ci.Deadline.Local().Format("2006-01-02")
		}
		st := ci.Status
		if ci.Overdue {
			st += " (overdue)"
		}
		line := fmt.Sprintf("%s\t%s\t%s\t%s\t%s\t%d\t%s", ci.ID, st, ci.Specialty, deadline, strings.Join(ci.Assigned, ","), ci.Opinions, ci.Org)
		if withPatient {
			line += "\t" + ci.Patient
		}
		q := []rune(oneLine(ci.Question))
		if len(q) > 40 {
			q = append(q[:39], '…')
		}
		fmt.Fprintln(tw, line+"\t"+string(q))
	}
	return tw.Flush()
}

// specialistInfo is an entry of the specialist directory.
type specialistInfo struct {
	ID        string    `json:"id"`
	Org       string    `json:"org"`
	Country   string    `json:"country"`
	Specialty string    `json:"specialty"`
	Languages []string  `json:"languages"`
	Recipient string    `json:"recipient"`
	Updated   time.Time `json:"updated"`
}

func runCaseSpecialists(ctx context.Context, env *cli, args []string) error {
	fs := newFlagSet(env, "case specialists", "case specialists [--specialty S] [--language L] [connection flags]")
	specialty := fs.String("specialty", "", "only specialists of this specialty")
	language := fs.String("language", "", "only specialists who read this language")
	asJSON := fs.Bool("json", false, "print the gateway's JSON answer")
	cf := addClientFlags(fs)
	if err := parseFlags(fs, args, false); err != nil {
		return err
	}
	q := url.Values{}
	if *specialty != "" {
		q.Set("specialty", *specialty)
	}
	if *language != "" {
		q.Set("language", *language)
	}
	var list struct {
		Specialists []specialistInfo `json:"specialists"`
	}
	if printed, err := getListing(ctx, env, cf, "/specialists", q, *asJSON, &list); err != nil || printed {
		return err
	}
	if len(list.Specialists) == 0 {
		fmt.Fprintln(env.stdout, "no specialists match")
		return nil
	}
	tw := tabwriter.NewWriter(env.stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "SPECIALIST\tSPECIALTY\tLANGUAGES\tCOUNTRY\tORG\tREGISTERED")
	for _, s := range list.Specialists {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", s.ID, s.Specialty, strings.Join(s.Languages, ","), s.Country, s.Org, timeText(s.Updated))
	}
	return tw.Flush()
}

// printJSON writes a JSON answer indented, as received otherwise.
func printJSON(w io.Writer, raw []byte) error {
	var b bytes.Buffer
	if err := json.Indent(&b, raw, "", "  "); err != nil {
		return fmt.Errorf("reading the gateway's answer: %w", err)
	}
	b.WriteByte('\n')
	_, err := w.Write(b.Bytes())
	return err
}

// getListing GETs path with query q. With asJSON it prints the gateway's
// answer as is (printed is true); otherwise it decodes it into out.
func getListing(ctx context.Context, env *cli, cf *clientFlags, path string, q url.Values, asJSON bool, out any) (printed bool, err error) {
	if len(q) > 0 {
		path += "?" + q.Encode()
	}
	c, err := cf.client(env)
	if err != nil {
		return false, err
	}
	var raw json.RawMessage
	if err := c.doJSON(ctx, http.MethodGet, path, nil, &raw); err != nil {
		return false, err
	}
	if asJSON {
		return true, printJSON(env.stdout, raw)
	}
	if err := json.Unmarshal(raw, out); err != nil {
		return false, fmt.Errorf("reading the gateway's answer: %w", err)
	}
	return false, nil
}
