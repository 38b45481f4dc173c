package audit

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"aead.dev/minisign"
)

// CheckpointType is the "type" member of every checkpoint statement.
const CheckpointType = "consilium.audit.checkpoint"

// Checkpoint is a signed statement that the chain had, at Seq, the entry
// whose hash is Hash. Because every entry's hash covers the one before,
// a checkpoint commits to the whole chain up to Seq: entries up to it can
// be neither changed nor removed without the signature failing to match.
//
// A checkpoint object is two parts: the statement as one line of
// canonical JSON ending in "\n", which is the signed message, followed
// by a minisign signature of that line (its trusted comment repeats seq
// and hash). So the standard tool verifies it:
//
//	head -n 1 cp.checkpoint > stmt && tail -n +2 cp.checkpoint > stmt.minisig
//	minisign -V -p gateway.pub -m stmt
type Checkpoint struct {
	V       int       `json:"v"`
	Type    string    `json:"type"`
	Seq     uint64    `json:"seq"`
	Hash    string    `json:"hash"`
	Segment string    `json:"segment"`
	Time    time.Time `json:"time"`
	Source  string    `json:"source"`
}

// errBadCheckpoint is wrapped by checkpoint parsing errors.
var errBadCheckpoint = errors.New("bad checkpoint")

// signCheckpoint returns the checkpoint object for c.
func signCheckpoint(key minisign.PrivateKey, c Checkpoint) ([]byte, error) {
	body, err := json.Marshal(c)
	if err != nil {
		return nil, err
	}
	stmt, err := canonicalJSON(body)
	if err != nil {
		return nil, err
	}
	stmt = append(stmt, '\n')
	sig := minisign.SignWithComments(key, stmt,
		fmt.Sprintf("consilium audit checkpoint seq:%d hash:%s", c.Seq, c.Hash),
		"consilium audit checkpoint")
	return append(stmt, sig...), nil
}

// parseCheckpoint splits a checkpoint object, checks the signature with
// pub and returns the statement.
func parseCheckpoint(pub minisign.PublicKey, data []byte) (Checkpoint, error) {
	i := bytes.IndexByte(data, '\n')
	if i < 0 {
		return Checkpoint{}, fmt.Errorf("%w: no statement line", errBadCheckpoint)
	}
	stmt, sig := data[:i+1], data[i+1:]
	var c Checkpoint
	if err := json.Unmarshal(stmt, &c); err != nil {
		return Checkpoint{}, fmt.Errorf("%w: statement: %v", errBadCheckpoint, err)
	}
	if c.V != FormatVersion || c.Type != CheckpointType {
		return Checkpoint{}, fmt.Errorf("%w: type %q version %d", errBadCheckpoint, c.Type, c.V)
	}
	if !minisign.Verify(pub, stmt, sig) {
		return Checkpoint{}, fmt.Errorf("%w: the signature does not verify with key %X", errBadCheckpoint, pub.ID())
	}
	return c, nil
}
