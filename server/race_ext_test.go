//go:build race

package server_test

// raceEnabled: memory bounds are not asserted under the race detector,
// which multiplies a process's memory.
const raceEnabled = true
