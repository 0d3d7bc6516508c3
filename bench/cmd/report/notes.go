package main

import (
	"fmt"
	"math"
	"strings"

	"github.com/kuberpc/kuberpc/bench"
)

// writeNotes writes the discussion of a run from its own rows: every
// figure in it is one of the tables', so the prose cannot drift from the
// numbers.
func writeNotes(b *strings.Builder, rows []bench.Row) {
	find := func(cas, metric string) (bench.Row, bool) {
		for _, r := range rows {
			if r.Case == cas && r.Metric == metric {
				return r, true
			}
		}
		return bench.Row{}, false
	}
	b.WriteString("\n## Notes (written from this run's rows)\n\n")

	// Overhead.
	if lo, hi, n := span(rows, "overhead", "", "QPS"); n > 0 {
		alo, ahi, _ := span(rows, "overhead", " A/A", "QPS")
		fmt.Fprintf(b, "**Overhead.** Over the %d unary cases, kuberpc's defaults ran at %.2f–%.2f× raw grpc-go's QPS; the A/A rows (raw ÷ raw) of the same cases spread %.2f–%.2f, the noise of this measurement on this machine.", n, lo, hi, alo, ahi)
		if lo, hi, n := span(rows, "overhead", "", "allocs/op"); n > 0 {
			fmt.Fprintf(b, " Allocations per call were %.3f–%.3f× raw's", lo, hi)
			if tlo, thi, n := span(rows, "overhead", " ÷ raw tuned", "allocs/op"); n > 0 {
				fmt.Fprintf(b, " and %.3f–%.3f× those of raw grpc-go tuned as kuberpc tunes it: the difference between the two is what the transport settings change (the server's static windows, stream workers), and the second is what kuberpc's own work costs (admission bookkeeping, metrics, the generated handler info grpc-go allocates once a server has an interceptor)", tlo, thi)
			}
			b.WriteString(".")
		}
		if tlo, thi, n := span(rows, "overhead", " ÷ raw tuned", "QPS"); n > 0 {
			fmt.Fprintf(b, " Against raw tuned, kuberpc's QPS was %.2f–%.2f×.", tlo, thi)
		}
		if lo, hi, n := span(rows, "overhead", "", "CPU µs/call"); n > 0 {
			alo, ahi, _ := span(rows, "overhead", " A/A", "CPU µs/call")
			fmt.Fprintf(b, " The CPU the process spent per call (client and server together) was %.3f–%.3f× raw's (A/A %.3f–%.3f)", lo, hi, alo, ahi)
			if tlo, thi, n := span(rows, "overhead", " ÷ raw tuned", "CPU µs/call"); n > 0 {
				fmt.Fprintf(b, " and %.3f–%.3f× raw tuned's: kuberpc's own work per call", tlo, thi)
			}
			b.WriteString(".")
		}
		var fast []string
		for _, r := range rows {
			if r.Pair == "overhead" && r.Metric == "QPS" && strings.HasSuffix(r.Case, ", fast path") {
				fast = append(fast, fmt.Sprintf("%s %.2f×", strings.TrimSuffix(r.Case, ", fast path"), r.Ratio))
			}
		}
		if len(fast) > 0 {
			fmt.Fprintf(b, " The fast path (server.WithFastPath, client.WithFastPath: vtprotobuf marshalling from 1 KiB and two connections per endpoint, on top of the defaults) ÷ raw grpc-go's defaults, QPS: %s.", strings.Join(fast, ", "))
			const twice = ", fast path ÷ raw tuned, 2 connections"
			var vs2 []string
			for _, r := range rows {
				if r.Pair == "overhead" && r.Metric == "QPS" && strings.HasSuffix(r.Case, twice) {
					vs2 = append(vs2, fmt.Sprintf("%s %.2f×", strings.TrimSuffix(r.Case, twice), r.Ratio))
				}
			}
			if len(vs2) > 0 {
				fmt.Fprintf(b, " Raw grpc-go tuned the same way (the tuned server, two connections chosen as kuberpc chooses them) is the fast path's fair baseline; the fast path ÷ it, QPS: %s.", strings.Join(vs2, ", "))
			}
		}
		var moved []string
		alo, ahi, an := math.Inf(1), math.Inf(-1), 0
		for _, r := range rows {
			if r.Pair != "overhead" || r.Processes == 0 {
				continue
			}
			if strings.Contains(r.Case, " A/A, ") {
				alo, ahi, an = min(alo, r.Min), max(ahi, r.Max), an+1
				continue
			}
			cas := r.Case[:strings.LastIndex(r.Case, ", ")]
			moved = append(moved, fmt.Sprintf("%s %s %.2f–%.2f", cas, r.Metric, r.Min, r.Max))
		}
		if len(moved) > 0 {
			fmt.Fprintf(b, " Measured again in processes of their own, the goal ratios of the small-message cases moved from one process to the next (the lowest and highest of the processes' medians): %s", strings.Join(moved, ", "))
			if an > 0 {
				fmt.Fprintf(b, "; the A/A rows' per-process medians, which should all be 1, ranged %.2f–%.2f", alo, ahi)
			}
			b.WriteString(".")
		}
		var refused []string
		for _, r := range rows {
			if r.Pair == "overhead" && r.Metric == "share refused" && r.Subject > 0 {
				refused = append(refused, fmt.Sprintf("%s %.4f", r.Case, r.Subject))
			}
		}
		if len(refused) > 0 {
			fmt.Fprintf(b, " kuberpc's server shed calls (adaptive shedding is on by default: 64 callers in a closed loop queue behind each other, and one round's limit can start below 64), refused even after the client's retries, median share per round: %s; QPS counts the calls answered.", strings.Join(refused, ", "))
		} else {
			b.WriteString(" No call was refused by kuberpc's shedding.")
		}
		b.WriteString("\n\n")
	}

	writeApartNotes(b, rows)

	// Slow replica.
	if p2c, ok := find("p2c_ewma ÷ ideal, one replica 10× slower", "p99"); ok {
		fmt.Fprintf(b, "**Slow replica.** With one of five replicas 10× slower, p2c_ewma's p99 was %.2f× the ideal's (round robin over the four healthy replicas, as if the slow one had been removed)", p2c.Ratio)
		if rr, ok := find("round_robin ÷ ideal, one replica 10× slower", "p99"); ok {
			fmt.Fprintf(b, ", round robin's over all five %.0f×", rr.Ratio)
		}
		b.WriteString(".")
		var shares []string
		for _, name := range []string{"p2c_ewma", "least_request", "weighted_round_robin", "round_robin"} {
			if r, ok := find(name+" ÷ capacity share, one replica 10× slower", "replica 0 share × N"); ok {
				shares = append(shares, fmt.Sprintf("%s %.2f×", name, r.Ratio))
			}
		}
		if len(shares) > 0 {
			fmt.Fprintf(b, " The slow replica's share of calls against its share of the capacity (%.3f × N): %s.", capacityShare(rows), strings.Join(shares, ", "))
		}
		var healthy, avoid []string
		for _, name := range []string{"p2c_ewma", "least_request", "weighted_round_robin", "round_robin A/A"} {
			if r, ok := find(name+" ÷ round_robin, all healthy", "p99"); ok {
				healthy = append(healthy, fmt.Sprintf("%s %.2f×", name, r.Ratio))
				if met, ok := r.Met(); ok && !met {
					avoid = append(avoid, name)
				}
			}
		}
		if len(healthy) > 0 {
			fmt.Fprintf(b, " With all replicas equal, p99 ÷ round robin's: %s.", strings.Join(healthy, ", "))
		}
		if len(avoid) > 0 {
			fmt.Fprintf(b, " In this run %s cost more than 10%% of p99 when replicas are equal: round robin (the default) or p2c_ewma is the choice there, and the load-aware policies pay off when replicas differ.", strings.Join(avoid, " and "))
		}
		b.WriteString("\n\n")
	}

	// Whole path and subsetting.
	every, ok1 := find("5000 endpoints, every one balanced over, whole path: one-endpoint change ÷ full rebuild", "time")
	sub, ok2 := find("5000 endpoints, subsets of 20, whole path: one-endpoint change ÷ full rebuild", "time")
	if ok1 && ok2 {
		fmt.Fprintf(b, "**Whole client path at 5,000 endpoints** (resolver merge → round_robin's endpointsharding over pick_first → picker, with SubConns that connect at once). Balancing over every endpoint, a one-endpoint change cost %s (%.3f× a new client's build, %s): grpc-go's endpointsharding walks every endpoint on each update. With subsets of 20 (`kubernetes.WithSubsetSize`) it cost %s (%.3f× a new client's %s).",
			value("time", every.Subject), every.Ratio, value("time", every.Baseline), value("time", sub.Subject), sub.Ratio, value("time", sub.Baseline))
		if c, ok := find("5000 endpoints, subsets of 20", "connections per client ÷ subset size"); ok {
			fmt.Fprintf(b, " A client then holds %.0f connections instead of 5,000.", c.Subject)
		}
		for _, r := range rows {
			if r.Metric == "busiest endpoint's clients ÷ mean" {
				fmt.Fprintf(b, " Across %s the busiest endpoint was chosen by %.0f clients, %.2f× the mean of %.1f (subsets are per-client rendezvous hashes, so balance is statistical).", strings.TrimPrefix(r.Case, "5000 endpoints, subsets of 20, "), r.Subject, r.Ratio, r.Baseline)
			}
		}
		b.WriteString("\n\n")
	}

	// Churn.
	if r, ok := find("10 endpoint-set updates/s ÷ steady, 4–5 replicas, c=8", "QPS"); ok {
		fmt.Fprintf(b, "**Churn.** With a fifth replica joining and leaving 10 times a second, the client's QPS was %.2f× a steady set's (rounds %.2f–%.2f)", r.Ratio, r.Min, r.Max)
		if aa, ok := aaFor(rows, r); ok {
			fmt.Fprintf(b, "; a second steady run gave %.2f× (rounds %.2f–%.2f), the noise floor", aa.Ratio, aa.Min, aa.Max)
		}
		if raw, ok := find("raw grpc-go round_robin: "+r.Case, "QPS"); ok {
			fmt.Fprintf(b, "; raw grpc-go's round_robin client, fed the same updates in the same rounds, kept %.2f× its own steady QPS (rounds %.2f–%.2f): what a connection made and one closed 5 times a second cost grpc-go itself on this machine", raw.Ratio, raw.Min, raw.Max)
		}
		b.WriteString(".\n\n")
	}

	// Convergence.
	for _, r := range rows {
		if r.Pair == "convergence" && r.Metric == "p50 time" && strings.HasPrefix(r.Case, "EndpointSlice") {
			p99, _ := find(r.Case, "p99 time")
			mx, _ := find(r.Case, "max time")
			fmt.Fprintf(b, "**Convergence** (%s): the client's picker held a written address %s after the write at the median (%.2f× a plain informer's delivery in the same process), %s at p99 (%.2f×) and %s at worst (%.2f×); the informer itself is the floor, both see the same watch stream.\n\n",
				strings.TrimPrefix(r.Case, "EndpointSlice write → client picker ÷ write → informer delivery, "),
				value("time", r.Subject), r.Ratio, value("time", p99.Subject), p99.Ratio, value("time", mx.Subject), mx.Ratio)
		}
	}

	var missed []string
	for _, r := range rows {
		if met, ok := r.Met(); ok && !met {
			note := fmt.Sprintf("%s: %s %s %.3f (goal %s, rounds %.3f–%.3f", r.Pair, r.Case, r.Metric, r.Ratio, r.Goal, r.Min, r.Max)
			if aa, ok := aaFor(rows, r); ok {
				note += fmt.Sprintf("; its A/A %.3f, rounds %.3f–%.3f", aa.Ratio, aa.Min, aa.Max)
				if r.Max >= aa.Min && r.Min <= aa.Max {
					note += ": the rounds overlap the noise floor's"
				}
			}
			if across, ok := acrossFor(rows, r); ok {
				note += fmt.Sprintf("; in %s median %.3f, processes %.3f–%.3f", strings.TrimPrefix(across.Case, r.Case+", "), across.Ratio, across.Min, across.Max)
			}
			if apart, ok := apartFor(rows, r); ok {
				note += fmt.Sprintf("; with the server apart %.3f, rounds %.3f–%.3f", apart.Ratio, apart.Min, apart.Max)
			}
			missed = append(missed, note+")")
		}
	}
	if len(missed) > 0 {
		b.WriteString("**Goals missed in this run:**\n\n")
		for _, m := range missed {
			fmt.Fprintf(b, "- %s\n", m)
		}
		b.WriteString("\n")
	}
}

