package policy

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/bundle"
	"github.com/open-policy-agent/opa/v1/metrics"
	"github.com/open-policy-agent/opa/v1/rego"
	opastorage "github.com/open-policy-agent/opa/v1/storage"
	"github.com/open-policy-agent/opa/v1/storage/inmem"
	"github.com/open-policy-agent/opa/v1/topdown"

	"github.com/consilium/consilium/policy/builtin"
	"github.com/consilium/consilium/storage"
)

// BuiltinVersion is the version name of the default bundle embedded in the
// binary. It cannot be uploaded over, and is active until another version is
// activated.
const BuiltinVersion = "builtin"

// Engine decides requests with the active policy bundle and manages bundle
// versions. It is safe for concurrent use.
type Engine struct {
	logger        *slog.Logger
	now           func() time.Time
	store         storage.Store
	recorder      *recorder
	pollInterval  time.Duration
	flushInterval time.Duration
	limits        Limits

	builtin *prepared
	current atomic.Pointer[prepared]

	// mu serialises changes of the active version within this process;
	// activeETag is the ETag of the active pointer last applied, synced
	// whether it was ever read.
	mu         sync.Mutex
	activeETag string
	synced     bool
}

// Option configures an [Engine].
type Option func(*Engine)

// WithLogger sets the logger (default: discard).
func WithLogger(l *slog.Logger) Option { return func(e *Engine) { e.logger = l } }

// WithClock sets the clock that stamps inputs without a time (default
// time.Now).
func WithClock(now func() time.Time) Option { return func(e *Engine) { e.now = now } }

// WithStore keeps bundle versions and the active pointer in s, under
// "policies/". Without it the engine runs the builtin bundle and the
// version-management methods return [ErrNoStore].
func WithStore(s storage.Store) Option { return func(e *Engine) { e.store = s } }

// WithDecisionLog records the inputs of recent decisions in s, for
// [Engine.DryRun], keeping about the last limit of them (default 1000 when
// limit <= 0). The inputs are personal data (pseudonymous patient keys,
// consents): s must be the encrypted store (storage.NewEncrypted). They are
// written in batches by [Engine.Run] or [Engine.Flush], never one write per
// decision.
func WithDecisionLog(s storage.Store, limit int) Option {
	return func(e *Engine) {
		if limit <= 0 {
			limit = defaultRecordLimit
		}
		e.recorder = newRecorder(s, limit)
	}
}

// WithPollInterval sets how often [Engine.Run] checks the store for a newly
// activated version (default 2 s; every instance follows an activation
// within this interval plus the time to compile the bundle).
func WithPollInterval(d time.Duration) Option { return func(e *Engine) { e.pollInterval = d } }

// WithFlushInterval sets how often [Engine.Run] writes recorded decision
// inputs (default 10 s).
func WithFlushInterval(d time.Duration) Option { return func(e *Engine) { e.flushInterval = d } }

// WithLimits bounds uploaded bundles (see [Limits] for the defaults).
func WithLimits(l Limits) Option { return func(e *Engine) { e.limits = l } }

// New builds an engine. It compiles the embedded default bundle and, with a
// store, loads the version activated there; it fails if that version cannot
// be loaded, rather than run a policy the compliance officers did not
// choose.
func New(ctx context.Context, opts ...Option) (*Engine, error) {
	e := &Engine{
		logger:        slog.New(slog.DiscardHandler),
		now:           time.Now,
		pollInterval:  2 * time.Second,
		flushInterval: 10 * time.Second,
	}
	for _, o := range opts {
		o(e)
	}
	e.logger = e.logger.With("component", "policy")
	e.limits = e.limits.withDefaults()
	if e.pollInterval <= 0 || e.flushInterval <= 0 {
		return nil, errors.New("policy: poll and flush intervals must be positive")
	}
	files, problems := readFS(builtin.FS(), e.limits)
	if len(problems) > 0 {
		return nil, fmt.Errorf("read builtin bundle: %w", &BundleError{Problems: problems})
	}
	p, err := files.prepare(ctx, BuiltinVersion, e.limits)
	if err != nil {
		return nil, fmt.Errorf("prepare builtin bundle: %w", err)
	}
	e.builtin = p
	e.current.Store(p)
	if e.store != nil {
		if err := e.Sync(ctx); err != nil {
			return nil, err
		}
	}
	return e, nil
}

// Version returns the version of the bundle that decides now.
func (e *Engine) Version() string { return e.current.Load().version }

