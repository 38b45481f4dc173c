package policy

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"time"
)

// Changes is what [Engine.DryRun] found: the recorded decisions that the
// candidate would decide differently from the active version.
type Changes struct {
	// Candidate is the version tried; Active the one it was compared with.
	Candidate string `json:"candidate"`
	Active    string `json:"active"`
	// Replayed is how many recorded inputs were decided again.
	Replayed int `json:"replayed"`
	// Changed lists the decisions whose allow or obligations differ,
	// newest first.
	Changed []Change `json:"changed"`
}

// Change is one decision that would change.
type Change struct {
	// InputDigest identifies the input as in the audit trail.
	InputDigest string `json:"input_digest"`
	// Input is the recorded input, replayed at its own time.
	Input Input `json:"input"`
	// Active and Candidate are the two outcomes.
	Active    Outcome `json:"active"`
	Candidate Outcome `json:"candidate"`
}

// Outcome is one version's answer in a [Change].
type Outcome struct {
	Allow       bool        `json:"allow"`
	Reasons     []string    `json:"reasons"`
	Obligations Obligations `json:"obligations"`
	// Error is set when the version could not decide (which denies).
	Error string `json:"error,omitempty"`
}

func outcome(d Decision, err error) Outcome {
	o := Outcome{Allow: d.Allow && err == nil, Reasons: d.Reasons, Obligations: d.Obligations}
	if err != nil {
		o.Error = err.Error()
	}
	return o
}

// DryRun decides the most recently recorded inputs (see [WithDecisionLog])
// with version and with the active version, and returns the decisions that
// differ in allow or obligations, with both sets of reasons. Nothing is
// activated. Returns [ErrNoStore] without a decision log,
// [ErrInvalidVersion] or [ErrUnknownVersion].
func (e *Engine) DryRun(ctx context.Context, version string) (Changes, error) {
	if e.recorder == nil {
		return Changes{}, fmt.Errorf("%w: dry runs need a decision log", ErrNoStore)
	}
	if !ValidVersion(version) {
		return Changes{}, fmt.Errorf("%w: %q", ErrInvalidVersion, version)
	}
	if version != BuiltinVersion && e.store == nil {
		return Changes{}, ErrNoStore
	}
	candidate, err := e.load(ctx, version)
	if err != nil {
		return Changes{}, err
	}
	active := e.current.Load()
	if err := e.Flush(ctx); err != nil {
		return Changes{}, err
	}
	inputs, err := e.recorder.recent(ctx)
	if err != nil {
		return Changes{}, err
	}
	out := Changes{Candidate: candidate.version, Active: active.version, Changed: []Change{}}
	for _, raw := range inputs {
		if err := ctx.Err(); err != nil {
			return Changes{}, err
		}
		var in Input
		if err := json.Unmarshal(raw, &in); err != nil {
			continue // not an input this version of Consilium recorded
		}
		out.Replayed++
		a, aErr := active.evalJSON(ctx, raw)
		c, cErr := candidate.evalJSON(ctx, raw)
		if errors.Is(aErr, context.Canceled) || errors.Is(cErr, context.Canceled) {
			return Changes{}, ctx.Err()
		}
		ao, co := outcome(a, aErr), outcome(c, cErr)
		if ao.Allow == co.Allow && reflect.DeepEqual(ao.Obligations, co.Obligations) && (aErr == nil) == (cErr == nil) {
			continue
		}
		sum := sha256.Sum256(raw)
		out.Changed = append(out.Changed, Change{InputDigest: hex.EncodeToString(sum[:]), Input: in, Active: ao, Candidate: co})
	}
	return out, nil
}

// Flush writes the recorded decision inputs not yet stored. [Engine.Run]
// calls it periodically and on the way out; call it before shutdown if Run
// is not used. Without a decision log it does nothing.
func (e *Engine) Flush(ctx context.Context) error {
	if e.recorder == nil {
		return nil
	}
	return e.recorder.flush(ctx, e.now())
}

// Run keeps the engine in step with the store until ctx ends: it follows
// activations made by other instances (every poll interval) and writes
// recorded decision inputs (every flush interval, and once more on the way
// out). Errors are logged and retried on the next tick; the engine keeps
// deciding with the version it has. Run returns nil when ctx ends.
func (e *Engine) Run(ctx context.Context) error {
	poll := time.NewTicker(e.pollInterval)
	defer poll.Stop()
	flush := time.NewTicker(e.flushInterval)
	defer flush.Stop()
	for {
		select {
		case <-ctx.Done():
			fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
			err := e.Flush(fctx)
			cancel()
			if err != nil {
				e.logger.Warn("final write of decision inputs failed", "error", err)
			}
			return nil
		case <-poll.C:
			if e.store == nil {
				continue
			}
			if err := e.Sync(ctx); err != nil && ctx.Err() == nil {
				e.logger.Warn("policy sync failed; keeping the current version", "version", e.Version(), "error", err)
			}
		case <-flush.C:
			if err := e.Flush(ctx); err != nil && ctx.Err() == nil {
				e.logger.Warn("writing decision inputs failed", "error", err)
			}
		}
	}
}