// aaFor finds among rows the A/A row that measures r's noise floor: r's case with
// " A/A" (a fast path row uses its case's without the fast path; a policy
// ÷ round robin, round robin's against itself).
func aaFor(rows []bench.Row, r bench.Row) (bench.Row, bool) {
	cands := []string{r.Case + " A/A", strings.TrimSuffix(r.Case, ", fast path") + " A/A"}
	if i := strings.Index(r.Case, " ÷ round_robin"); i > 0 {
		cands = append(cands, "round_robin A/A"+r.Case[i:])
	}
	for _, c := range cands {
		for _, a := range rows {
			if a.Pair == r.Pair && a.Case == c && a.Metric == r.Metric {
				return a, true
			}
		}
	}
	return bench.Row{}, false
}

// capacityShare is the slow replica's capacity share × N the rows were
// compared with.
func capacityShare(rows []bench.Row) float64 {
	for _, r := range rows {
		if strings.HasSuffix(r.Case, "÷ capacity share, one replica 10× slower") {
			return r.Baseline
		}
	}
	return math.NaN()
}

// acrossFor finds among rows r's row across processes, if the run has
// one.
func acrossFor(rows []bench.Row, r bench.Row) (bench.Row, bool) {
	for _, a := range rows {
		if a.Pair == r.Pair && a.Metric == r.Metric && a.Processes > 0 && a.Case == fmt.Sprintf("%s, %d processes", r.Case, a.Processes) {
			return a, true
		}
	}
	return bench.Row{}, false
}

