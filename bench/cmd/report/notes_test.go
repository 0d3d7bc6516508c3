package main

import (
	"strings"
	"testing"

	"github.com/kuberpc/kuberpc/bench"
)

// TestNotesCompareTheServerApart: a goal measured in one process is shown
// beside the same ratio with the server apart and across processes, in
// the notes and in its missed-goal line; an A/A row of the other pair is
// not taken for the goal's noise floor.
func TestNotesCompareTheServerApart(t *testing.T) {
	rows := []bench.Row{
		{Pair: "overhead", Case: "unary 1 KiB, c=1", Metric: "QPS", Baseline: 14000, Ratio: 0.834, Min: 0.8, Max: 0.9, Goal: "≥ 0.95"},
		{Pair: bench.ApartPair, Case: "unary 1 KiB, c=1 A/A", Metric: "QPS", Ratio: 0.5, Min: 0.5, Max: 0.5},
		{Pair: bench.ApartPair, Case: "unary 1 KiB, c=1", Metric: "QPS", Baseline: 4000, Ratio: 1.003, Min: 0.97, Max: 1.04},
		{Pair: "overhead", Case: "unary 1 KiB, c=1 A/A", Metric: "QPS", Ratio: 0.991, Min: 0.95, Max: 1.03},
		{Pair: "overhead", Case: "unary 1 KiB, c=1, 3 processes", Metric: "QPS", Ratio: 0.858, Min: 0.834, Max: 0.933, Processes: 3},
	}
	var b strings.Builder
	writeNotes(&b, rows)
	got := b.String()
	for _, want := range []string{
		"unary 1 KiB, c=1 QPS 0.83 → 1.00",
		"its A/A 0.991",
		"in 3 processes median 0.858, processes 0.834–0.933",
		"moved from one process to the next (the lowest and highest of the processes' medians): unary 1 KiB, c=1 QPS 0.83–0.93",
		"with the server apart 1.003, rounds 0.970–1.040",
		"lower than in one process by unary 1 KiB, c=1 3.5×",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("notes lack %q:\n%s", want, got)
		}
	}
}
