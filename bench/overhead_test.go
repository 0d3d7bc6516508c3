package bench

import (
	"math"
	"strings"
	"testing"
	"time"

	"github.com/kuberpc/kuberpc/examples/example"
)

// TestStreamRoundLastsItsDuration: a streaming round runs for the round's
// time, as the unary ones do, however fast the stream is: rounds of a
// fixed count of messages (20,000 at the full scale) lasted about 30 ms,
// and their ratios spread 0.75-1.44 between rounds.
func TestStreamRoundLastsItsDuration(t *testing.T) {
	c, err := RawConn()
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	const d = 200 * time.Millisecond
	start := time.Now()
	rate, err := streamFor(example.NewStreamServiceClient(c), d)
	if elapsed := time.Since(start); err != nil || elapsed < d || rate <= 0 {
		t.Errorf("streamFor(%v) = %.0f msgs/s, %v after %v; want a rate, no error, at least %v", d, rate, err, elapsed, d)
	}
}

// TestRoundForHoldsTheTailCalls: a case whose baseline is slow gets
// rounds long enough for Full.TailCalls calls, within MaxRound; a fast
// one keeps Round, and so does a scale without TailCalls.
func TestRoundForHoldsTheTailCalls(t *testing.T) {
	for _, tc := range []struct {
		s    Scale
		qps  float64
		want time.Duration
	}{
		{Full, 30000, time.Second},                                   // 1 B, c=1: 30,000 calls in 1 s
		{Full, 10000, time.Second},                                   // exactly TailCalls
		{Full, 2943, 3397893306},                                     // 64 KiB, c=1: 10,000 calls take 3.4 s
		{Full, 1000, 5 * time.Second},                                // bounded by MaxRound
		{Full, 0, time.Second},                                       // no rate measured
		{Tiny, 10, Tiny.Round},                                       // no TailCalls
		{Scale{Round: time.Second, TailCalls: 100}, 10, time.Second}, // MaxRound unset: Round
	} {
		if got := tc.s.roundFor(tc.qps); got != tc.want {
			t.Errorf("%+v.roundFor(%v) = %v, want %v", tc.s, tc.qps, got, tc.want)
		}
	}
}

// TestAcrossProcesses: each goal row of QPS or p99, and each A/A row of
// those metrics, gets a row across the processes: the median of their
// ratios and its min–max; other rows (allocations, context rows) get
// none, and a process that lacks a row leaves it out of the count.
func TestAcrossProcesses(t *testing.T) {
	row := func(cas, metric, goal string, ratio float64) Row {
		return Row{Pair: "overhead", Case: cas, Metric: metric, Goal: goal, Subject: ratio * 10, Baseline: 10, Ratio: ratio}
	}
	procs := [][]Row{
		{row("c", "QPS", "≥ 0.95", 0.90), row("c A/A", "QPS", "", 1.00), row("c", "allocs/op", "≤ 1.07", 1.0), row("c ÷ raw tuned", "QPS", "", 0.8), row("c", "p99", "≤ 1.10", 1.2)},
		{row("c", "QPS", "≥ 0.95", 1.10), row("c A/A", "QPS", "", 1.09), row("c", "p99", "≤ 1.10", 1.3)},
		{row("c", "QPS", "≥ 0.95", 0.96), row("c A/A", "QPS", "", 0.97)},
	}
	got := acrossProcesses(procs)
	want := []Row{
		{Pair: "overhead", Case: "c, 3 processes", Metric: "QPS", Subject: 9.6, Baseline: 10, Ratio: 0.96, Min: 0.90, Max: 1.10, Processes: 3},
		{Pair: "overhead", Case: "c A/A, 3 processes", Metric: "QPS", Subject: 10, Baseline: 10, Ratio: 1.00, Min: 0.97, Max: 1.09, Processes: 3},
		{Pair: "overhead", Case: "c, 2 processes", Metric: "p99", Subject: 12.5, Baseline: 10, Ratio: 1.25, Min: 1.2, Max: 1.3, Processes: 2},
	}
	if len(got) != len(want) {
		t.Fatalf("acrossProcesses = %+v, want %+v", got, want)
	}
	for i := range want {
		g, w := got[i], want[i]
		near := func(a, b float64) bool { return math.Abs(a-b) < 1e-9 }
		if g.Pair != w.Pair || g.Case != w.Case || g.Metric != w.Metric || g.Goal != "" || g.Processes != w.Processes ||
			!near(g.Subject, w.Subject) || !near(g.Baseline, w.Baseline) || !near(g.Ratio, w.Ratio) || !near(g.Min, w.Min) || !near(g.Max, w.Max) {
			t.Errorf("row %d = %+v, want %+v", i, g, w)
		}
	}
}

// TestOverheadCaseInAProcessOfItsOwn: the test binary, started as
// Overhead starts it (RunSubcommand in TestMain), measures a case with
// sides of its own and hands back its rows; a malformed spec is an error
// that names it.
func TestOverheadCaseInAProcessOfItsOwn(t *testing.T) {
	rows, err := caseInProcess(caseSpec{Scale: Tiny, Payload: 1, Conc: 1})
	if err != nil {
		t.Fatal(err)
	}
	var qps, aa bool
	for _, r := range rows {
		if r.Case == "unary 1 B, c=1" && r.Metric == "QPS" {
			qps = r.Ratio > 0 && r.Subject > 0 && r.Goal == "≥ 0.95"
		}
		aa = aa || r.Case == "unary 1 B, c=1 A/A" && r.Metric == "p99" && r.Ratio > 0
	}
	if !qps || !aa || len(rows) != len(caseRows("", 1, 1, make([][]sideResult, len(overheadSideNames)))) {
		t.Errorf("the case's rows (%d) lack a measured QPS or A/A p99 row: %+v", len(rows), rows)
	}
	for _, arg := range []string{`{"Payload": 1`, `{"Scale": {"Rounds": 0}, "Conc": 1}`} {
		if err := runOverheadCase([]string{arg}); err == nil || !strings.Contains(err.Error(), arg) {
			t.Errorf("runOverheadCase(%s) = %v, want an error naming the spec", arg, err)
		}
	}
}
