package e2e

import (
	"fmt"
	"image/color"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/plotutil"
	"gonum.org/v1/plot/vg"
	"google.golang.org/grpc/codes"

	"github.com/kuberpc/kuberpc/loadgen"
)

// resultsDir is where the fault suite writes its results files and plots
// (KUBERPC_E2E_RESULTS, set by the full suite's command); "" writes none.
func resultsDir() string { return os.Getenv("KUBERPC_E2E_RESULTS") }

// faultEvent is a step of a scenario, at an offset from the load's start.
type faultEvent struct {
	at   time.Duration
	name string
}

// faultRun is one repeat of a scenario.
type faultRun struct {
	results []loadgen.Result
	events  []faultEvent
}

// writeFaultResults writes <file>.md (per client and repeat: calls,
// failures by code, streams) and <file>.svg (the first repeat's
// successful and failed calls per second, per client, with the steps
// marked) into resultsDir.
func writeFaultResults(t *testing.T, file, scenario string, clients []loadClient, runs []faultRun) {
	t.Helper()
	dir := resultsDir()
	if dir == "" || len(runs) == 0 {
		return
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	rate, streams := faultLoad()
	var b strings.Builder
	fmt.Fprintf(&b, "# Fault suite: %s\n\n", scenario)
	fmt.Fprintf(&b, "Written by `%s` (e2e/fault_test.go) on %s, on the local cluster: each client at %d unary calls/s (open loop, 2 s deadline) and %d bidirectional streams, all at once; %d repeat(s).\n\n",
		t.Name(), time.Now().UTC().Format("2006-01-02"), rate, streams, len(runs))
	fmt.Fprintf(&b, "![%s](%s.svg)\n\n", scenario, file)
	fmt.Fprintf(&b, "| repeat | client | unary calls | failed | outcomes | streams opened | stream ends | hung streams |\n|---|---|---|---|---|---|---|---|\n")
	for r, run := range runs {
		for i, c := range clients {
			res := run.results[i]
			fmt.Fprintf(&b, "| %d | %s | %d | %d | %s | %d | %s | %d |\n", r+1, c.name, len(res.Latencies)+res.Failed(), res.Failed(),
				codeSummary(res.Codes), res.StreamsOpened, codeSummary(res.StreamEnds), res.HungStreams)
		}
	}
	fmt.Fprintf(&b, "\nSteps of the first repeat (seconds from the start of the load):")
	for _, e := range runs[0].events {
		fmt.Fprintf(&b, " %s at %.1f s;", e.name, e.at.Seconds())
	}
	b.WriteString("\n")
	if err := os.WriteFile(filepath.Join(dir, file+".md"), []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := plotFaultRun(filepath.Join(dir, file+".svg"), scenario, clients, runs[0]); err != nil {
		t.Fatal(err)
	}
}

func codeSummary(m map[codes.Code]int) string {
	var parts []string
	for c := codes.OK; c <= codes.Unauthenticated; c++ {
		if m[c] > 0 {
			parts = append(parts, fmt.Sprintf("%s %d", c, m[c]))
		}
	}
	if len(parts) == 0 {
		return "–"
	}
	return strings.Join(parts, ", ")
}

func plotFaultRun(file, scenario string, clients []loadClient, run faultRun) error {
	p := plot.New()
	p.Title.Text = scenario
	p.X.Label.Text = "seconds from the start of the load (gray: the steps)"
	p.Y.Label.Text = "calls per second"
	top := 0.0
	for i, c := range clients {
		var ok, failed plotter.XYs
		for s, sec := range run.results[i].Timeline {
			n := 0
			for code, k := range sec.Codes {
				if code != codes.OK {
					n += k
				}
			}
			ok = append(ok, plotter.XY{X: float64(s), Y: float64(sec.Codes[codes.OK])})
			failed = append(failed, plotter.XY{X: float64(s), Y: float64(n)})
			top = max(top, float64(sec.Sent))
		}
		for _, l := range []struct {
			xys    plotter.XYs
			label  string
			dashed bool
		}{{ok, c.name + ": OK", false}, {failed, c.name + ": failed", true}} {
			line, err := plotter.NewLine(l.xys)
			if err != nil {
				return err
			}
			line.Color = plotutil.Color(i)
			line.Width = vg.Points(1.5)
			if l.dashed {
				line.Dashes = []vg.Length{vg.Points(5), vg.Points(3)}
			}
			p.Add(line)
			p.Legend.Add(l.label, line)
		}
	}
	for _, e := range run.events {
		x := e.at.Seconds()
		mark, err := plotter.NewLine(plotter.XYs{{X: x, Y: 0}, {X: x, Y: top * 1.1}})
		if err != nil {
			return err
		}
		mark.Color = color.Gray{Y: 150}
		p.Add(mark)
		labels, err := plotter.NewLabels(plotter.XYLabels{XYs: plotter.XYs{{X: x, Y: top * 1.1}}, Labels: []string{e.name}})
		if err != nil {
			return err
		}
		p.Add(labels)
	}
	p.Y.Min, p.Y.Max = 0, top*1.25
	p.Legend.Top, p.Legend.Left = false, true
	return p.Save(11*vg.Inch, 5*vg.Inch, file)
}
