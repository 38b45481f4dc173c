//go:build !race

package storage_test

// raceEnabled is true when the race detector slows everything down.
const raceEnabled = false
