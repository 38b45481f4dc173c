package audit_test

import (
	"context"
	"testing"
	"time"

	"github.com/consilium/consilium/audit"
	"github.com/consilium/consilium/storage"
)

// BenchmarkDurableAppend measures durable appends per second with many
// concurrent appenders (as concurrent gateway requests are), on both
// backends. "group" is the log as configured by default (concurrent
// appends share one segment write); "one-per-put" sets MaxBatch to 1,
// one write per entry, the peer the group commit is measured against.
//
//	CONSILIUM_MINIO_BIN=/root/tools/bin/minio go test -run '^$' -bench DurableAppend -benchtime 3s ./audit/
func BenchmarkDurableAppend(b *testing.B) {
	backends := []struct {
		name  string
		store func(b *testing.B) storage.Store
	}{
		{"fs", func(b *testing.B) storage.Store { s, _ := newFS(b); return s }},
		{"minio", func(b *testing.B) storage.Store { return newMinIO(b, true) }},
	}
	modes := []struct {
		name     string
		maxBatch int
	}{
		{"group", 0},
		{"one-per-put", 1},
	}
	for _, be := range backends {
		for _, mode := range modes {
			b.Run(be.name+"/"+mode.name, func(b *testing.B) {
				l := openLog(b, be.store(b), newKey(b), audit.Config{
					MaxBatch: mode.maxBatch, RetentionMode: audit.RetentionGovernance, RetentionDays: 1,
				})
				ctx := context.Background()
				b.SetParallelism(32) // 64 appenders on 2 cores
				b.ResetTimer()
				start := time.Now()
				b.RunParallel(func(pb *testing.PB) {
					i := 0
					for pb.Next() {
						if _, err := l.Record(ctx, entry(i)); err != nil {
							b.Error(err)
							return
						}
						i++
					}
				})
				b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "appends/s")
				st := l.Stats()
				b.ReportMetric(float64(st.Appended)/float64(max(st.Segments, 1)), "entries/segment")
			})
		}
	}
}
