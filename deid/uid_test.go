package deid

import (
	"math/big"
	"math/rand/v2"
	"testing"
)

// TestDecimal128 compares decimal128 with math/big.
func TestDecimal128(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	cases := [][2]uint64{{0, 0}, {0, 1}, {0, 1<<64 - 1}, {1, 0}, {1<<64 - 1, 1<<64 - 1}, {0, 10_000_000_000_000_000_000}, {0, 9_999_999_999_999_999_999}}
	for range 10000 {
		cases = append(cases, [2]uint64{rng.Uint64() >> rng.IntN(64), rng.Uint64()})
	}
	for _, c := range cases {
		want := new(big.Int).Or(new(big.Int).Lsh(new(big.Int).SetUint64(c[0]), 64), new(big.Int).SetUint64(c[1])).String()
		if got := decimal128(c[0], c[1]); got != want {
			t.Fatalf("decimal128(%d, %d) = %s, want %s", c[0], c[1], got, want)
		}
	}
}