// Decide evaluates the active policy for one request. The error is non-nil
// only when no decision could be made (invalid input: [ErrInvalidInput];
// a policy that fails or answers malformed); the decision then denies.
// A deny is not an error: see [Decision.Err].
func (e *Engine) Decide(ctx context.Context, in Input) (Decision, error) {
	n, err := in.normalize(e.now)
	if err != nil {
		return Decision{Reasons: []string{"invalid policy input"}}, err
	}
	raw, err := n.canonicalJSON()
	if err != nil {
		return Decision{Reasons: []string{"invalid policy input"}}, err
	}
	sum := sha256.Sum256(raw)
	p := e.current.Load()
	d, err := p.eval(ctx, n.astValue())
	d.InputDigest = hex.EncodeToString(sum[:])
	d.PolicyVersion = p.version
	if err != nil {
		return d, err
	}
	if e.recorder != nil {
		e.recorder.add(raw)
	}
	return d, nil
}

// prepared is a compiled bundle ready to decide.
type prepared struct {
	version string
	query   rego.PreparedEvalQuery
	data    dataCache
}

// prepare parses and compiles the files into a prepared decision query.
func (files bundleFiles) prepare(ctx context.Context, version string, lim Limits) (*prepared, error) {
	b, problems := files.parse(lim)
	if len(problems) > 0 {
		return nil, &BundleError{Problems: problems}
	}
	return prepare(ctx, version, b)
}

// prepare compiles b, without its tests, into a prepared query of
// [Entrypoint].
func prepare(ctx context.Context, version string, b *bundle.Bundle) (*prepared, error) {
	nb := b.Copy()
	nb.Modules = slices.DeleteFunc(nb.Modules, func(m bundle.ModuleFile) bool {
		return strings.HasSuffix(m.Path, "_test.rego")
	})
	// The store keeps the bundle's data as AST values, so that evaluations
	// do not convert the cross-border table again on every read.
	store := inmem.NewWithOpts(inmem.OptReturnASTValuesOnRead(true))
	txn, err := store.NewTransaction(ctx, opastorage.WriteParams)
	if err != nil {
		return nil, fmt.Errorf("compile policy %s: %w", version, err)
	}
	r := rego.New(
		rego.Query(Entrypoint),
		rego.ParsedBundle("consilium", &nb),
		rego.Store(store),
		rego.Transaction(txn),
		rego.Capabilities(capabilities()),
		rego.SetRegoVersion(ast.RegoV1),
	)
	q, err := r.PrepareForEval(ctx)
	if err != nil {
		store.Abort(ctx, txn)
		return nil, fmt.Errorf("compile policy %s: %w", version, err)
	}
	if err := store.Commit(ctx, txn); err != nil {
		return nil, fmt.Errorf("compile policy %s: %w", version, err)
	}
	root, err := opastorage.ReadOne(ctx, store, opastorage.RootPath)
	if err != nil {
		return nil, fmt.Errorf("read policy %s data: %w", version, err)
	}
	v, ok := root.(ast.Value)
	if !ok {
		return nil, fmt.Errorf("read policy %s data: got %T, not an AST value", version, root)
	}
	return &prepared{version: version, query: q, data: dataCache{root: v}}, nil
}

// dataCache hands OPA the base documents of a prepared bundle's store
// directly. Nothing writes to that store after the bundle is prepared, so
// every decision can skip the store reads that OPA's per-decision cache
// would otherwise repeat (and their allocations). It holds what the store
// holds, and the whole data document itself is left to the store (which
// hides data.system from it). It is read-only and safe for concurrent
// decisions.
type dataCache struct{ root ast.Value }

var _ topdown.BaseCache = dataCache{}

// Get returns the base document at ref, or nil when the bundle's data has
// none there.
func (c dataCache) Get(ref ast.Ref) ast.Value {
	if c.root == nil || len(ref) < 2 || !ref[0].Equal(ast.DefaultRootDocument) {
		return nil
	}
	v, err := c.root.Find(ref[1:])
	if err != nil {
		return nil
	}
	return v
}

// Put does nothing: the cache holds all of the bundle's data already.
func (dataCache) Put(ast.Ref, ast.Value) {}

// evalJSON decides one canonical JSON input (a recorded one, or a probe).
// On error the decision denies.
func (p *prepared) evalJSON(ctx context.Context, raw []byte) (Decision, error) {
	v, err := ast.ValueFromReader(bytes.NewReader(raw))
	if err != nil {
		return Decision{Reasons: []string{"the policy could not decide"}}, fmt.Errorf("policy input: %w", err)
	}
	return p.eval(ctx, v)
}

// eval decides one input. On error the decision denies.
func (p *prepared) eval(ctx context.Context, v ast.Value) (Decision, error) {
	deny := Decision{Reasons: []string{"the policy could not decide"}}
	rs, err := p.query.Eval(ctx, rego.EvalParsedInput(v),
		rego.EvalBaseCache(p.data),
		// No per-decision metrics, and the result as AST: converting it
		// to Go maps only to read four fields costs more than reading them.
		rego.EvalMetrics(metrics.NoOp()),
		rego.EvalGenerateJSON(func(t *ast.Term, _ *rego.EvalContext) (any, error) { return t, nil }))
	if err != nil {
		return deny, fmt.Errorf("evaluate policy %s: %w", p.version, err)
	}
	if len(rs) != 1 || len(rs[0].Expressions) != 1 {
		return deny, fmt.Errorf("policy %s: %s is undefined for this input", p.version, Entrypoint)
	}
	t, ok := rs[0].Expressions[0].Value.(*ast.Term)
	if !ok {
		return deny, fmt.Errorf("policy %s: unexpected result type %T", p.version, rs[0].Expressions[0].Value)
	}
	d, err := decodeDecision(t.Value)
	if err != nil {
		return deny, fmt.Errorf("policy %s: %w", p.version, err)
	}
	return d, nil
}

