package bench

import (
	"context"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/resolver"
	"google.golang.org/grpc/resolver/manual"
	"google.golang.org/grpc/status"

	"github.com/kuberpc/kuberpc/client"
	"github.com/kuberpc/kuberpc/examples/example"
	"github.com/kuberpc/kuberpc/internal/testutils/replicas"
)

// Churn measures QPS while the endpoint set changes 10 times a second (a
// fifth replica joins and leaves, as a flapping pod does) ÷ QPS with a
// steady set, on the same client and replicas, interleaved in rotated
// order, with a second steady run as the A/A row. A raw grpc-go client
// with round_robin, on the same replicas and fed the same updates by a
// resolver of its own, is measured the same way in the same rounds: what
// the churn costs grpc-go itself (a connection made and one closed each
// second per update, on the machine the replicas share).
func Churn(tb replicas.TB, s Scale, progress io.Writer) ([]Row, error) {
	rs := replicas.Start(tb, 5)
	var four, five []resolver.Endpoint
	for i, r := range rs {
		e := resolver.Endpoint{Addresses: []resolver.Address{{Addr: r.Addr}}}
		if i < 4 {
			four = append(four, e)
		}
		five = append(five, e)
	}
	res := replicas.Resolver(rs[:4])
	cc, err := client.Dial("replicas:///example", client.WithRegistry(prometheus.NewRegistry()),
		client.WithDialOptions(grpc.WithResolvers(res)))
	if err != nil {
		return nil, err
	}
	defer cc.Close()
	rawRes := replicas.Resolver(rs[:4])
	raw, err := grpc.NewClient("replicas:///example", grpc.WithResolvers(rawRes),
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultServiceConfig(`{"loadBalancingConfig": [{"round_robin": {}}]}`))
	if err != nil {
		return nil, err
	}
	defer raw.Close()
	// A client and the resolver that feeds it the updates.
	type churnClient struct {
		cc  *grpc.ClientConn
		res *manual.Resolver
	}
	kub, rawc := churnClient{cc, res}, churnClient{raw, rawRes}
	d := s.Duration
	load := func(cl churnClient, churn bool) (float64, error) {
		c, res := example.NewExampleServiceClient(cl.cc), cl.res
		ctx, cancel := context.WithTimeout(context.Background(), d)
		defer cancel()
		var wg sync.WaitGroup
		if churn {
			wg.Add(1)
			go func() {
				defer wg.Done()
				t := time.NewTicker(100 * time.Millisecond)
				defer t.Stop()
				on := false
				for {
					select {
					case <-ctx.Done():
						res.UpdateState(resolver.State{Endpoints: four})
						return
					case <-t.C:
						on = !on
						if on {
							res.UpdateState(resolver.State{Endpoints: five})
						} else {
							res.UpdateState(resolver.State{Endpoints: four})
						}
					}
				}
			}()
		}
		var calls, failed atomic.Int64
		var firstErr atomic.Value
		start := time.Now()
		for range 8 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for ctx.Err() == nil {
					if _, err := c.SayHello(ctx, &example.Request{Name: "churn"}); err != nil {
						// grpc's own deadline timer may fire just before ctx's.
						if code := status.Code(err); ctx.Err() == nil && code != codes.DeadlineExceeded && code != codes.Canceled {
							failed.Add(1)
							firstErr.CompareAndSwap(nil, err.Error())
						}
						continue
					}
					calls.Add(1)
				}
			}()
		}
		wg.Wait()
		if f := failed.Load(); f > 0 {
			return 0, fmt.Errorf("%d calls failed during churn=%v, first: %v", f, churn, firstErr.Load())
		}
		return float64(calls.Load()) / time.Since(start).Seconds(), nil
	}
	for _, cl := range []churnClient{kub, rawc} { // warm up
		if _, err := load(cl, false); err != nil {
			return nil, err
		}
	}
	// Each round runs kuberpc's client on the steady set twice (the
	// second is the A/A row: the noise floor) and on the churning one,
	// and raw grpc-go's on both, in an order rotated from round to round.
	const steady, steadyAgain, churning, rawSteady, rawChurning = 0, 1, 2, 3, 4
	runs := make([][]float64, 5)
	for r := range s.Rounds {
		for k := range runs {
			i := (r + k) % len(runs)
			cl := kub
			if i >= rawSteady {
				cl = rawc
			}
			q, err := load(cl, i == churning || i == rawChurning)
			if err != nil {
				return nil, err
			}
			runs[i] = append(runs[i], q)
		}
	}
	fmt.Fprintln(progress, "churn: done")
	return []Row{
		ratioRow("resolver scale", "10 endpoint-set updates/s ÷ steady, 4–5 replicas, c=8", "QPS", "≥ 0.95", runs[churning], runs[steady]),
		ratioRow("resolver scale", "10 endpoint-set updates/s ÷ steady, 4–5 replicas, c=8 A/A", "QPS", "", runs[steadyAgain], runs[steady]),
		ratioRow("resolver scale", "raw grpc-go round_robin: 10 endpoint-set updates/s ÷ steady, 4–5 replicas, c=8", "QPS", "", runs[rawChurning], runs[rawSteady]),
	}, nil
}
