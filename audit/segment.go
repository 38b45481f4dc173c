package audit

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	"github.com/consilium/consilium/storage"
)

// Object layout under the log's prefix (default "audit/"):
//
//	log/<group, 16 digits>/<first seq, 20 digits>.ndjson   segments
//	checkpoints/<2^64-1 - seq, 20 digits>.checkpoint       checkpoints
//
// A segment holds the entries first..first+n-1 (n <= [MaxBatchLimit]),
// one canonical JSON entry per line. Its group is first/10000, so that no
// folder or listing holds more than 10,000 segments and the head is found
// by listing a few groups, not the whole log. Checkpoint names count down
// so that the newest checkpoint is the first one listed.
const (
	segmentDir    = "log/"
	checkpointDir = "checkpoints/"
	segmentExt    = ".ndjson"
	checkpointExt = ".checkpoint"
	groupSize     = 10000
	// MaxBatchLimit is the most entries one segment may hold. It is below
	// the group size, so every group up to the head's holds the start of
	// at least one segment.
	MaxBatchLimit = 1000
	// maxSegmentBytes bounds what a reader accepts for one segment.
	maxSegmentBytes = MaxBatchLimit * (maxEntryBytes + 1)
)

// Metadata keys stored with each segment. They help readers skip
// segments; verification never trusts them.
const (
	metaCount   = "audit-count"
	metaMinTime = "audit-min-time"
	metaMaxTime = "audit-max-time"
)

func segmentName(prefix string, first uint64) string {
	return fmt.Sprintf("%s%s%016d/%020d%s", prefix, segmentDir, first/groupSize, first, segmentExt)
}

func groupPrefix(prefix string, group uint64) string {
	return fmt.Sprintf("%s%s%016d/", prefix, segmentDir, group)
}

// parseSegmentName returns the first sequence number of a segment name,
// or ok false for a name that is not one.
func parseSegmentName(prefix, name string) (first uint64, ok bool) {
	rest, ok := strings.CutPrefix(name, prefix+segmentDir)
	if !ok {
		return 0, false
	}
	group, file, ok := strings.Cut(rest, "/")
	if !ok || len(group) != 16 {
		return 0, false
	}
	num, ok := strings.CutSuffix(file, segmentExt)
	if !ok || len(num) != 20 {
		return 0, false
	}
	first, err := strconv.ParseUint(num, 10, 64)
	if err != nil || first == 0 || fmt.Sprintf("%016d", first/groupSize) != group {
		return 0, false
	}
	return first, true
}

func checkpointName(prefix string, seq uint64) string {
	return fmt.Sprintf("%s%s%020d%s", prefix, checkpointDir, ^seq, checkpointExt)
}

func parseCheckpointName(prefix, name string) (seq uint64, ok bool) {
	rest, ok := strings.CutPrefix(name, prefix+checkpointDir)
	if !ok {
		return 0, false
	}
	num, ok := strings.CutSuffix(rest, checkpointExt)
	if !ok || len(num) != 20 {
		return 0, false
	}
	inv, err := strconv.ParseUint(num, 10, 64)
	if err != nil {
		return 0, false
	}
	return ^inv, true
}

// segmentMeta is the metadata stored with a segment.
func segmentMeta(entries []Entry) map[string]string {
	lo, hi := entries[0].Time, entries[0].Time
	for _, e := range entries[1:] {
		if e.Time.Before(lo) {
			lo = e.Time
		}
		if e.Time.After(hi) {
			hi = e.Time
		}
	}
	return map[string]string{
		metaCount:   strconv.Itoa(len(entries)),
		metaMinTime: strconv.FormatInt(lo.UnixNano(), 10),
		metaMaxTime: strconv.FormatInt(hi.UnixNano(), 10),
	}
}

// metaTimes returns the time range a segment's metadata claims, ok false
// when it has none.
func metaTimes(meta map[string]string) (lo, hi time.Time, ok bool) {
	l, err1 := strconv.ParseInt(meta[metaMinTime], 10, 64)
	h, err2 := strconv.ParseInt(meta[metaMaxTime], 10, 64)
	if err1 != nil || err2 != nil {
		return time.Time{}, time.Time{}, false
	}
	return time.Unix(0, l), time.Unix(0, h), true
}

// readObject reads a whole object of at most limit bytes.
func readObject(ctx context.Context, store storage.Store, name string, limit int64) ([]byte, storage.Info, error) {
	rc, info, err := store.Get(ctx, name, storage.GetOptions{})
	if err != nil {
		return nil, info, err
	}
	defer rc.Close()
	data, err := io.ReadAll(io.LimitReader(rc, limit+1))
	if err != nil {
		return nil, info, fmt.Errorf("audit: reading %s: %w", name, err)
	}
	if int64(len(data)) > limit {
		return nil, info, fmt.Errorf("audit: %s is larger than %d bytes", name, limit)
	}
	return data, info, nil
}

// splitLines splits a segment into its entry lines. A segment is lines
// each ended by "\n"; a missing final newline is tolerated by readers
// (and reported by verification).
func splitLines(data []byte) [][]byte {
	var lines [][]byte
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 0, 64<<10), maxSegmentBytes)
	for sc.Scan() {
		lines = append(lines, bytes.Clone(sc.Bytes()))
	}
	return lines
}

// decodeEntry parses one stored line.
func decodeEntry(line []byte) (Entry, error) {
	var e Entry
	dec := json.NewDecoder(bytes.NewReader(line))
	if err := dec.Decode(&e); err != nil {
		return Entry{}, fmt.Errorf("audit: undecodable entry: %w", err)
	}
	if e.V != FormatVersion {
		return Entry{}, fmt.Errorf("audit: entry format version %d, want %d", e.V, FormatVersion)
	}
	return e, nil
}

// lastEntry returns the last entry of a segment.
func lastEntry(data []byte) (Entry, error) {
	lines := splitLines(data)
	if len(lines) == 0 {
		return Entry{}, errors.New("audit: empty segment")
	}
	return decodeEntry(lines[len(lines)-1])
}