// decodeDecision reads the policy's answer strictly: anything malformed is
// an error, so a broken policy cannot allow by accident.
func decodeDecision(v ast.Value) (Decision, error) {
	m, ok := v.(ast.Object)
	if !ok {
		return Decision{}, fmt.Errorf("%s is not an object", Entrypoint)
	}
	allow, ok := field(m, keys.allow).(ast.Boolean)
	if !ok {
		return Decision{}, fmt.Errorf("%s.allow is not a boolean", Entrypoint)
	}
	reasons, err := stringList(field(m, keys.reasons), "reasons")
	if err != nil {
		return Decision{}, err
	}
	d := Decision{Allow: bool(allow), Reasons: reasons}
	if raw := field(m, keys.obligations); raw != nil {
		o, ok := raw.(ast.Object)
		if !ok {
			return Decision{}, fmt.Errorf("%s.obligations is not an object", Entrypoint)
		}
		if d.Obligations, err = decodeObligations(o); err != nil {
			return Decision{}, err
		}
	}
	return d, nil
}

// field returns the value under key k, or nil.
func field(o ast.Object, k *ast.Term) ast.Value {
	t := o.Get(k)
	if t == nil {
		return nil
	}
	return t.Value
}

func decodeObligations(o ast.Object) (Obligations, error) {
	var ob Obligations
	var err error
	if v := field(o, keys.deidProfile); v != nil {
		s, isString := v.(ast.String)
		if !isString || !slices.Contains([]string{"", ProfileShifted, ProfileSafeHarbor}, string(s)) {
			return ob, fmt.Errorf("obligations.deid_profile %v is not shifted or safe-harbor", v)
		}
		ob.DeidProfile = string(s)
	}
	if ob.DeidOptions, err = stringList(field(o, keys.deidOptions), "obligations.deid_options"); err != nil {
		return ob, err
	}
	if ob.ExcludeLabels, err = stringList(field(o, keys.excludeLabels), "obligations.exclude_labels"); err != nil {
		return ob, err
	}
	if v := field(o, keys.withholdBurnedIn); v != nil {
		b, isBool := v.(ast.Boolean)
		if !isBool {
			return ob, errors.New("obligations.withhold_burned_in is not a boolean")
		}
		ob.WithholdBurnedIn = bool(b)
	}
	if v := field(o, keys.expires); v != nil {
		s, isString := v.(ast.String)
		if !isString {
			return ob, errors.New("obligations.expires is not a string")
		}
		if s != "" {
			if _, err := time.Parse(time.RFC3339Nano, string(s)); err != nil {
				return ob, fmt.Errorf("obligations.expires %q is not RFC 3339", string(s))
			}
		}
		ob.Expires = string(s)
	}
	if len(ob.DeidOptions) == 0 {
		ob.DeidOptions = nil
	}
	if len(ob.ExcludeLabels) == 0 {
		ob.ExcludeLabels = nil
	}
	return ob, nil
}

// stringList reads an optional array of strings.
func stringList(v ast.Value, name string) ([]string, error) {
	if v == nil {
		return []string{}, nil
	}
	arr, ok := v.(*ast.Array)
	if !ok {
		return nil, fmt.Errorf("%s is not an array", name)
	}
	out := make([]string, arr.Len())
	for i := range arr.Len() {
		s, ok := arr.Elem(i).Value.(ast.String)
		if !ok {
			return nil, fmt.Errorf("%s[%d] is not a string", name, i)
		}
		out[i] = string(s)
	}
	return out, nil
}

// capabilities are OPA's built-in functions minus those that reach outside
// the process: a policy must decide from its input and data alone, and an
// uploaded bundle must not be able to make network calls or read the
// gateway's environment.
func capabilities() *ast.Capabilities {
	c := ast.CapabilitiesForThisVersion()
	c.Builtins = slices.DeleteFunc(c.Builtins, func(b *ast.Builtin) bool {
		switch b.Name {
		case "http.send", "net.lookup_ip_addr", "opa.runtime":
			return true
		}
		return false
	})
	c.AllowNet = []string{}
	return c
}

// newCompiler is the compiler bundles are checked with.
func newCompiler() *ast.Compiler {
	return ast.NewCompiler().
		WithCapabilities(capabilities()).
		WithEnablePrintStatements(true).
		WithDefaultRegoVersion(ast.RegoV1).
		SetErrorLimit(maxProblems)
}