// apartFor finds among rows r's row measured with the server in a process
// of its own, if the run has one.
func apartFor(rows []bench.Row, r bench.Row) (bench.Row, bool) {
	for _, a := range rows {
		if a.Pair == bench.ApartPair && r.Pair == "overhead" && a.Case == r.Case && a.Metric == r.Metric {
			return a, true
		}
	}
	return bench.Row{}, false
}

// writeApartNotes compares the overhead goals measured in one process
// with the same ratios measured with each server in a process of its own.
func writeApartNotes(b *strings.Builder, rows []bench.Row) {
	var pairs, slower []string
	for _, r := range rows {
		if r.Pair != "overhead" || r.Goal == "" {
			continue
		}
		a, ok := apartFor(rows, r)
		if !ok {
			continue
		}
		pairs = append(pairs, fmt.Sprintf("%s %s %.2f → %.2f", r.Case, r.Metric, r.Ratio, a.Ratio))
		if r.Metric == "QPS" && !strings.Contains(r.Case, "fast path") && a.Baseline > 0 {
			slower = append(slower, fmt.Sprintf("%s %.1f×", r.Case, r.Baseline/a.Baseline))
		}
	}
	if len(pairs) == 0 {
		return
	}
	fmt.Fprintf(b, "**Server apart.** With each side's server in a process of its own (the client in the benchmark's, both on this machine's cores, as a client pod and a server pod on one node), the goal ratios of the small-message cases, in one process → server apart: %s.", strings.Join(pairs, ", "))
	if len(slower) > 0 {
		fmt.Fprintf(b, " Apart, raw grpc-go's own QPS was lower than in one process by %s (the processes wake each other through the kernel), and a cost per call weighs less the longer a call takes: one runtime is the more sensitive measure of kuberpc's own work, the processes apart the shape a deployment has.", strings.Join(slower, ", "))
	}
	if lo, hi, n := span(rows, bench.ApartPair, " A/A", "QPS"); n > 0 {
		plo, phi, _ := span(rows, bench.ApartPair, " A/A", "p99")
		fmt.Fprintf(b, " Its A/A rows: QPS %.2f–%.2f, p99 %.2f–%.2f.", lo, hi, plo, phi)
	}
	if lo, hi, n := span(rows, bench.ApartPair, " ÷ raw tuned", "QPS"); n > 0 {
		clo, chi, _ := span(rows, bench.ApartPair, " ÷ raw tuned", "CPU µs/call")
		fmt.Fprintf(b, " kuberpc ÷ raw tuned there: QPS %.2f–%.2f, CPU per call (both processes) %.2f–%.2f.", lo, hi, clo, chi)
	}
	b.WriteString(" The goals are judged in one process, the committed method; the layouts also differ where one Go scheduler serving both the client's and the server's goroutines changes how often its threads sleep and wake, which a deployment does not share (bench's package doc: the server's static windows).\n\n")
}

// span is the lowest and highest ratio, and how many, of pair's rows of
// metric whose case ends in suffix; with no suffix, of its plain rows
// (not A/A, ÷ raw tuned, fast path or across processes).
func span(rows []bench.Row, pair, suffix, metric string) (lo, hi float64, n int) {
	lo, hi = math.Inf(1), math.Inf(-1)
	for _, r := range rows {
		if r.Pair == pair && r.Metric == metric && strings.HasSuffix(r.Case, suffix) && !math.IsNaN(r.Ratio) {
			if suffix == "" && (strings.Contains(r.Case, " A/A") || strings.Contains(r.Case, " ÷ raw tuned") || strings.Contains(r.Case, "fast path") || r.Processes > 0) {
				continue
			}
			lo, hi, n = min(lo, r.Ratio), max(hi, r.Ratio), n+1
		}
	}
	return lo, hi, n
}
