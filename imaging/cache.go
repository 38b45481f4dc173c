package imaging

import "sync"

// objectCache keeps the last version of index objects this archive read
// or wrote, with their ETags, so that a compare-and-swap update can start
// from it instead of reading the object again. A stale entry costs one
// failed write (another gateway changed the object), after which the
// object is read afresh; searches and retrievals never read from it.
type objectCache struct {
	mu      sync.Mutex
	entries map[string]cachedObject
	bytes   int
	max     int
}

type cachedObject struct {
	etag string
	data []byte
}

// defaultCacheBytes bounds the cache; an index is a few hundred bytes per
// instance.
const defaultCacheBytes = 32 << 20

func (c *objectCache) get(name string) (cachedObject, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	o, ok := c.entries[name]
	return o, ok
}

func (c *objectCache) put(name, etag string, data []byte) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.entries == nil {
		c.entries = map[string]cachedObject{}
		if c.max == 0 {
			c.max = defaultCacheBytes
		}
	}
	if old, ok := c.entries[name]; ok {
		c.bytes -= len(old.data)
	}
	if len(data) > c.max/4 {
		delete(c.entries, name)
		return
	}
	// Make room by dropping arbitrary entries (map order): any entry is
	// as good as another to re-read.
	for n, o := range c.entries {
		if c.bytes+len(data) <= c.max {
			break
		}
		delete(c.entries, n)
		c.bytes -= len(o.data)
	}
	c.entries[name] = cachedObject{etag: etag, data: data}
	c.bytes += len(data)
}

func (c *objectCache) drop(name string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if o, ok := c.entries[name]; ok {
		c.bytes -= len(o.data)
		delete(c.entries, name)
	}
}
