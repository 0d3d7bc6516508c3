package bench

import (
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
