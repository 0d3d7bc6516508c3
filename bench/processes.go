package bench

import (
	"bufio"
	"bytes"
	"context"
	"encoding/gob"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"os/exec"
	"slices"
	"strings"
	"time"
)

// overheadCaseCommand is the argument with which the bench binary runs
// one overhead case in a process of its own (see RunSubcommand and
// Overhead).
const overheadCaseCommand = "overhead-case"

// caseSpec is the overhead case a process of its own measures.
type caseSpec struct {
	Scale         Scale
	Payload, Conc int
}

// caseInProcess measures spec's case in a new process of this executable
// with sides of its own and returns its rows.
func caseInProcess(spec caseSpec) ([]Row, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, err
	}
	arg, err := json.Marshal(spec)
	if err != nil {
		return nil, err
	}
	// Every side's rounds, at their longest, and a minute to start.
	bound := time.Duration(spec.Scale.Rounds+1)*time.Duration(len(overheadSideNames))*max(spec.Scale.Round, spec.Scale.MaxRound) + time.Minute
	ctx, cancel := context.WithTimeout(context.Background(), bound)
	defer cancel()
	cmd := exec.CommandContext(ctx, exe, overheadCaseCommand, string(arg))
	var out, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &stderr
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("%s %s: %w: %s", overheadCaseCommand, arg, err, strings.TrimSpace(stderr.String()))
	}
	var rows []Row
	if err := gob.NewDecoder(&out).Decode(&rows); err != nil {
		return nil, fmt.Errorf("%s %s: reading its rows: %w", overheadCaseCommand, arg, err)
	}
	return rows, nil
}

// runOverheadCase is the process caseInProcess starts: it measures the
// case args[0] (a caseSpec in JSON) names and writes its rows to stdout.
func runOverheadCase(args []string) error {
	if len(args) != 1 {
		return errors.New("usage: overhead-case SPEC (JSON)")
	}
	var spec caseSpec
	if err := json.Unmarshal([]byte(args[0]), &spec); err != nil {
		return fmt.Errorf("spec %s: %w", args[0], err)
	}
	if spec.Scale.Rounds < 1 || spec.Scale.Round <= 0 || spec.Payload < 0 || spec.Conc < 1 {
		return fmt.Errorf("spec %s: want rounds ≥ 1, a round > 0, payload ≥ 0, conc ≥ 1", args[0])
	}
	sides, err := overheadSides()
	if err != nil {
		return err
	}
	defer closeSides(sides)
	rows, _, err := measureCase(sides, spec.Scale, spec.Payload, spec.Conc)
	if err != nil {
		return err
	}
	return gob.NewEncoder(os.Stdout).Encode(rows)
}

// acrossProcesses summarises one case measured in several processes
// (perProcess[i] the rows of process i): for each goal row of QPS or p99
// and each A/A row of those metrics, a row whose ratio is the median of
// the processes' ratios (each itself a median over rounds) and whose
// spread is their min–max: how far the run's one-process figure could
// have landed elsewhere, which the in-process A/A rows cannot show.
func acrossProcesses(perProcess [][]Row) []Row {
	var rows []Row
	for _, r := range perProcess[0] {
		if r.Metric != "QPS" && r.Metric != "p99" || r.Goal == "" && !strings.HasSuffix(r.Case, " A/A") {
			continue
		}
		var ratios, subjects, baselines []float64
		for _, pr := range perProcess {
			for _, o := range pr {
				if o.Case == r.Case && o.Metric == r.Metric && !math.IsNaN(o.Ratio) {
					ratios, subjects, baselines = append(ratios, o.Ratio), append(subjects, o.Subject), append(baselines, o.Baseline)
				}
			}
		}
		if len(ratios) == 0 {
			continue
		}
		rows = append(rows, Row{Pair: r.Pair, Case: fmt.Sprintf("%s, %d processes", r.Case, len(ratios)), Metric: r.Metric,
			Subject: median(subjects), Baseline: median(baselines), Ratio: median(ratios),
			Min: slices.Min(ratios), Max: slices.Max(ratios), Processes: len(ratios)})
	}
	return rows
}

// child is a server process this one started (the overload and overhead
// servers): it serves at addr and stops when its stdin closes.
type child struct {
	cmd   *exec.Cmd
	stdin io.WriteCloser
	addr  string
}

// startServing starts cmd, a server that prints "ADDR host:port" on its
// stdout once it serves, with its stderr on this process's, and returns
// it and the rest of its stdout. If it does not start, its stdin is
// closed and it is waited for.
func startServing(cmd *exec.Cmd) (*child, *bufio.Reader, error) {
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, nil, err
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, nil, err
	}
	stdout := bufio.NewReader(out)
	line, err := stdout.ReadString('\n')
	addr, ok := strings.CutPrefix(strings.TrimSpace(line), "ADDR ")
	if err != nil || !ok {
		stdin.Close()
		cmd.Wait()
		return nil, nil, fmt.Errorf("did not start: read %q: %v", line, err)
	}
	return &child{cmd: cmd, stdin: stdin, addr: addr}, stdout, nil
}

// stop closes the child's stdin, which stops it, and waits for it: at
// most 10 s, then it kills it.
func (c *child) stop() error {
	c.stdin.Close()
	done := make(chan error, 1)
	go func() { done <- c.cmd.Wait() }()
	select {
	case err := <-done:
		return err
	case <-time.After(10 * time.Second):
		c.cmd.Process.Kill()
		<-done
		return fmt.Errorf("%s did not stop within 10s of its stdin closing", c.cmd.Args[1])
	}
}
