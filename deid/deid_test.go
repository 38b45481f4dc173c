package deid_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/consilium/consilium/deid"
)

var secret = bytes.Repeat([]byte{0x42}, 32)

func TestParseDICOMProfile(t *testing.T) {
	tests := []struct {
		in      string
		want    string
		codes   []string
		wantErr bool
	}{
		{in: "basic", want: "basic", codes: []string{"113100"}},
		{in: " basic , retain-uids,retain-long-modified-dates ", want: "basic,retain-long-modified-dates,retain-uids", codes: []string{"113100", "113107", "113110"}},
		{in: "basic,retain-patient-chars,retain-device-id,retain-institution-id,clean-descriptors,clean-structured-content,retain-safe-private,retain-long-full-dates",
			want:  "basic,clean-descriptors,clean-structured-content,retain-device-id,retain-institution-id,retain-long-full-dates,retain-patient-chars,retain-safe-private",
			codes: []string{"113100", "113105", "113104", "113109", "113112", "113106", "113108", "113111"}},
		{in: "basic,retain-uids,retain-uids", want: "basic,retain-uids", codes: []string{"113100", "113110"}},
		{in: "", wantErr: true},
		{in: "shifted", wantErr: true},
		{in: "basic,", wantErr: true},
		{in: "basic,clean-pixel-data", wantErr: true},
		{in: "basic,basic", wantErr: true},
		{in: "basic,retain-long-full-dates,retain-long-modified-dates", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			p, err := deid.ParseDICOMProfile(tt.in)
			if tt.wantErr {
				if !errors.Is(err, deid.ErrUnknownProfile) {
					t.Fatalf("err = %v, want ErrUnknownProfile", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if p.String() != tt.want {
				t.Errorf("String() = %q, want %q", p, tt.want)
			}
			var codes []string
			for _, c := range p.Codes() {
				if c.Scheme != "DCM" || c.Meaning == "" {
					t.Errorf("bad code %+v", c)
				}
				codes = append(codes, c.Value)
			}
			if fmt.Sprint(codes) != fmt.Sprint(tt.codes) {
				t.Errorf("codes = %v, want %v", codes, tt.codes)
			}
			back, err := deid.ParseDICOMProfile(p.String())
			if err != nil || back.String() != p.String() {
				t.Errorf("round trip: %v %v", back, err)
			}
		})
	}
}

func TestParseFHIRProfile(t *testing.T) {
	tests := []struct {
		in      string
		want    string
		wantErr bool
	}{
		{in: "", want: "shifted"},
		{in: "shifted", want: "shifted"},
		{in: "safe-harbor", want: "safe-harbor"},
		{in: "safe-harbor,keep-free-text", want: "safe-harbor,keep-free-text"},
		{in: "basic", wantErr: true},
		{in: "shifted,retain-uids", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			p, err := deid.ParseFHIRProfile(tt.in)
			if tt.wantErr != (err != nil) {
				t.Fatalf("err = %v", err)
			}
			if err == nil && (p.String() != tt.want || p.Kind != deid.FHIR || p.Codes() != nil) {
				t.Errorf("got %+v", p)
			}
		})
	}
}

var uidRE = regexp.MustCompile(`^2\.25\.(0|[1-9][0-9]*)$`)

// checkSource holds what every Source must do.
func checkSource(t *testing.T, src deid.Source) {
	t.Helper()
	ctx := context.Background()
	a, err := src.Patient(ctx, "org|patient-a")
	if err != nil {
		t.Fatal(err)
	}
	a2, err := src.Patient(ctx, "org|patient-a")
	if err != nil {
		t.Fatal(err)
	}
	b, err := src.Patient(ctx, "org|patient-b")
	if err != nil {
		t.Fatal(err)
	}
	if a != a2 {
		t.Errorf("same key, different patient: %+v %+v", a, a2)
	}
	if a.Pseudonym == b.Pseudonym {
		t.Errorf("two keys share pseudonym %q", a.Pseudonym)
	}
	for _, p := range []deid.Patient{a, b} {
		if !deid.IsPseudonym(p.Pseudonym) {
			t.Errorf("pseudonym %q has the wrong form", p.Pseudonym)
		}
		if p.OffsetDays >= 0 || p.OffsetDays < -3*365 {
			t.Errorf("offset %d out of range", p.OffsetDays)
		}
		if strings.Contains(p.Pseudonym, "patient") {
			t.Errorf("pseudonym shows the key")
		}
	}
	if _, err := src.Patient(ctx, ""); !errors.Is(err, deid.ErrNoPatientKey) {
		t.Errorf("empty key: %v", err)
	}
	orig := []string{"1.2.3.4", "1.2.3.5", "1.2.3.4", "1.2.840.113619.2.55.3.604688119.971.1234567890.1"}
	u1, err := src.UIDs(ctx, "org|patient-a", orig)
	if err != nil {
		t.Fatal(err)
	}
	u2, err := src.UIDs(ctx, "org|patient-a", orig[1:])
	if err != nil {
		t.Fatal(err)
	}
	if len(u1) != len(orig) || u1[0] != u1[2] || u1[0] == u1[1] || u1[1] != u2[0] || u1[3] != u2[2] {
		t.Errorf("UID mapping not consistent: %v %v", u1, u2)
	}
	for _, u := range u1 {
		if !uidRE.MatchString(u) || len(u) > 64 {
			t.Errorf("bad UID %q", u)
		}
	}
	if _, err := src.UIDs(ctx, "", orig); !errors.Is(err, deid.ErrNoPatientKey) {
		t.Errorf("empty key: %v", err)
	}
}

func TestKeyed(t *testing.T) {
	k, err := deid.NewKeyed(secret, deid.KeyedOptions{})
	if err != nil {
		t.Fatal(err)
	}
	checkSource(t, k)

	// Deterministic: a second source with the same secret agrees; another
	// secret does not.
	k2, _ := deid.NewKeyed(secret, deid.KeyedOptions{})
	other, _ := deid.NewKeyed(bytes.Repeat([]byte{1}, 32), deid.KeyedOptions{})
	ctx := context.Background()
	p1, _ := k.Patient(ctx, "x")
	p2, _ := k2.Patient(ctx, "x")
	p3, _ := other.Patient(ctx, "x")
	if p1 != p2 || p1.Pseudonym == p3.Pseudonym {
		t.Errorf("keyed not deterministic per secret: %v %v %v", p1, p2, p3)
	}
	if k.UID("1.2.3") != k2.UID("1.2.3") || k.UID("1.2.3") == other.UID("1.2.3") {
		t.Error("keyed UIDs not deterministic per secret")
	}
	// Without a store there is nothing to reverse.
	if _, err := k.PatientKey(ctx, p1.Pseudonym); !errors.Is(err, deid.ErrUnknown) {
		t.Errorf("PatientKey without store: %v", err)
	}
	if _, err := deid.NewKeyed(secret[:31], deid.KeyedOptions{}); !errors.Is(err, deid.ErrShortSecret) {
		t.Errorf("short secret: %v", err)
	}
}

// TestKeyedKnownAnswer pins the derivation: changing it would silently
// re-pseudonymise every patient.
// knownAnswer was computed independently with Python's hmac module.
const knownAnswer = "1ff5c2ad63d3cc54bc81c1b98e3f2396 -476 2.25.263913613877781518833366563669251601403"

func TestKeyedKnownAnswer(t *testing.T) {
	k, _ := deid.NewKeyed(secret, deid.KeyedOptions{})
	p, _ := k.Patient(context.Background(), "ACME|12345")
	got := fmt.Sprintf("%s %d %s", p.Pseudonym, p.OffsetDays, k.UID("1.2.840.10008.1"))
	if got != knownAnswer {
		t.Errorf("derivation changed:\n got %s\nwant %s", got, knownAnswer)
	}
}

func TestReverse(t *testing.T) {
	for _, tc := range []struct {
		name string
		make func(st *memStore) (deid.Source, error)
	}{
		{"keyed", func(st *memStore) (deid.Source, error) {
			return deid.NewKeyed(secret, deid.KeyedOptions{Store: st})
		}},
		{"surrogate", func(st *memStore) (deid.Source, error) {
			return deid.NewSurrogate(st, secret, deid.SurrogateOptions{})
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			st := newMemStore()
			src, err := tc.make(st)
			if err != nil {
				t.Fatal(err)
			}
			checkSource(t, src)
			ctx := context.Background()
			key := "ACME|patient-77"
			p, err := src.Patient(ctx, key)
			if err != nil {
				t.Fatal(err)
			}
			orig := []string{"1.2.826.0.1.3680043.2.1125.1.1", "1.2.826.0.1.3680043.2.1125.1.2"}
			news, err := src.UIDs(ctx, key, orig)
			if err != nil {
				t.Fatal(err)
			}
			// A fresh source over the same store sees the same values and
			// can reverse them: nothing lives only in memory.
			again, err := tc.make(st)
			if err != nil {
				t.Fatal(err)
			}
			rev := again.(deid.Reverser)
			gotKey, err := rev.PatientKey(ctx, p.Pseudonym)
			if err != nil || gotKey != key {
				t.Fatalf("PatientKey = %q, %v", gotKey, err)
			}
			back, err := rev.OriginalUIDs(ctx, p.Pseudonym, []string{news[1], news[0]})
			if err != nil || back[0] != orig[1] || back[1] != orig[0] {
				t.Fatalf("OriginalUIDs = %v, %v", back, err)
			}
			p2, _ := again.Patient(ctx, key)
			news2, _ := again.UIDs(ctx, key, orig)
			if p2 != p || fmt.Sprint(news2) != fmt.Sprint(news) {
				t.Errorf("fresh source disagrees: %v %v / %v %v", p, news, p2, news2)
			}
			if _, err := rev.PatientKey(ctx, strings.Repeat("0", 32)); !errors.Is(err, deid.ErrUnknown) {
				t.Errorf("unknown pseudonym: %v", err)
			}
			if _, err := rev.OriginalUIDs(ctx, p.Pseudonym, []string{"2.25.1"}); !errors.Is(err, deid.ErrUnknown) {
				t.Errorf("unknown UID: %v", err)
			}
			// Object names carry no key, pseudonym or UID.
			for _, n := range st.names() {
				for _, secretish := range append([]string{"patient", "acme", p.Pseudonym, "1.2.826", "2.25."}, news...) {
					if strings.Contains(strings.ToLower(n), strings.ToLower(secretish)) {
						t.Errorf("object name %q contains %q", n, secretish)
					}
				}
			}
		})
	}
}

// TestSurrogateBatching checks that one UIDs call costs one store write
// however many UIDs it issues, and none when everything is known.
func TestSurrogateBatching(t *testing.T) {
	st := newMemStore()
	s, err := deid.NewSurrogate(st, secret, deid.SurrogateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if _, err := s.Patient(ctx, "k"); err != nil {
		t.Fatal(err)
	}
	before := st.puts.Load()
	var orig []string
	for i := range 300 {
		orig = append(orig, fmt.Sprintf("1.2.3.%d", i))
	}
	if _, err := s.UIDs(ctx, "k", orig); err != nil {
		t.Fatal(err)
	}
	if n := st.puts.Load() - before; n != 1 {
		t.Errorf("300 new UIDs cost %d writes, want 1", n)
	}
	if _, err := s.UIDs(ctx, "k", orig[:10]); err != nil {
		t.Fatal(err)
	}
	if n := st.puts.Load() - before; n != 1 {
		t.Errorf("known UIDs cost %d more writes", n-1)
	}
	if _, err := deid.NewSurrogate(nil, secret, deid.SurrogateOptions{}); !errors.Is(err, deid.ErrNoStore) {
		t.Errorf("nil store: %v", err)
	}
}

// TestSurrogateConcurrent runs several "gateway instances" (sources over
// one store) at once on the same patient and UIDs: all must agree.
func TestSurrogateConcurrent(t *testing.T) {
	st := newMemStore()
	st.delay = 200 * time.Microsecond
	ctx := context.Background()
	const instances, rounds = 4, 8
	type result struct {
		p    deid.Patient
		uids []string
	}
	results := make([][]result, instances)
	var wg sync.WaitGroup
	for i := range instances {
		src, err := deid.NewSurrogate(st, secret, deid.SurrogateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			for r := range rounds {
				p, err := src.Patient(ctx, "shared")
				if err != nil {
					t.Error(err)
					return
				}
				// Overlapping batches: each round adds new UIDs and repeats
				// some of another instance's.
				orig := []string{"1.9", fmt.Sprintf("1.9.%d", r), fmt.Sprintf("1.9.%d.%d", r, i%2)}
				u, err := src.UIDs(ctx, "shared", orig)
				if err != nil {
					t.Error(err)
					return
				}
				results[i] = append(results[i], result{p, u})
			}
		}()
	}
	wg.Wait()
	seen := map[string]string{}
	var pseudonym string
	for i, rs := range results {
		for r, res := range rs {
			if pseudonym == "" {
				pseudonym = res.p.Pseudonym
			}
			if res.p.Pseudonym != pseudonym {
				t.Fatalf("instance %d round %d: pseudonym differs", i, r)
			}
			orig := []string{"1.9", fmt.Sprintf("1.9.%d", r), fmt.Sprintf("1.9.%d.%d", r, i%2)}
			for j, o := range orig {
				if prev, ok := seen[o]; ok && prev != res.uids[j] {
					t.Fatalf("UID %s mapped to %s and %s", o, prev, res.uids[j])
				}
				seen[o] = res.uids[j]
			}
		}
	}
}

func ExampleNewKeyed() {
	src, err := deid.NewKeyed(bytes.Repeat([]byte{7}, 32), deid.KeyedOptions{})
	if err != nil {
		panic(err)
	}
	ctx := context.Background()
	p, _ := src.Patient(ctx, "ACME|MRN-12345")
	uids, _ := src.UIDs(ctx, "ACME|MRN-12345", []string{"1.2.840.113619.2.1.1"})
	fmt.Println(len(p.Pseudonym), p.OffsetDays < 0, strings.HasPrefix(uids[0], "2.25."))
	// Output: 32 true true
}
