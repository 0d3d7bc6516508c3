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
