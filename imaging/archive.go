package imaging

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"time"

	"github.com/consilium/consilium/storage"
)

// ErrNotFound is returned by [Archive.Study], [Study.Select] and the
// retrieval methods when the organisation has no such study, series or
// instance. It wraps [storage.ErrNotFound].
var ErrNotFound = fmt.Errorf("imaging: not found: %w", storage.ErrNotFound)

// Defaults for [Options].
const (
	DefaultMaxInstanceBytes = 64 << 30
	DefaultMaxHeaderBytes   = 16 << 20
)

// Options are the archive's collaborators and limits.
type Options struct {
	// Names returns the keyed hash of an identifier for object names
	// (storage.Keyring.NameHash). Required: every gateway on the same
	// store must use the same keyring, or they will not find each
	// other's studies.
	Names func(kind, value string) string
	// Logger receives operational messages (never identifiers).
	Logger *slog.Logger
	// MaxInstanceBytes bounds one instance. Default 64 GiB.
	MaxInstanceBytes int64
	// MaxHeaderBytes bounds the header of one instance (everything before
	// Pixel Data), which is held in memory until the instance's place is
	// decided. Default 16 MiB.
	MaxHeaderBytes int64
}

// Archive stores and indexes DICOM instances. It is safe for concurrent
// use, and several archives (gateway instances) may share one store.
type Archive struct {
	store     storage.Store
	names     func(kind, value string) string
	log       *slog.Logger
	maxBytes  int64
	maxHeader int64
	groups    groups
	cache     objectCache
	lagging   laggingCounts
}

