package main

import (
	"fmt"
	"image/color"
	"math"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strings"
	"time"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/plotutil"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
	"gonum.org/v1/plot/vg/vgsvg"

	"github.com/kuberpc/kuberpc/bench"
)

// overloadPoint is one server at one multiple, over the rounds.
type overloadPoint struct {
	server   string
	multiple float64
	goodput  []float64 // ÷ capacity
	p99      []float64 // ÷ the server's unloaded p99
	p99ms    []float64
	health   []float64 // share answered
	rssMiB   []float64
	codes    map[string]int
}

func med(v []float64) float64 {
	s := slices.Clone(v)
	slices.Sort(s)
	if len(s) == 0 {
		return math.NaN()
	}
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

func spread(v []float64) string {
	if len(v) < 2 {
		return ""
	}
	return fmt.Sprintf(" (%.2f–%.2f)", slices.Min(v), slices.Max(v))
}

// runOverload runs the overload suite for rounds and writes overload.md
// and one plot per handler kind into dir.
func runOverload(dir string, rounds int, d time.Duration) error {
	start := time.Now()
	multiples := []float64{0.5, 1, 2, 3}
	kinds := []bench.HandlerKind{bench.CPUBound, bench.IOBound}
	points := map[bench.HandlerKind][]*overloadPoint{}
	capacity := map[bench.HandlerKind][]float64{}
	pinned := true
	for round := range rounds {
		for _, kind := range kinds {
			fmt.Fprintf(os.Stderr, "overload round %d/%d, %s-bound\n", round+1, rounds, kind)
			res, err := bench.Overload(kind, d, multiples, os.Stderr)
			if err != nil {
				return err
			}
			for _, r := range res {
				pinned = pinned && r.Pinned
				var p *overloadPoint
				for _, q := range points[kind] {
					if q.server == r.Server && q.multiple == r.Multiple {
						p = q
					}
				}
				if p == nil {
					p = &overloadPoint{server: r.Server, multiple: r.Multiple, codes: map[string]int{}}
					points[kind] = append(points[kind], p)
				}
				p.goodput = append(p.goodput, r.Goodput/r.Capacity)
				if r.P99 > 0 {
					p.p99 = append(p.p99, float64(r.P99)/float64(r.UnloadedP99))
					p.p99ms = append(p.p99ms, float64(r.P99)/float64(time.Millisecond))
				}
				p.health = append(p.health, float64(r.HealthOK)/float64(max(r.HealthAll, 1)))
				p.rssMiB = append(p.rssMiB, float64(r.PeakRSS)/(1<<20))
				for c, n := range r.Codes {
					p.codes[c.String()] += n
				}
			}
			capacity[kind] = append(capacity[kind], res[0].Capacity)
		}
	}
	var b strings.Builder
	commit, _ := exec.Command("git", "rev-parse", "--short", "HEAD").Output()
	fmt.Fprintf(&b, "# kuberpc overload suite\n\n")
	fmt.Fprintf(&b, "Produced by `go run ./bench/cmd/report -overload` on %s at commit %s, in %v: %d rounds of %v per load.\n\n",
		time.Now().UTC().Format("2006-01-02"), strings.TrimSpace(string(commit)), time.Since(start).Round(time.Second), rounds, d)
	fmt.Fprintf(&b, "- machine: %s, %d CPUs, Go %s\n", cpuModel(), runtime.NumCPU(), strings.TrimPrefix(runtime.Version(), "go"))
	if pinned {
		fmt.Fprintf(&b, "- each server runs in a process of its own pinned to one core with GOMAXPROCS=1 (a pod with one CPU); the load generator and the health prober run on the other cores\n")
	} else {
		fmt.Fprintf(&b, "- **this machine has one core: server and load shared it**, so the figures measure both\n")
	}
	fmt.Fprintf(&b, "- capacity is the raw grpc-go server's, closed loop of 64 callers; every server is offered the same open-loop load, a multiple of it, each call with a 1 s deadline (a call answered later is not goodput)\n")
	fmt.Fprintf(&b, "- goodput and p99 are over the steady state (the seconds after the first); p99 is of the calls that succeeded, ÷ that server's own unloaded p99 (1 caller)\n")
	fmt.Fprintf(&b, "- health: Health/Check every 100 ms on a connection of its own, answered SERVING within 1 s (a probe's timeout)\n")
	fmt.Fprintf(&b, "- peak RSS: the server process's VmHWM over its whole run\n")
	fmt.Fprintf(&b, "- figures are medians over the rounds, (min–max) beside them; `%s (A/A)` is the same server run again, the noise\n", bench.OverloadDefault)
	fmt.Fprintf(&b, "- CPU-bound: each call burns 1 ms of CPU. I/O-bound: each call holds one of 16 downstream connections for 20 ms, waiting for one when all are busy (capacity 800/s)\n\n")
	met, total := 0, 0
	var goals strings.Builder
	for _, kind := range kinds {
		for _, p := range points[kind] {
			if p.server != bench.OverloadDefault || p.multiple != 3 {
				continue
			}
			for _, g := range []struct {
				what string
				v    float64
				ok   bool
				goal string
			}{
				{"goodput ÷ capacity", med(p.goodput), med(p.goodput) >= 0.9, "≥ 0.90"},
				{"p99 ÷ unloaded p99", med(p.p99), med(p.p99) <= 5, "≤ 5"},
				{"health checks answered", med(p.health), slices.Min(p.health) == 1, "1.00 in every round"},
			} {
				total++
				m := "no"
				if g.ok {
					met++
					m = "yes"
				}
				fmt.Fprintf(&goals, "| %s-bound | %s | %.2f | %s | %s |\n", kind, g.what, g.v, g.goal, m)
			}
		}
	}
	fmt.Fprintf(&b, "## Goals at 3× capacity (kuberpc defaults): %d of %d met\n\n| handler | metric | value | goal | met |\n|---|---|---|---|---|\n%s\n", met, total, goals.String())
	for _, kind := range kinds {
		fmt.Fprintf(&b, "## %s-bound (capacity %.0f calls/s%s)\n\n![%s-bound](overload_%s.svg)\n\n", kind, med(capacity[kind]), spreadInt(capacity[kind]), kind, kind)
		fmt.Fprintf(&b, "| server | offered | goodput ÷ capacity | p99 | p99 ÷ unloaded | health answered | peak RSS MiB | outcomes (all rounds) |\n|---|---|---|---|---|---|---|---|\n")
		for _, p := range points[kind] {
			fmt.Fprintf(&b, "| %s | ×%.1f | %.2f%s | %s | %s | %.2f | %.0f | %s |\n", p.server, p.multiple,
				med(p.goodput), spread(p.goodput), msOrDash(p.p99ms), ratioOrDash(p.p99), med(p.health), med(p.rssMiB), codeList(p.codes))
		}
		b.WriteString("\n")
		if err := plotOverload(fmt.Sprintf("%s/overload_%s.svg", dir, kind), kind, points[kind]); err != nil {
			return err
		}
	}
	notes, _ := os.ReadFile(dir + "/overload_notes.md")
	b.Write(notes)
	if err := os.WriteFile(dir+"/overload.md", []byte(b.String()), 0o644); err != nil {
		return err
	}
	fmt.Fprintf(os.Stderr, "wrote %s/overload.md and plots in %v\n", dir, time.Since(start).Round(time.Second))
	return nil
}

func spreadInt(v []float64) string {
	if len(v) < 2 {
		return ""
	}
	return fmt.Sprintf(", %.0f–%.0f", slices.Min(v), slices.Max(v))
}

func msOrDash(v []float64) string {
	if len(v) == 0 {
		return "– (none succeeded)"
	}
	return fmt.Sprintf("%.1f ms", med(v))
}

func ratioOrDash(v []float64) string {
	if len(v) == 0 {
		return "–"
	}
	return fmt.Sprintf("%.1f%s", med(v), spread(v))
}

func codeList(m map[string]int) string {
	var keys []string
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	var parts []string
	for _, k := range keys {
		parts = append(parts, fmt.Sprintf("%s %d", k, m[k]))
	}
	return strings.Join(parts, ", ")
}

// plotOverload draws goodput ÷ capacity and p99 against the offered
// multiple, one line per server, side by side.
func plotOverload(file string, kind bench.HandlerKind, points []*overloadPoint) error {
	good, lat := plot.New(), plot.New()
	good.Title.Text = fmt.Sprintf("%s-bound: goodput ÷ capacity", kind)
	good.X.Label.Text, good.Y.Label.Text = "offered load ÷ capacity", "goodput ÷ capacity"
	lat.Title.Text = fmt.Sprintf("%s-bound: p99 of successful calls", kind)
	lat.X.Label.Text, lat.Y.Label.Text = "offered load ÷ capacity", "p99 (ms, log)"
	lat.Y.Scale = plot.LogScale{}
	lat.Y.Tick.Marker = plot.LogTicks{Prec: -1}
	var servers []string
	for _, p := range points {
		if !slices.Contains(servers, p.server) && !strings.HasSuffix(p.server, "(A/A)") {
			servers = append(servers, p.server)
		}
	}
	for i, s := range servers {
		var g, l plotter.XYs
		for _, p := range points {
			if p.server != s {
				continue
			}
			g = append(g, plotter.XY{X: p.multiple, Y: med(p.goodput)})
			if len(p.p99ms) > 0 {
				l = append(l, plotter.XY{X: p.multiple, Y: med(p.p99ms)})
			}
		}
		for _, pl := range []struct {
			p   *plot.Plot
			xys plotter.XYs
		}{{good, g}, {lat, l}} {
			if len(pl.xys) == 0 {
				continue
			}
			line, pts, err := plotter.NewLinePoints(pl.xys)
			if err != nil {
				return err
			}
			line.Color, pts.Color = plotutil.Color(i), plotutil.Color(i)
			pts.Shape = plotutil.Shape(i)
			pl.p.Add(line, pts)
			pl.p.Legend.Add(s, line, pts)
		}
	}
	goal, err := plotter.NewLine(plotter.XYs{{X: 0.5, Y: 0.9}, {X: 3, Y: 0.9}})
	if err != nil {
		return err
	}
	goal.Color = color.Gray{Y: 128}
	goal.Dashes = []vg.Length{vg.Points(4), vg.Points(4)}
	good.Add(goal)
	good.Legend.Add("goal 0.9", goal)
	good.Y.Min, good.Y.Max = 0, 1.1
	good.Legend.Top, good.Legend.Left = false, true
	lat.Legend.Top, lat.Legend.Left = true, true
	const w, h = 11 * vg.Inch, 4.5 * vg.Inch
	c := vgsvg.New(w, h)
	tiles := draw.Tiles{Rows: 1, Cols: 2, PadX: vg.Inch / 4, PadY: vg.Inch / 8, PadTop: vg.Inch / 8, PadBottom: vg.Inch / 8, PadLeft: vg.Inch / 8, PadRight: vg.Inch / 8}
	canvases := plot.Align([][]*plot.Plot{{good, lat}}, tiles, draw.New(c))
	good.Draw(canvases[0][0])
	lat.Draw(canvases[0][1])
	f, err := os.Create(file)
	if err != nil {
		return err
	}
	if _, err := c.WriteTo(f); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
