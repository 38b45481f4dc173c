package imaging

import (
	"context"
	"sync"
	"time"
)

// Index objects are updated by compare-and-swap, which keeps gateway
// instances that share a store consistent. Within one process, requests
// that update the same object at the same time (several STOW-RS requests
// into one study) would mostly collide and retry; instead they queue, and
// one of them applies every queued change in one read and one write
// (group commit). The others wait for that write.

// groups queues the changes to each index object by name.
type groups struct {
	mu     sync.Mutex
	queues map[string]*changeQueue
}

type changeQueue struct {
	leading bool
	calls   []*change
}

// change is one caller's mutation of an object and where its result goes.
type change struct {
	apply func(v any, exists bool) (bool, error)
	err   error
	done  chan struct{} // closed when err is set
	lead  chan struct{} // closed when this caller is to apply the queue
}

// commitTimeout bounds a group commit that a leader runs for others, who
// do not share its request's context.
const commitTimeout = 2 * time.Minute

// groupUpdate applies mutate to the JSON object name as [update] does,
// in one compare-and-swap together with the changes other goroutines of
// this archive queue for the same object meanwhile. An error mutate
// returns fails only its own change.
func groupUpdate[T any](ctx context.Context, a *Archive, name string, mutate func(v *T, exists bool) (bool, error)) error {
	c := &change{
		apply: func(v any, exists bool) (bool, error) { return mutate(v.(*T), exists) },
		done:  make(chan struct{}),
		lead:  make(chan struct{}),
	}
	g := &a.groups
	g.mu.Lock()
	if g.queues == nil {
		g.queues = map[string]*changeQueue{}
	}
	q := g.queues[name]
	if q == nil {
		q = &changeQueue{}
		g.queues[name] = q
	}
	q.calls = append(q.calls, c)
	leader := !q.leading
	q.leading = true
	g.mu.Unlock()
	if !leader {
		select {
		case <-c.done:
			return c.err
		case <-c.lead:
		}
	}
	// Lead: take the queue as it is now and commit it.
	g.mu.Lock()
	batch := q.calls
	q.calls = nil
	g.mu.Unlock()
	wctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), commitTimeout)
	errs := make([]error, len(batch))
	err := update(wctx, a, name, func(v *T, exists bool) (bool, error) {
		changed := false
		for i, b := range batch {
			ch, err := b.apply(v, exists)
			errs[i] = err
			changed = changed || (ch && err == nil)
		}
		return changed, nil
	})
	cancel()
	for i, b := range batch {
		b.err = errs[i]
		if err != nil {
			b.err = err
		}
		if b != c {
			close(b.done)
		}
	}
	// Hand the lead to the first caller that queued meanwhile.
	g.mu.Lock()
	if len(q.calls) > 0 {
		close(q.calls[0].lead)
	} else {
		q.leading = false
		delete(g.queues, name)
	}
	g.mu.Unlock()
	return c.err
}
