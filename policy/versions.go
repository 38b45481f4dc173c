package policy

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/consilium/consilium/storage"
)

// Errors of version management, for callers to branch on (HTTP status in
// brackets as a hint for the gateway).
var (
	// ErrNoStore: the engine has no store ([WithStore] or
	// [WithDecisionLog] missing) [500].
	ErrNoStore = errors.New("policy: no store configured")
	// ErrInvalidVersion: the version name is not 1-63 characters of
	// a-z 0-9 . _ - starting with a letter or digit, or is "builtin"
	// where a stored version is needed [400].
	ErrInvalidVersion = errors.New("policy: invalid version name")
	// ErrVersionExists: Upload of a version that exists; versions are
	// immutable [409].
	ErrVersionExists = errors.New("policy: version already exists")
	// ErrUnknownVersion: no such version [404].
	ErrUnknownVersion = errors.New("policy: unknown version")
	// ErrConflict: another activation changed the active version at the
	// same time; read the list again and retry [409].
	ErrConflict = errors.New("policy: concurrent activation")
)

// Object names in the store.
const (
	bundlePrefix = "policies/bundles/"
	bundleSuffix = ".tar.gz"
	activeName   = "policies/active.json"
)

var versionPattern = regexp.MustCompile(`^[a-z0-9][a-z0-9._-]{0,62}$`)

// ValidVersion reports whether v is a syntactically valid version name.
func ValidVersion(v string) bool {
	return versionPattern.MatchString(v) && !strings.Contains(v, "..")
}

// VersionInfo describes one bundle version.
type VersionInfo struct {
	Version string `json:"version"`
	// Size is the archive's size in bytes (0 for builtin).
	Size int64 `json:"size"`
	// Uploaded is when it was stored (zero for builtin).
	Uploaded time.Time `json:"uploaded,omitzero"`
	// SHA256 is the hex digest of the archive as uploaded, when known.
	SHA256 string `json:"sha256,omitempty"`
	// Active marks the active version.
	Active bool `json:"active"`
}

// Versions is what [Engine.List] returns.
type Versions struct {
	// Active is the active version.
	Active string `json:"active"`
	// Versions lists builtin first, then the stored versions by name.
	Versions []VersionInfo `json:"versions"`
}

// Activation records a switch of the active version.
type Activation struct {
	Version     string    `json:"version"`
	Previous    string    `json:"previous"`
	ActivatedAt time.Time `json:"activated_at"`
}

// Upload checks an OPA bundle archive (see [Check]) and stores it as
// version. Nothing is stored unless every check passes; the problems are
// returned as a [*BundleError] ([ErrInvalidBundle]). Returns
// [ErrInvalidVersion], [ErrVersionExists] (versions are immutable) or
// [ErrNoStore].
func (e *Engine) Upload(ctx context.Context, version string, r io.Reader) (VersionInfo, error) {
	if e.store == nil {
		return VersionInfo{}, ErrNoStore
	}
	if !ValidVersion(version) || version == BuiltinVersion {
		return VersionInfo{}, fmt.Errorf("%w: %q", ErrInvalidVersion, version)
	}
	name := bundlePrefix + version + bundleSuffix
	if _, err := e.store.Stat(ctx, name); err == nil {
		return VersionInfo{}, fmt.Errorf("%w: %s", ErrVersionExists, version)
	} else if !errors.Is(err, storage.ErrNotFound) {
		return VersionInfo{}, fmt.Errorf("look up policy version %s: %w", version, err)
	}
	raw, err := io.ReadAll(io.LimitReader(r, e.limits.MaxArchiveBytes+1))
	if err != nil {
		return VersionInfo{}, fmt.Errorf("read policy bundle: %w", err)
	}
	if int64(len(raw)) > e.limits.MaxArchiveBytes {
		return VersionInfo{}, &BundleError{Problems: []Problem{{Message: fmt.Sprintf("bundle archive is larger than %d bytes", e.limits.MaxArchiveBytes)}}}
	}
	files, problems := parseArchive(raw, e.limits)
	if len(problems) > 0 {
		return VersionInfo{}, &BundleError{Problems: capProblems(problems)}
	}
	if err := files.check(ctx, e.limits).Err(); err != nil {
		return VersionInfo{}, err
	}
	sum := sha256.Sum256(raw)
	digest := hex.EncodeToString(sum[:])
	info, err := e.store.Put(ctx, name, bytes.NewReader(raw), storage.PutOptions{
		Size:        int64(len(raw)),
		IfAbsent:    true,
		ContentType: "application/gzip",
		Metadata:    map[string]string{"sha256": digest},
	})
	if errors.Is(err, storage.ErrExists) {
		return VersionInfo{}, fmt.Errorf("%w: %s", ErrVersionExists, version)
	}
	if err != nil {
		return VersionInfo{}, fmt.Errorf("store policy version %s: %w", version, err)
	}
	e.logger.Info("policy bundle uploaded", "version", version, "sha256", digest)
	return VersionInfo{Version: version, Size: int64(len(raw)), Uploaded: info.ModTime, SHA256: digest, Active: false}, nil
}