// New returns an archive over store, which should be encrypted
// (storage.Encrypted): instances and indexes hold patient data.
func New(store storage.Store, opts Options) (*Archive, error) {
	if store == nil {
		return nil, errors.New("imaging: a store is required")
	}
	if opts.Names == nil {
		return nil, errors.New("imaging: a name hasher is required")
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	a := &Archive{
		store: store, names: opts.Names, log: log.With("component", "imaging"),
		maxBytes: opts.MaxInstanceBytes, maxHeader: opts.MaxHeaderBytes,
	}
	if a.maxBytes <= 0 {
		a.maxBytes = DefaultMaxInstanceBytes
	}
	if a.maxHeader <= 0 {
		a.maxHeader = DefaultMaxHeaderBytes
	}
	return a, nil
}

// Hash kinds given to Options.Names. Patient keys use "patient" with
// "org|PatientID", as FHIR does, so that one patient has one key.
const (
	kindOrg     = "dicom-org"
	kindStudy   = "study"
	kindSeries  = "series"
	kindSOP     = "sop"
	kindPatient = "patient"
)

// StudyKey returns the keyed hash that names a study in object names and
// policy inputs.
func (a *Archive) StudyKey(studyUID string) string { return a.names(kindStudy, studyUID) }

// PatientKey returns the pseudonymous key of a patient of org: the keyed
// hash of "org|patientID", or "" when the Patient ID is empty.
func (a *Archive) PatientKey(org, patientID string) string {
	if patientID == "" {
		return ""
	}
	return a.names(kindPatient, org+"|"+patientID)
}

func (a *Archive) orgPrefix(org string) string { return "dicom/" + a.names(kindOrg, org) + "/" }

func (a *Archive) instanceName(org, sopKey string) string {
	return a.orgPrefix(org) + "instances/" + sopKey
}

func (a *Archive) studyName(org, studyKey string) string {
	return a.orgPrefix(org) + "studies/" + studyKey
}

func (a *Archive) shardName(org, studyKey string) string {
	return a.orgPrefix(org) + "catalog/" + studyKey[:1]
}

// catalogShards are the first hex digits that shard the catalog.
const catalogShards = "0123456789abcdef"

// loadJSON reads the JSON object name into v and returns its ETag;
// exists is false (and v untouched) when there is no such object.
func (a *Archive) loadJSON(ctx context.Context, name string, v any) (etag string, exists bool, err error) {
	data, etag, exists, err := a.loadRaw(ctx, name)
	if err != nil || !exists {
		return "", exists, err
	}
	if err := json.Unmarshal(data, v); err != nil {
		return "", false, fmt.Errorf("imaging: decoding %s: %w", name, err)
	}
	return etag, true, nil
}

// loadRaw reads an object's bytes and remembers them in the cache.
func (a *Archive) loadRaw(ctx context.Context, name string) (data []byte, etag string, exists bool, err error) {
	rc, info, err := a.store.Get(ctx, name, storage.GetOptions{})
	if errors.Is(err, storage.ErrNotFound) {
		a.cache.drop(name)
		return nil, "", false, nil
	}
	if err != nil {
		return nil, "", false, err
	}
	defer rc.Close()
	if data, err = io.ReadAll(rc); err != nil {
		return nil, "", false, err
	}
	a.cache.put(name, info.ETag, data)
	return data, info.ETag, true, nil
}

// decodeCached decodes a cached object into v.
func (a *Archive) decodeCached(o cachedObject, v any) bool {
	return json.Unmarshal(o.data, v) == nil
}

// loadCached is loadJSON from the cache when the object is there: for
// decisions that a compare-and-swap checks again later.
func (a *Archive) loadCached(ctx context.Context, name string, v any) error {
	if o, ok := a.cache.get(name); ok {
		if err := json.Unmarshal(o.data, v); err == nil {
			return nil
		}
	}
	_, _, err := a.loadJSON(ctx, name, v)
	return err
}

// maxCASAttempts bounds the retries of a conflicting index update; each
// conflict means another writer made progress.
const maxCASAttempts = 32

// update applies mutate to the JSON object name (a fresh zero value of
// its type from newV when the object does not exist) and writes it back
// with compare-and-swap, retrying on conflict. mutate reports whether it
// changed anything; nothing is written otherwise.
func update[T any](ctx context.Context, a *Archive, name string, mutate func(v *T, exists bool) (bool, error)) error {
	cached, fromCache := a.cache.get(name)
	for attempt := 0; ; attempt++ {
		v := new(T)
		var (
			data   []byte
			etag   string
			exists bool
			err    error
		)
		if fromCache {
			data, etag, exists = cached.data, cached.etag, true
		} else if data, etag, exists, err = a.loadRaw(ctx, name); err != nil {
			return err
		}
		if exists {
			if err := json.Unmarshal(data, v); err != nil {
				if fromCache {
					fromCache = false
					a.cache.drop(name)
					attempt--
					continue
				}
				return fmt.Errorf("imaging: decoding %s: %w", name, err)
			}
		}
		changed, err := mutate(v, exists)
		if err != nil || !changed {
			return err
		}
		out, err := json.Marshal(v)
		if err != nil {
			return err
		}
		opts := storage.PutOptions{Size: int64(len(out)), ContentType: "application/json"}
		if exists {
			opts.IfMatch = etag
		} else {
			opts.IfAbsent = true
		}
		info, err := a.store.Put(ctx, name, bytes.NewReader(out), opts)
		if err == nil {
			a.cache.put(name, info.ETag, out)
			return nil
		}
		a.cache.drop(name)
		if !errors.Is(err, storage.ErrPreconditionFailed) && !errors.Is(err, storage.ErrExists) {
			return err
		}
		if fromCache {
			// The cached version was stale: read the object and try
			// again at once; that is not a conflict with a writer.
			fromCache = false
			attempt--
			continue
		}
		if attempt+1 >= maxCASAttempts {
			return fmt.Errorf("imaging: updating %s: gave up after %d conflicting writers: %w", name, attempt+1, err)
		}
		if err := backoff(ctx, attempt); err != nil {
			return err
		}
	}
}

// backoff sleeps a random time that grows with attempt (full jitter), so
// that writers who collided do not collide again.
func backoff(ctx context.Context, attempt int) error {
	ceiling := int64(2*time.Millisecond) << min(attempt, 7)
	n, _ := rand.Int(rand.Reader, big.NewInt(ceiling))
	t := time.NewTimer(time.Duration(n.Int64()))
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
