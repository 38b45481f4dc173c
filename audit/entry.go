package audit

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"
)

// FormatVersion is the value of every entry's "v" member: the version of
// the entry format and of its canonical encoding.
const FormatVersion = 1

// GenesisHash is the "prev" of the first entry (seq 1): 64 zeros.
var GenesisHash = strings.Repeat("0", 64)

// Entry is one audit record: who did what to which pseudonymous target,
// what the policy decided and how the request ended, chained to the entry
// before it. The JSON member names are the stored format (see the package
// documentation); empty members are left out.
type Entry struct {
	// V is the format version, [FormatVersion]. Set by [Log.Record].
	V int `json:"v"`
	// Seq is the entry's position in the one global chain, from 1. Set
	// by [Log.Record].
	Seq uint64 `json:"seq"`
	// Time is when the entry was recorded, UTC. Set by [Log.Record]
	// when zero. Entries of several gateway instances are ordered by
	// Seq; their times follow each instance's clock.
	Time time.Time `json:"time"`
	// Source names the gateway instance that wrote the entry. Set by
	// [Log.Record].
	Source string `json:"source"`
	// RequestID links the entry to the gateway's operations log and to
	// the X-Request-Id header the caller received. One request may have
	// several entries (see package gateway).
	RequestID string `json:"request_id,omitempty"`
	// Actor is the authenticated caller; empty for refused anonymous
	// requests.
	Actor Actor `json:"actor"`
	// Action says what was attempted: a capability verb such as
	// "case.release" or "fhir.read", or the route pattern such as
	// "GET /whoami" when the handler named none.
	Action string `json:"action"`
	// Method is the HTTP method of the request, if any.
	Method string `json:"method,omitempty"`
	// Target names what the action touched, by pseudonymous ids only.
	Target Target `json:"target"`
	// Decision is the policy decision that allowed or refused the
	// action, when one was taken.
	Decision *Decision `json:"decision,omitempty"`
	// Outcome is the HTTP status the request was (or is about to be)
	// answered with.
	Outcome int `json:"outcome"`
	// Prev is the hash of the entry with Seq-1 ([GenesisHash] for the
	// first). Set by [Log.Record].
	Prev string `json:"prev"`
	// Hash is the lower-case hex SHA-256 of the entry's canonical
	// encoding without the "hash" member. Set by [Log.Record].
	Hash string `json:"hash,omitempty"`
}

// Actor is the principal behind an entry, as its client certificate
// says.
type Actor struct {
	ID      string `json:"id,omitempty"`
	Org     string `json:"org,omitempty"`
	Role    string `json:"role,omitempty"`
	Country string `json:"country,omitempty"`
}

// Target names what an action touched. Every field is a pseudonymous
// identifier: a gateway-issued case id, a patient pseudonym, a study
// hash, a resource type with a pseudonymous id. Never a name, a hospital
// identifier, a path or clinical content. [Log.Record] refuses values
// that are not short tokens of [A-Za-z0-9._:/-] (so free text, which is
// where names hide, cannot get in).
type Target struct {
	Case      string `json:"case,omitempty"`
	Patient   string `json:"patient,omitempty"`
	Study     string `json:"study,omitempty"`
	Resource  string `json:"resource,omitempty"`
	Principal string `json:"principal,omitempty"`
	Policy    string `json:"policy,omitempty"`
}

// Decision is a policy decision as the policy engine returns it.
type Decision struct {
	Allow bool `json:"allow"`
	// Reasons are human-readable; they must not hold identifiers.
	Reasons []string `json:"reasons,omitempty"`
	// InputDigest is the hex SHA-256 of the policy input.
	InputDigest string `json:"input_digest,omitempty"`
	// PolicyVersion is the version of the policy bundle that decided.
	PolicyVersion string `json:"policy_version,omitempty"`
}

// Limits on what an entry may hold, so that one entry stays small.
const (
	maxTokenLen   = 200
	maxReasons    = 32
	maxReasonLen  = 500
	maxActionLen  = 200
	maxEntryBytes = 16 << 10
)

// ErrInvalidEntry is returned by [Log.Record] for an entry that cannot
// be recorded as given: a target that is not a pseudonymous token, an
// oversized field.
var ErrInvalidEntry = errors.New("audit: invalid entry")

