package policy

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"testing"
	"time"
)

func TestDryRun(t *testing.T) {
	ctx := context.Background()
	store := newMemStore()
	decisions := newMemStore()
	e := newTestEngine(t, WithStore(store), WithDecisionLog(decisions, 1000))
	if _, err := e.Upload(ctx, "no-us", bytes.NewReader(archive(t, withoutUS(t)))); err != nil {
		t.Fatal(err)
	}
	permit := fixtureConsent(t, "permit-treat")
	us := Input{Principal: specialistU, Action: ActionPacketRead, Case: testCase(CaseReleased), Consents: []Consent{permit}}
	es := Input{Principal: specialistE, Action: ActionPacketRead, Case: testCase(CaseReleased), Consents: []Consent{permit}}
	who := Input{Principal: hospitalP, Action: ActionWhoAmI}
	var usDigest string
	for i := range 300 {
		in := []Input{us, es, who}[i%3]
		in.Time = testNow.Add(time.Duration(i) * time.Second)
		d, err := e.Decide(ctx, in)
		if err != nil {
			t.Fatal(err)
		}
		if i == 297 {
			usDigest = d.InputDigest
		}
	}
	if n := decisions.putCount("policies/decisions"); n != 0 {
		t.Fatalf("Decide wrote %d objects; it must only buffer", n)
	}
	ch, err := e.DryRun(ctx, "no-us")
	if err != nil {
		t.Fatal(err)
	}
	if n := decisions.putCount("policies/decisions"); n != 1 {
		t.Errorf("300 decisions took %d writes, want one batch", n)
	}
	if ch.Candidate != "no-us" || ch.Active != BuiltinVersion || ch.Replayed != 300 {
		t.Errorf("changes %s vs %s replayed %d", ch.Candidate, ch.Active, ch.Replayed)
	}
	if len(ch.Changed) != 100 {
		t.Fatalf("%d changed decisions, want the 100 US packet pulls", len(ch.Changed))
	}
	first := ch.Changed[0]
	if first.InputDigest != usDigest {
		t.Errorf("newest change has digest %s, want the last US decision %s", first.InputDigest, usDigest)
	}
	if !first.Active.Allow || first.Candidate.Allow || first.Input.Principal.ID != "dr-us" {
		t.Errorf("change %+v", first)
	}
	if !contains(first.Candidate.Reasons, `no transfer basis from "GB" to "US" in the cross-border table`) ||
		!contains(first.Active.Reasons, `consent "permit-treat" permits sharing for "second-opinion"`) {
		t.Errorf("reasons: active %q candidate %q", first.Active.Reasons, first.Candidate.Reasons)
	}
	if e.Version() != BuiltinVersion {
		t.Error("a dry run activated the candidate")
	}
	same, err := e.DryRun(ctx, BuiltinVersion)
	if err != nil {
		t.Fatal(err)
	}
	if len(same.Changed) != 0 {
		t.Errorf("the active version against itself changed %d decisions", len(same.Changed))
	}
	if _, err := e.DryRun(ctx, "nope"); !errors.Is(err, ErrUnknownVersion) {
		t.Errorf("dry run of an unknown version: %v", err)
	}
	if _, err := newTestEngine(t).DryRun(ctx, BuiltinVersion); !errors.Is(err, ErrNoStore) {
		t.Errorf("dry run without a decision log: %v", err)
	}
}

func contains(s []string, v string) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}

// TestRecorderBounded: the log keeps about the newest limit inputs, both in
// memory and in the store, and an instance sees another's records.
func TestRecorderBounded(t *testing.T) {
	ctx := context.Background()
	decisions := newMemStore()
	clock := testNow
	a := newTestEngine(t, WithDecisionLog(decisions, 50), WithClock(func() time.Time { clock = clock.Add(time.Millisecond); return clock }))
	b := newTestEngine(t, WithDecisionLog(decisions, 50))
	var last time.Time
	for round := range 4 {
		for range 80 {
			if _, err := a.Decide(ctx, Input{Principal: hospitalP, Action: ActionWhoAmI}); err != nil {
				t.Fatal(err)
			}
			last = clock
		}
		if err := a.Flush(ctx); err != nil {
			t.Fatal(err)
		}
		if n := decisions.count(decisionsPrefix); n > 2 {
			t.Errorf("round %d: %d batches kept for a limit of 50", round, n)
		}
	}
	if n := decisions.putCount("policies/decisions"); n != 4 {
		t.Errorf("%d writes for 4 flushes", n)
	}
	got, err := b.recorder.recent(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 50 {
		t.Errorf("recent returned %d inputs, want 50", len(got))
	}
	if !strings.Contains(string(got[0]), last.UTC().Format(time.RFC3339Nano)) {
		t.Errorf("newest input %s is not the last decision at %s", got[0], last)
	}
}

// TestRecorderRequeue: a failed write keeps the inputs for the next flush.
func TestRecorderRequeue(t *testing.T) {
	ctx := context.Background()
	decisions := newMemStore()
	e := newTestEngine(t, WithDecisionLog(decisions, 10))
	for range 5 {
		if _, err := e.Decide(ctx, Input{Principal: hospitalP, Action: ActionWhoAmI}); err != nil {
			t.Fatal(err)
		}
	}
	cancelled, cancel := context.WithCancel(ctx)
	cancel()
	if err := e.Flush(cancelled); err == nil {
		t.Fatal("flush with a cancelled context succeeded")
	}
	if err := e.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	got, err := e.recorder.recent(ctx)
	if err != nil || len(got) != 5 {
		t.Errorf("after requeue: %d inputs, %v", len(got), err)
	}
}

// TestRunFlushesOnExit: Run writes what is pending when its context ends.
func TestRunFlushesOnExit(t *testing.T) {
	decisions := newMemStore()
	e := newTestEngine(t, WithDecisionLog(decisions, 10), WithFlushInterval(time.Hour))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- e.Run(ctx) }()
	if _, err := e.Decide(ctx, Input{Principal: hospitalP, Action: ActionWhoAmI}); err != nil {
		t.Fatal(err)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if decisions.count(decisionsPrefix) != 1 {
		t.Error("Run did not write the pending inputs on exit")
	}
}
