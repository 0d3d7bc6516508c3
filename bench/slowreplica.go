package bench

import (
	"context"
	"fmt"
	"io"
	"slices"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"

	"github.com/kuberpc/kuberpc/client"
	"github.com/kuberpc/kuberpc/examples/example"
	"github.com/kuberpc/kuberpc/internal/testutils/replicas"
)

// Slow-replica setup: 5 replicas with 2 workers each and 5 ms of work per
// call (400 calls/s each); the slow one takes 50 ms (10×, 40 calls/s).
// Capacity is about 1,640 calls/s; the open-loop load is half of that.
const (
	nReplicas  = 5
	workers    = 2
	baseDelay  = 5 * time.Millisecond
	slowFactor = 10
	loadRate   = 820 // calls per second
)

var policies = []struct{ name, cfg string }{
	{"round_robin", ""},
	{"p2c_ewma", ""},
	{"least_request", ""},
	{"weighted_round_robin", `{"blackoutPeriod":"0s","weightUpdatePeriod":"0.1s"}`},
}

// openLoop issues calls at rate for d, each on its own goroutine at its
// scheduled time (so a slow server cannot slow the load down), and returns
// latencies measured from the scheduled time.
func openLoop(c example.ExampleServiceClient, rate int, d time.Duration) ([]time.Duration, int) {
	n := int(float64(rate) * d.Seconds())
	interval := time.Second / time.Duration(rate)
	lat := make([]time.Duration, n)
	failed := 0
	var mu sync.Mutex
	var wg sync.WaitGroup
	start := time.Now()
	for i := range n {
		at := start.Add(time.Duration(i) * interval)
		time.Sleep(time.Until(at))
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			_, err := c.SayHello(ctx, &example.Request{Id: int32(i)})
			lat[i] = time.Since(at)
			if err != nil {
				mu.Lock()
				failed++
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	return lat, failed
}

// SlowReplica compares p99 latency and the slow replica's share of calls
// under each policy with round_robin, on the same replicas, interleaved.
func SlowReplica(tb replicas.TB, s Scale, progress io.Writer) ([]Row, error) {
	type res struct{ p99, share []float64 }
	run := func(slow bool) (map[string]*res, error) {
		rs := replicas.Start(tb, nReplicas)
		for _, r := range rs {
			r.SetWorkers(workers)
			r.SetDelay(baseDelay)
		}
		if slow {
			rs[0].SetDelay(baseDelay * slowFactor)
		}
		conns := map[string]*grpc.ClientConn{}
		for _, p := range policies {
			cc, err := client.Dial("replicas:///example", client.WithBalancer(p.name, p.cfg),
				client.WithRegistry(prometheus.NewRegistry()), client.WithDialOptions(grpc.WithResolvers(replicas.Resolver(rs))))
			if err != nil {
				return nil, err
			}
			defer cc.Close()
			conns[p.name] = cc
		}
		out := map[string]*res{}
		for round := range s.Rounds {
			for _, p := range policies {
				c := example.NewExampleServiceClient(conns[p.name])
				openLoop(c, loadRate, s.Duration/2) // warm up: latencies, weights, load reports
				replicas.Reset(rs)
				lat, failed := openLoop(c, loadRate, s.Duration)
				if failed > 0 {
					return nil, fmt.Errorf("%s: %d calls failed", p.name, failed)
				}
				total := 0
				for _, r := range rs {
					total += int(r.Calls.Load())
				}
				if out[p.name] == nil {
					out[p.name] = &res{}
				}
				out[p.name].p99 = append(out[p.name].p99, float64(percentile(lat, 99)))
				out[p.name].share = append(out[p.name].share, float64(rs[0].Calls.Load())/float64(total)*nReplicas)
				fmt.Fprintf(progress, "slow replica (slow=%v) round %d %s: p99 %v, replica 0 share×N %.2f\n", slow, round+1, p.name,
					percentile(lat, 99).Round(time.Millisecond), out[p.name].share[len(out[p.name].share)-1])
				// Let queues drain between policies.
				time.Sleep(200 * time.Millisecond)
			}
		}
		return out, nil
	}
	slow, err := run(true)
	if err != nil {
		return nil, err
	}
	healthy, err := run(false)
	if err != nil {
		return nil, err
	}
	var rows []Row
	rr := slow["round_robin"]
	for _, p := range policies[1:] {
		r := slow[p.name]
		rows = append(rows,
			ratioRow("slow replica", p.name+" ÷ round_robin, one replica 10× slower", "p99", "≤ 0.2", r.p99, rr.p99),
			Row{Pair: "slow replica", Case: p.name + ", one replica 10× slower", Metric: "slow share × N",
				Subject: median(r.share), Baseline: median(rr.share), Ratio: median(r.share), Min: slices.Min(r.share), Max: slices.Max(r.share), Goal: "≤ 0.5"},
		)
	}
	for _, p := range policies[1:] {
		rows = append(rows, ratioRow("slow replica", p.name+" ÷ round_robin, all healthy", "p99", "≤ 1.10", healthy[p.name].p99, healthy["round_robin"].p99))
	}
	return rows, nil
}
