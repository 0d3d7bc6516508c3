// Command report runs kuberpc's benchmark pairs at full scale, A/B
// interleaved in one process, and writes bench/results.md and the SVG
// plots beside it. Run it from the repository root: `make bench`, or
// `go run ./bench/cmd/report`. With -overload it runs the overload suite
// instead and writes bench/overload.md.
package main

import (
	"flag"
	"fmt"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"strings"
	"time"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/plotutil"
	"gonum.org/v1/plot/vg"

	"github.com/kuberpc/kuberpc/bench"
)

// tb is what the replica servers need of a testing.TB.
type tb struct{ cleanups []func() }

func (*tb) Helper()            {}
func (*tb) Fatal(args ...any)  { fmt.Fprintln(os.Stderr, args...); os.Exit(1) }
func (t *tb) Cleanup(f func()) { t.cleanups = append(t.cleanups, f) }
func (t *tb) done() {
	for i := len(t.cleanups) - 1; i >= 0; i-- {
		t.cleanups[i]()
	}
}

func main() {
	bench.RunSubcommand()
	dir := flag.String("dir", "bench", "where results.md and the plots go")
	quick := flag.Bool("quick", false, "run at the tiny scale (to try the report, not for results)")
	overload := flag.Bool("overload", false, "run the overload suite instead (writes overload.md and overload_*.svg)")
	flag.Parse()
	if *overload {
		rounds, d := 3, 3*time.Second
		if *quick {
			rounds, d = 1, time.Second
		}
		if err := runOverload(*dir, rounds, d); err != nil {
			fmt.Fprintln(os.Stderr, "report:", err)
			os.Exit(1)
		}
		return
	}
	scale := bench.Full
	if *quick {
		scale = bench.Tiny
	}
	start := time.Now()
	t := &tb{}
	var rows []bench.Row
	var failed []string
	for _, run := range []struct {
		name string
		f    func() ([]bench.Row, error)
	}{
		{"overhead", func() ([]bench.Row, error) { return bench.Overhead(scale, os.Stderr) }},
		{"overhead, server apart", func() ([]bench.Row, error) { return bench.OverheadApart(scale, os.Stderr) }},
		{"slow replica", func() ([]bench.Row, error) { return bench.SlowReplica(t, scale, os.Stderr) }},
		{"resolver scale", func() ([]bench.Row, error) { return bench.ResolverScale(scale, os.Stderr) }},
		{"balancer path", func() ([]bench.Row, error) { return bench.BalancerPath(scale, os.Stderr) }},
		{"churn", func() ([]bench.Row, error) { return bench.Churn(t, scale, os.Stderr) }},
		{"convergence", func() ([]bench.Row, error) { return bench.Convergence(scale, os.Stderr) }},
		{"python interop", func() ([]bench.Row, error) { return bench.PythonInterop(scale, os.Stderr) }},
	} {
		r, err := run.f()
		if err != nil {
			// Keep the other pairs' results; the failure is reported.
			fmt.Fprintf(os.Stderr, "report: %s: %v\n", run.name, err)
			failed = append(failed, fmt.Sprintf("%s: %v", run.name, err))
			continue
		}
		rows = append(rows, r...)
	}
	t.done()
	if err := writeMarkdown(filepath.Join(*dir, "results.md"), rows, failed, scale, time.Since(start)); err != nil {
		fmt.Fprintln(os.Stderr, "report:", err)
		os.Exit(1)
	}
	for _, p := range []struct {
		file, title, pair string
		keep              func(bench.Row) bool
	}{
		{"overhead.svg", "kuberpc ÷ raw grpc-go (default options)", "overhead", func(r bench.Row) bool {
			return !strings.Contains(r.Case, "raw tuned") && r.Processes == 0 && r.Metric != "p50"
		}},
		{"overhead_apart.svg", "server in a process of its own: kuberpc ÷ raw grpc-go (default options)", bench.ApartPair, func(r bench.Row) bool {
			return !strings.Contains(r.Case, "raw tuned") && r.Metric != "p50"
		}},
		{"slow_replica.svg", "slow replica: p99 ÷ ideal, share ÷ capacity share; all healthy: p99 ÷ round robin", "slow replica", func(r bench.Row) bool {
			return !strings.HasPrefix(r.Case, "round_robin ") && !strings.HasSuffix(r.Case, ", all healthy")
		}},
		{"resolver_scale.svg", "one-endpoint change ÷ full rebuild", "resolver scale", func(r bench.Row) bool {
			return r.Metric == "time" || r.Metric == "allocs"
		}},
	} {
		if err := plotPair(filepath.Join(*dir, p.file), p.title, rows, p.pair, p.keep); err != nil {
			fmt.Fprintln(os.Stderr, "report:", err)
			os.Exit(1)
		}
	}
	fmt.Fprintf(os.Stderr, "wrote %s/results.md and plots in %v\n", *dir, time.Since(start).Round(time.Second))
	if len(failed) > 0 {
		os.Exit(1)
	}
}

