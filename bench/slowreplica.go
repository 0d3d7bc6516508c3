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

// slowSide is one client the slow-replica pair measures: a policy over
// every replica, or (ideal) round robin over the healthy ones only.
type slowSide struct {
	name, policy, cfg string
	ideal             bool
}

// capacityShare is the slow replica's share of calls, × N, were calls
// spread in proportion to capacity: 1/slowFactor of a healthy replica's.
const capacityShare = nReplicas * (1.0 / slowFactor) / (nReplicas - 1 + 1.0/slowFactor)

// SlowReplica measures each policy with one replica 10× slower than the
// others and with all equal. The baseline for the slow case is the ideal,
// round robin over the healthy replicas only (as if the slow one had been
// taken out), and the slow replica's share is compared with its share of
// the capacity; the baseline for the healthy case is round robin. Every
// side runs in each round, in an order rotated from round to round; a
// second round-robin client is the A/A row.
func SlowReplica(tb replicas.TB, s Scale, progress io.Writer) ([]Row, error) {
	sides := []slowSide{{name: "round_robin", policy: "round_robin"}, {name: "round_robin A/A", policy: "round_robin"}}
	for _, p := range policies[1:] {
		sides = append(sides, slowSide{name: p.name, policy: p.name, cfg: p.cfg})
	}
	type res struct{ p99, share []float64 }
	run := func(slow bool) (map[string]*res, error) {
		rs := replicas.Start(tb, nReplicas)
		for _, r := range rs {
			r.SetWorkers(workers)
			r.SetDelay(baseDelay)
		}
		all := sides
		if slow {
			rs[0].SetDelay(baseDelay * slowFactor)
			all = append(slices.Clone(sides), slowSide{name: "ideal", policy: "round_robin", ideal: true})
		}
		conns := map[string]*grpc.ClientConn{}
		for _, sd := range all {
			target := rs
			if sd.ideal {
				target = rs[1:]
			}
			cc, err := client.Dial("replicas:///example", client.WithBalancer(sd.policy, sd.cfg),
				client.WithRegistry(prometheus.NewRegistry()), client.WithDialOptions(grpc.WithResolvers(replicas.Resolver(target))))
			if err != nil {
				return nil, err
			}
			defer cc.Close()
			conns[sd.name] = cc
		}
		out := map[string]*res{}
		for round := range s.Rounds {
			for k := range all {
				sd := all[(round+k)%len(all)]
				c := example.NewExampleServiceClient(conns[sd.name])
				openLoop(c, loadRate, s.Duration/2) // warm up: latencies, weights, load reports
				replicas.Reset(rs)
				lat, failed := openLoop(c, loadRate, s.Duration)
				if failed > 0 {
					return nil, fmt.Errorf("%s: %d calls failed", sd.name, failed)
				}
				total := 0
				for _, r := range rs {
					total += int(r.Calls.Load())
				}
				if out[sd.name] == nil {
					out[sd.name] = &res{}
				}
				o := out[sd.name]
				o.p99 = append(o.p99, float64(percentile(lat, 99)))
				o.share = append(o.share, float64(rs[0].Calls.Load())/float64(total)*nReplicas)
				fmt.Fprintf(progress, "slow replica (slow=%v) round %d %s: p99 %v, replica 0 share×N %.2f\n", slow, round+1, sd.name,
					percentile(lat, 99).Round(time.Millisecond), o.share[len(o.share)-1])
				// Let queues drain between sides.
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
	shareRow := func(cas string, share []float64, base float64, goal string) Row {
		ratios := make([]float64, len(share))
		for i, v := range share {
			ratios[i] = v / base
		}
		return Row{Pair: "slow replica", Case: cas, Metric: "replica 0 share × N", Subject: median(share), Baseline: base,
			Ratio: median(ratios), Min: slices.Min(ratios), Max: slices.Max(ratios), Goal: goal}
	}
	var rows []Row
	ideal := slow["ideal"]
	for _, sd := range sides {
		r := slow[sd.name]
		goal, shareGoal := "", ""
		if sd.name == "p2c_ewma" {
			goal, shareGoal = "≤ 1.5", "≤ 2"
		}
		rows = append(rows,
			ratioRow("slow replica", sd.name+" ÷ ideal, one replica 10× slower", "p99", goal, r.p99, ideal.p99),
			shareRow(sd.name+" ÷ capacity share, one replica 10× slower", r.share, capacityShare, shareGoal),
		)
	}
	for _, sd := range sides[1:] {
		goal := "≤ 1.10"
		if sd.name == "round_robin A/A" {
			goal = ""
		}
		rows = append(rows,
			ratioRow("slow replica", sd.name+" ÷ round_robin, all healthy", "p99", goal, healthy[sd.name].p99, healthy["round_robin"].p99),
			shareRow(sd.name+", all healthy", healthy[sd.name].share, 1, ""),
		)
	}
	return rows, nil
}