// List returns the versions in the store and which is active. Returns
// [ErrNoStore].
func (e *Engine) List(ctx context.Context) (Versions, error) {
	if e.store == nil {
		return Versions{}, ErrNoStore
	}
	ptr, _, err := e.readActive(ctx)
	if err != nil {
		return Versions{}, err
	}
	out := Versions{Active: ptr.Version}
	out.Versions = append(out.Versions, VersionInfo{Version: BuiltinVersion, Active: ptr.Version == BuiltinVersion})
	for info, err := range e.store.List(ctx, bundlePrefix) {
		if err != nil {
			return Versions{}, fmt.Errorf("list policy versions: %w", err)
		}
		v, ok := strings.CutSuffix(strings.TrimPrefix(info.Name, bundlePrefix), bundleSuffix)
		if !ok || !ValidVersion(v) {
			continue
		}
		out.Versions = append(out.Versions, VersionInfo{
			Version: v, Size: info.Size, Uploaded: info.ModTime,
			SHA256: info.Metadata["sha256"], Active: v == ptr.Version,
		})
	}
	slices.SortStableFunc(out.Versions[1:], func(a, b VersionInfo) int { return strings.Compare(a.Version, b.Version) })
	return out, nil
}

// Activate makes version the active policy for every engine on the store.
// The switch is a compare-and-swap of the active pointer, so two concurrent
// activations cannot both win: the loser gets [ErrConflict]. This engine
// switches at once; the others on their next poll ([Engine.Run]). Rollback
// is activating an older version. Returns [ErrInvalidVersion],
// [ErrUnknownVersion] or [ErrNoStore].
func (e *Engine) Activate(ctx context.Context, version string) (Activation, error) {
	if e.store == nil {
		return Activation{}, ErrNoStore
	}
	if !ValidVersion(version) {
		return Activation{}, fmt.Errorf("%w: %q", ErrInvalidVersion, version)
	}
	p, err := e.load(ctx, version)
	if err != nil {
		return Activation{}, err
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	cur, etag, err := e.readActive(ctx)
	if err != nil {
		return Activation{}, err
	}
	act := Activation{Version: version, Previous: cur.Version, ActivatedAt: e.now().UTC()}
	body, err := json.Marshal(activePointer{Version: act.Version, Previous: act.Previous, ActivatedAt: act.ActivatedAt})
	if err != nil {
		return Activation{}, fmt.Errorf("encode active policy pointer: %w", err)
	}
	opts := storage.PutOptions{Size: int64(len(body)), ContentType: "application/json"}
	if etag == "" {
		opts.IfAbsent = true
	} else {
		opts.IfMatch = etag
	}
	info, err := e.store.Put(ctx, activeName, bytes.NewReader(body), opts)
	if errors.Is(err, storage.ErrExists) || errors.Is(err, storage.ErrPreconditionFailed) {
		return Activation{}, fmt.Errorf("%w: activate %s", ErrConflict, version)
	}
	if err != nil {
		return Activation{}, fmt.Errorf("write active policy pointer: %w", err)
	}
	e.current.Store(p)
	e.activeETag = info.ETag
	e.synced = true
	e.logger.Info("policy activated", "version", version, "previous", cur.Version)
	return act, nil
}

// Sync makes this engine use the version active in the store, if it changed
// since the last look. [Engine.Run] calls it on every poll. On error the
// engine keeps deciding with the version it had.
func (e *Engine) Sync(ctx context.Context) error {
	if e.store == nil {
		return ErrNoStore
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	info, err := e.store.Stat(ctx, activeName)
	switch {
	case errors.Is(err, storage.ErrNotFound):
		info = storage.Info{}
	case err != nil:
		return fmt.Errorf("look up active policy: %w", err)
	}
	if e.synced && info.ETag == e.activeETag {
		return nil
	}
	ptr, etag, err := e.readActive(ctx)
	if err != nil {
		return err
	}
	cur := e.current.Load()
	if cur.version != ptr.Version {
		p, err := e.load(ctx, ptr.Version)
		if err != nil {
			return fmt.Errorf("load active policy: %w", err)
		}
		e.current.Store(p)
		e.logger.Info("policy version changed", "version", p.version, "previous", cur.version)
	}
	e.activeETag = etag
	e.synced = true
	return nil
}

// activePointer is the content of policies/active.json.
type activePointer struct {
	Version     string    `json:"version"`
	Previous    string    `json:"previous,omitempty"`
	ActivatedAt time.Time `json:"activated_at"`
}

// readActive returns the active pointer and its ETag; builtin and "" when
// nothing was ever activated.
func (e *Engine) readActive(ctx context.Context) (activePointer, string, error) {
	rc, info, err := e.store.Get(ctx, activeName, storage.GetOptions{})
	if errors.Is(err, storage.ErrNotFound) {
		return activePointer{Version: BuiltinVersion}, "", nil
	}
	if err != nil {
		return activePointer{}, "", fmt.Errorf("read active policy pointer: %w", err)
	}
	defer rc.Close()
	var ptr activePointer
	if err := json.NewDecoder(io.LimitReader(rc, 64<<10)).Decode(&ptr); err != nil {
		return activePointer{}, "", fmt.Errorf("decode active policy pointer: %w", err)
	}
	if !ValidVersion(ptr.Version) {
		return activePointer{}, "", fmt.Errorf("active policy pointer names %w %q", ErrInvalidVersion, ptr.Version)
	}
	return ptr, info.ETag, nil
}

// load compiles a version: the builtin one is compiled already; a stored
// one is read, parsed and compiled (it was fully checked at upload).
func (e *Engine) load(ctx context.Context, version string) (*prepared, error) {
	if version == BuiltinVersion {
		return e.builtin, nil
	}
	files, err := e.fetch(ctx, version)
	if err != nil {
		return nil, err
	}
	return files.prepare(ctx, version, e.limits)
}

// fetch reads a stored version's files.
func (e *Engine) fetch(ctx context.Context, version string) (bundleFiles, error) {
	rc, _, err := e.store.Get(ctx, bundlePrefix+version+bundleSuffix, storage.GetOptions{})
	if errors.Is(err, storage.ErrNotFound) {
		return nil, fmt.Errorf("%w: %s", ErrUnknownVersion, version)
	}
	if err != nil {
		return nil, fmt.Errorf("read policy version %s: %w", version, err)
	}
	defer rc.Close()
	files, problems := readArchive(rc, e.limits)
	if len(problems) > 0 {
		return nil, fmt.Errorf("policy version %s: %w", version, &BundleError{Problems: problems})
	}
	return files, nil
}