func cpuModel() string {
	b, err := os.ReadFile("/proc/cpuinfo")
	if err != nil {
		return "unknown"
	}
	for _, l := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(l, "model name") {
			_, v, _ := strings.Cut(l, ":")
			return strings.TrimSpace(v)
		}
	}
	return "unknown"
}

func depVersion(path string) string {
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, d := range bi.Deps {
			if d.Path == path {
				return d.Version
			}
		}
	}
	return "unknown"
}

func writeMarkdown(file string, rows []bench.Row, failed []string, s bench.Scale, took time.Duration) error {
	var b strings.Builder
	commit, _ := exec.Command("git", "rev-parse", "--short", "HEAD").Output()
	fmt.Fprintf(&b, "# kuberpc benchmark results\n\n")
	fmt.Fprintf(&b, "Produced by `make bench` (`go run ./bench/cmd/report`) on %s at commit %s, in %v.\n\n",
		time.Now().UTC().Format("2006-01-02"), strings.TrimSpace(string(commit)), took.Round(time.Second))
	fmt.Fprintf(&b, "- machine: %s, %d CPUs, GOMAXPROCS=%d, %s/%s\n", cpuModel(), runtime.NumCPU(), runtime.GOMAXPROCS(0), runtime.GOOS, runtime.GOARCH)
	fmt.Fprintf(&b, "- Go %s, grpc-go %s, protobuf-go %s\n", strings.TrimPrefix(runtime.Version(), "go"),
		depVersion("google.golang.org/grpc"), depVersion("google.golang.org/protobuf"))
	fmt.Fprintf(&b, "- every pair but **overhead, server apart** runs in one process; overhead: %d rounds of %v per side, the sides' order rotated from round to round; the ratio is the median of the per-round ratios, the spread their min–max\n", s.Rounds, s.Round)
	if s.TailCalls > 0 {
		fmt.Fprintf(&b, "- a unary case whose raw baseline makes fewer than %d calls in %v (large messages, one call in flight) has longer rounds, as long as %d of its calls take (at most %v), so that each round's p99 rests on %d calls or more\n", s.TailCalls, s.Round, s.TailCalls, s.MaxRound, s.TailCalls/100)
	}
	fmt.Fprintf(&b, "- overhead sides: raw grpc-go with its defaults (the baseline), a second raw server and client (the **A/A** rows: the noise floor of the same measurement), raw grpc-go **tuned** as kuberpc tunes it (the server's static flow-control windows, stream workers), kuberpc's server and client with default options and with the fast path, and raw tuned with the fast path's **2 connections** (chosen as kuberpc chooses: the first until it has 16 calls in flight), the fast path's like-for-like baseline\n")
	if s.Processes > 1 {
		more := fmt.Sprintf("%d more processes", s.Processes-1)
		if s.Processes == 2 {
			more = "one more process"
		}
		fmt.Fprintf(&b, "- the unary cases of 1 B and 1 KiB are measured again in %s, each with servers and clients of its own and the same rounds: a row marked **%d processes** gives the median of the processes' ratios (each the median of its rounds) and, as its spread, their min–max, the noise between one run and the next, which the A/A rows of one process cannot show; goals are judged on the run's own process, as before\n", more, s.Processes)
	}
	fmt.Fprintf(&b, "- **overhead, server apart**: the unary cases of 1 B and 1 KiB again, on the same six sides, with each side's server in a process of its own on the same machine (its client in the benchmark's), as a client pod and a server pod share a node; its allocs/op and CPU µs/call add the server process's to the client's; context beside the goals, which are judged in one process\n")
	fmt.Fprintf(&b, "- allocs/op counts client and server together (both run in the process); so does CPU µs/call, the process's user and system CPU time per call, steadier than QPS, which moves with scheduling\n\n")
	met, total := 0, 0
	for _, r := range rows {
		if m, ok := r.Met(); ok {
			total++
			if m {
				met++
			}
		}
	}
	fmt.Fprintf(&b, "**Goals met: %d of %d.** The unmet ones are discussed at the end.\n", met, total)
	for _, f := range failed {
		fmt.Fprintf(&b, "\n**This run could not measure** %s\n", f)
	}
	pair := ""
	for _, r := range rows {
		if r.Pair != pair {
			pair = r.Pair
			fmt.Fprintf(&b, "\n## %s\n\n", pair)
			if svg := map[string]string{"overhead": "overhead.svg", bench.ApartPair: "overhead_apart.svg", "slow replica": "slow_replica.svg", "resolver scale": "resolver_scale.svg"}[pair]; svg != "" {
				fmt.Fprintf(&b, "![%s](%s)\n\n", pair, svg)
			}
			fmt.Fprintf(&b, "| case | metric | kuberpc | baseline | ratio | spread | goal | met |\n|---|---|---|---|---|---|---|---|\n")
		}
		status := ""
		if m, ok := r.Met(); ok {
			status = "no"
			if m {
				status = "yes"
			}
		}
		spread := "–"
		if !math.IsNaN(r.Min) && !math.IsNaN(r.Max) {
			spread = fmt.Sprintf("%.3f–%.3f", r.Min, r.Max)
		}
		fmt.Fprintf(&b, "| %s | %s | %s | %s | %.3f | %s | %s | %s |\n", r.Case, r.Metric,
			value(r.Metric, r.Subject), value(r.Metric, r.Baseline), r.Ratio, spread, r.Goal, status)
	}
	writeNotes(&b, rows)
	return os.WriteFile(file, []byte(b.String()), 0o644)
}

