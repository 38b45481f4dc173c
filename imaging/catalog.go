package imaging

import (
	"context"
	"slices"
	"sync"
	"time"
)

// Catalog updates that only change a study's counts (Number of Study
// Related Series and Instances) are written a moment later, together with
// the others that arrive meanwhile, instead of at the end of every store
// request: a series stored one instance per request would otherwise
// rewrite the same catalog shard for every instance. A new study, or
// changed study attributes or modalities, are written before the request
// is answered. Counts lag by about CatalogLag; if the process stops before
// writing them (Flush writes them on a clean stop), the next store into
// the study writes them.

// CatalogLag is how long count-only catalog updates wait to be written.
const CatalogLag = 200 * time.Millisecond

// laggingCounts holds the deferred summaries by shard name and study key.
type laggingCounts struct {
	mu        sync.Mutex
	pending   map[string]map[string]studySummary
	scheduled bool
	flushing  sync.Mutex // one flush at a time
}

// sameButCounts reports whether two summaries differ in counts only.
func sameButCounts(a, b studySummary) bool {
	return a.Attrs == b.Attrs && slices.Equal(a.Modalities, b.Modalities)
}

// publishSummary records a study's summary in the catalog: now, unless
// the catalog as this archive last saw it differs only in counts.
func (a *Archive) publishSummary(ctx context.Context, org, key string, sum studySummary) error {
	shard := a.shardName(org, key)
	var cur catalogShard
	if o, ok := a.cache.get(shard); ok && a.decodeCached(o, &cur) {
		if old := cur.Studies[key]; old != nil && old.Instances > 0 && sum.Instances > 0 && sameButCounts(*old, sum) {
			a.deferCounts(shard, key, sum)
			return nil
		}
	}
	return a.updateCatalog(ctx, org, key, sum)
}

func (a *Archive) deferCounts(shard, key string, sum studySummary) {
	l := &a.lagging
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.pending == nil {
		l.pending = map[string]map[string]studySummary{}
	}
	if l.pending[shard] == nil {
		l.pending[shard] = map[string]studySummary{}
	}
	if old, ok := l.pending[shard][key]; !ok || old.Rev < sum.Rev {
		l.pending[shard][key] = sum
	}
	if !l.scheduled {
		l.scheduled = true
		time.AfterFunc(CatalogLag, func() {
			ctx, cancel := context.WithTimeout(context.Background(), commitTimeout)
			defer cancel()
			if err := a.Flush(ctx); err != nil {
				a.log.Error("writing deferred catalog counts", "err", err)
			}
		})
	}
}

// Flush writes the catalog counts that are waiting (see CatalogLag). Call
// it before the process stops.
func (a *Archive) Flush(ctx context.Context) error {
	l := &a.lagging
	l.flushing.Lock()
	defer l.flushing.Unlock()
	l.mu.Lock()
	pending := l.pending
	l.pending, l.scheduled = nil, false
	l.mu.Unlock()
	var errs []error
	for shard, studies := range pending {
		err := groupUpdate(ctx, a, shard, func(c *catalogShard, exists bool) (bool, error) {
			changed := false
			for key, sum := range studies {
				changed = setSummary(c, key, sum) || changed
			}
			return changed, nil
		})
		if err != nil {
			errs = append(errs, err)
		}
	}
	if len(errs) > 0 {
		return errs[0]
	}
	return nil
}

// setSummary puts a summary into a shard unless it has the same or a
// later revision.
func setSummary(c *catalogShard, key string, sum studySummary) bool {
	c.V = indexVersion
	if c.Studies == nil {
		c.Studies = map[string]*studySummary{}
	}
	if old := c.Studies[key]; old != nil && old.Rev >= sum.Rev {
		return false
	}
	c.Studies[key] = &sum
	return true
}
