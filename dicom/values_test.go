package dicom

import (
	"math/rand/v2"
	"strconv"
	"strings"
	"testing"
)

// TestValueChecks compares the allocation-free UID and IS checks with the
// obvious implementations on random strings over the characters that
// matter.
func TestValueChecks(t *testing.T) {
	refUID := func(s string) bool {
		if s == "" || len(s) > 64 {
			return false
		}
		for _, c := range strings.Split(s, ".") {
			if c == "" || (len(c) > 1 && c[0] == '0') {
				return false
			}
			if strings.Trim(c, "0123456789") != "" {
				return false
			}
		}
		return true
	}
	refIS := func(v string) bool {
		_, err := strconv.ParseInt(strings.TrimPrefix(v, "+"), 10, 64)
		return err == nil && len(v) <= 12
	}
	rng := rand.New(rand.NewPCG(1, 2))
	random := func(alphabet string, max int) string {
		b := make([]byte, rng.IntN(max+1))
		for i := range b {
			b[i] = alphabet[rng.IntN(len(alphabet))]
		}
		return string(b)
	}
	for range 200000 {
		u := random("0123.", 70)
		if got, want := validUID(u), refUID(u); got != want {
			t.Fatalf("validUID(%q) = %v, want %v", u, got, want)
		}
		if got := validUID([]byte(u)); got != refUID(u) {
			t.Fatalf("validUID([]byte(%q)) = %v", u, got)
		}
		v := random("0129+-x_ ", 14)
		if got, want := validIS([]byte(v)), refIS(v); got != want {
			t.Fatalf("validIS(%q) = %v, want %v", v, got, want)
		}
	}
}