// validate checks what the caller filled in.
func (e *Entry) validate() error {
	tokens := []struct{ name, v string }{
		{"request id", e.RequestID},
		{"actor id", e.Actor.ID}, {"actor org", e.Actor.Org}, {"actor role", e.Actor.Role}, {"actor country", e.Actor.Country},
		{"method", e.Method},
		{"target case", e.Target.Case}, {"target patient", e.Target.Patient}, {"target study", e.Target.Study},
		{"target resource", e.Target.Resource}, {"target principal", e.Target.Principal}, {"target policy", e.Target.Policy},
	}
	if d := e.Decision; d != nil {
		tokens = append(tokens, struct{ name, v string }{"input digest", d.InputDigest}, struct{ name, v string }{"policy version", d.PolicyVersion})
		if len(d.Reasons) > maxReasons {
			return fmt.Errorf("%w: %d reasons, at most %d", ErrInvalidEntry, len(d.Reasons), maxReasons)
		}
		for _, r := range d.Reasons {
			if len(r) > maxReasonLen || !printableUTF8(r) {
				return fmt.Errorf("%w: a reason is longer than %d bytes or not printable", ErrInvalidEntry, maxReasonLen)
			}
		}
	}
	for _, t := range tokens {
		if !isToken(t.v) {
			// The value is not echoed: it may be what must not be here.
			return fmt.Errorf("%w: %s is not a short token of [A-Za-z0-9._:/-]", ErrInvalidEntry, t.name)
		}
	}
	if e.Action == "" || len(e.Action) > maxActionLen || !printableUTF8(e.Action) {
		return fmt.Errorf("%w: action must be 1 to %d printable bytes", ErrInvalidEntry, maxActionLen)
	}
	if e.Outcome < 0 || e.Outcome > 999 {
		return fmt.Errorf("%w: outcome %d is not an HTTP status", ErrInvalidEntry, e.Outcome)
	}
	return nil
}

// isToken reports whether s is empty or a short token of
// [A-Za-z0-9._:/-] (also '{' and '}' for route patterns, '@' and '+').
func isToken(s string) bool {
	if len(s) > maxTokenLen {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || strings.IndexByte("._:/-@+", c) >= 0) {
			return false
		}
	}
	return true
}

func printableUTF8(s string) bool {
	for _, r := range s {
		if r < 0x20 || r == 0x7f || r == 0xfffd {
			return false
		}
	}
	return true
}

// seal fills in the chain fields of e (Seq, Prev, V, Hash) and returns
// its stored line (canonical JSON, no trailing newline).
func (e *Entry) seal(seq uint64, prev string) ([]byte, error) {
	e.V, e.Seq, e.Prev, e.Hash = FormatVersion, seq, prev, ""
	body, err := json.Marshal(e)
	if err != nil {
		return nil, fmt.Errorf("audit: encoding entry: %w", err)
	}
	canon, err := canonicalJSON(body)
	if err != nil {
		return nil, fmt.Errorf("audit: encoding entry: %w", err)
	}
	sum := sha256.Sum256(canon)
	e.Hash = hex.EncodeToString(sum[:])
	line, err := json.Marshal(e)
	if err != nil {
		return nil, fmt.Errorf("audit: encoding entry: %w", err)
	}
	if line, err = canonicalJSON(line); err != nil {
		return nil, fmt.Errorf("audit: encoding entry: %w", err)
	}
	if len(line) > maxEntryBytes {
		return nil, fmt.Errorf("%w: %d bytes encoded, at most %d", ErrInvalidEntry, len(line), maxEntryBytes)
	}
	return line, nil
}

// EntryHash computes the hash of one stored entry line as the package
// documentation defines it: the line is parsed as JSON, its "hash"
// member removed, the rest encoded canonically (RFC 8785) and hashed with
// SHA-256. It returns the hex hash and the hash the line claims.
func EntryHash(line []byte) (computed, claimed string, err error) {
	// Canonicalising first refuses duplicate members and invalid UTF-8,
	// which decoding into a map would silently resolve.
	if _, err := canonicalJSON(line); err != nil {
		return "", "", fmt.Errorf("audit: entry: %w", err)
	}
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(line, &obj); err != nil {
		return "", "", fmt.Errorf("audit: entry is not a JSON object: %w", err)
	}
	if h, ok := obj["hash"]; ok {
		if err := json.Unmarshal(h, &claimed); err != nil {
			return "", "", fmt.Errorf("audit: entry hash is not a string: %w", err)
		}
		delete(obj, "hash")
	}
	body, err := json.Marshal(obj)
	if err != nil {
		return "", "", err
	}
	canon, err := canonicalJSON(body)
	if err != nil {
		return "", "", fmt.Errorf("audit: entry: %w", err)
	}
	sum := sha256.Sum256(canon)
	return hex.EncodeToString(sum[:]), claimed, nil
}

// ValidToken reports whether s may be stored as a target, actor or
// request id: empty, or at most 200 bytes of [A-Za-z0-9._:/-@+].
func ValidToken(s string) bool { return isToken(s) }
