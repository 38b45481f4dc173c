package gateway_test

import (
	"net/http"
	"testing"

	"github.com/consilium/consilium/gateway"
)

func TestPacketRange(t *testing.T) {
	const size = 1000
	for _, tc := range []struct {
		rng, ifRange  string
		start, length int64
		partial, bad  bool
	}{
		{"", "", 0, size, false, false},
		{"bytes=100-", `"p-1"`, 100, 900, true, false},
		{"bytes=100-199", "", 100, 100, true, false},
		{"bytes=-10", "", 990, 10, true, false},
		{"bytes=-5000", "", 0, size, true, false},
		{"bytes=900-5000", "", 900, 100, true, false},
		{"bytes=100-", `"p-2"`, 0, size, false, false}, // another build: the whole packet
		{"bytes=0-1,5-6", "", 0, size, false, false},   // several ranges: ignored
		{"items=0-1", "", 0, size, false, false},
		{"bytes=1000-", "", 0, 0, false, true},
		{"bytes=5-1", "", 0, 0, false, true},
		{"bytes=-0", "", 0, 0, false, true},
		{"bytes=x-", "", 0, 0, false, true},
	} {
		r, _ := http.NewRequest("GET", "/", nil)
		if tc.rng != "" {
			r.Header.Set("Range", tc.rng)
		}
		if tc.ifRange != "" {
			r.Header.Set("If-Range", tc.ifRange)
		}
		start, length, partial, err := gateway.PacketRange(r, `"p-1"`, size)
		if (err != nil) != tc.bad || !tc.bad && (start != tc.start || length != tc.length || partial != tc.partial) {
			t.Errorf("%q: %d %d %v %v", tc.rng, start, length, partial, err)
		}
	}
}

func FuzzPacketRange(f *testing.F) {
	for _, s := range []string{"bytes=0-", "bytes=-1", "bytes=5-9", "bytes=9-5", "bytes=--1", "bytes=18446744073709551616-"} {
		f.Add(s, int64(10))
	}
	f.Fuzz(func(t *testing.T, rng string, size int64) {
		if size <= 0 {
			return
		}
		r, _ := http.NewRequest("GET", "/", nil)
		r.Header.Set("Range", rng)
		start, length, partial, err := gateway.PacketRange(r, `"t"`, size)
		if err != nil {
			return
		}
		if start < 0 || length <= 0 || start+length > size || !partial && (start != 0 || length != size) {
			t.Fatalf("%q of %d: start %d length %d partial %v", rng, size, start, length, partial)
		}
	})
}
