package bench

import (
	"math"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Row is one measured ratio: subject ÷ baseline, with the median over
// rounds and the spread (min, max) of the per-round ratios.
type Row struct {
	Pair     string  // "overhead", "slow replica", ...
	Case     string  // what was varied, e.g. "unary 1 B, c=64"
	Metric   string  // "QPS", "p99", "allocs/op", ...
	Subject  float64 // kuberpc's median value
	Baseline float64 // the baseline's median value
	Ratio    float64 // median of per-round ratios
	Min, Max float64 // spread of per-round ratios
	// Goal is "≥ 0.95", "≤ 1.10", or "" for context rows.
	Goal string
	// Processes is, for a row summarising one case measured in several
	// processes (its Case ends ", N processes"), how many: its ratio is
	// their medians' median, its spread their min–max. 0 otherwise.
	Processes int
}

// Met reports whether the goal is met; ok is false for rows without one.
func (r Row) Met() (met, ok bool) {
	if v, ok := strings.CutPrefix(r.Goal, "≥ "); ok {
		bound, err := strconv.ParseFloat(v, 64)
		return err == nil && r.Ratio >= bound, err == nil
	}
	if v, ok := strings.CutPrefix(r.Goal, "≤ "); ok {
		bound, err := strconv.ParseFloat(v, 64)
		return err == nil && r.Ratio <= bound, err == nil
	}
	return false, false
}

// ratioRow builds a Row from per-round subject and baseline values.
func ratioRow(pair, cas, metric, goal string, subject, baseline []float64) Row {
	var ratios []float64
	for i := range min(len(subject), len(baseline)) {
		if baseline[i] != 0 {
			ratios = append(ratios, subject[i]/baseline[i])
		}
	}
	r := Row{Pair: pair, Case: cas, Metric: metric, Goal: goal,
		Subject: median(subject), Baseline: median(baseline), Ratio: median(ratios)}
	if len(ratios) > 0 {
		r.Min, r.Max = slices.Min(ratios), slices.Max(ratios)
	}
	return r
}

func median(v []float64) float64 {
	if len(v) == 0 {
		return math.NaN()
	}
	s := slices.Clone(v)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// percentile returns the p-th percentile (0-100) of d.
func percentile(d []time.Duration, p float64) time.Duration {
	if len(d) == 0 {
		return 0
	}
	s := slices.Clone(d)
	slices.Sort(s)
	i := int(math.Ceil(p/100*float64(len(s)))) - 1
	return s[max(0, min(i, len(s)-1))]
}