func value(metric string, v float64) string {
	switch {
	case math.IsNaN(v):
		return "–"
	case metric == "p50" || metric == "p99":
		return time.Duration(v).Round(time.Microsecond).String()
	case metric == "time" || strings.HasSuffix(metric, " time"):
		return time.Duration(v).Round(time.Microsecond).String()
	}
	return fmt.Sprintf("%.4g", v)
}

func plotPair(file, title string, rows []bench.Row, pair string, keep func(bench.Row) bool) error {
	p := plot.New()
	p.Title.Text = title
	p.Y.Label.Text = "ratio (median of rounds)"
	var vals plotter.Values
	var names []string
	var goals []float64
	for _, r := range rows {
		if r.Pair != pair || !keep(r) || math.IsNaN(r.Ratio) {
			continue
		}
		vals = append(vals, r.Ratio)
		names = append(names, shortName(r))
		g := math.NaN()
		if v, ok := strings.CutPrefix(r.Goal, "≥ "); ok {
			fmt.Sscanf(v, "%g", &g)
		} else if v, ok := strings.CutPrefix(r.Goal, "≤ "); ok {
			fmt.Sscanf(v, "%g", &g)
		}
		goals = append(goals, g)
	}
	if len(vals) == 0 {
		return nil
	}
	w := vg.Points(14)
	bars, err := plotter.NewBarChart(vals, w)
	if err != nil {
		return err
	}
	bars.Color = plotutil.Color(0)
	bars.LineStyle.Width = 0
	p.Add(bars)
	var pts plotter.XYs
	for i, g := range goals {
		if !math.IsNaN(g) {
			pts = append(pts, plotter.XY{X: float64(i), Y: g})
		}
	}
	if len(pts) > 0 {
		sc, err := plotter.NewScatter(pts)
		if err != nil {
			return err
		}
		sc.GlyphStyle.Color = plotutil.Color(1)
		sc.GlyphStyle.Shape = plotutil.Shape(5)
		sc.GlyphStyle.Radius = vg.Points(4)
		p.Add(sc)
		p.Legend.Add("goal", sc)
	}
	p.Legend.Add("ratio", bars)
	p.Legend.Top = true
	p.NominalX(names...)
	p.X.Tick.Label.Rotation = math.Pi / 3
	p.X.Tick.Label.XAlign = -1
	p.X.Tick.Label.YAlign = -0.5
	p.Y.Min = 0
	return p.Save(vg.Length(60+len(vals)*28)*vg.Points(1), 9*vg.Inch, file)
}

func shortName(r bench.Row) string {
	c := r.Case
	c = strings.ReplaceAll(c, " ÷ round_robin", "")
	c = strings.ReplaceAll(c, " ÷ ideal", "")
	c = strings.ReplaceAll(c, " ÷ capacity share", "")
	c = strings.ReplaceAll(c, ", one replica 10× slower", " slow")
	c = strings.ReplaceAll(c, ": one-endpoint change ÷ full rebuild", "")
	c = strings.ReplaceAll(c, ", every one balanced over", "")
	return c + " " + r.Metric
}
