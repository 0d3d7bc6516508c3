package bench

import (
	"bufio"
	"context"
	"io"
	"strings"
	"testing"

	"github.com/kuberpc/kuberpc/examples/example"
)

// TestServerProcessProtocol: the server process, run in this one on
// pipes, prints its address, serves calls on it, answers each line with
// its usage, and stops when its stdin closes; a kind it does not know is
// an error naming it.
func TestServerProcessProtocol(t *testing.T) {
	inR, inW := io.Pipe()
	outR, outW := io.Pipe()
	done := make(chan error, 1)
	go func() { done <- serveOverheadServer([]string{string(kuberpcServer)}, inR, outW); outW.Close() }()
	out := bufio.NewReader(outR)
	line, err := out.ReadString('\n')
	addr, ok := strings.CutPrefix(strings.TrimSpace(line), "ADDR ")
	if err != nil || !ok {
		t.Fatalf("first line %q, %v; want ADDR host:port", line, err)
	}
	cc, err := dialRaw("passthrough:///" + addr)
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	if _, err := example.NewExampleServiceClient(cc).SayHello(context.Background(), &example.Request{Name: "x"}); err != nil {
		t.Fatalf("a call to the served address: %v", err)
	}
	for _, req := range []string{"before\n", "after\n"} {
		io.WriteString(inW, req)
		if l, err := out.ReadString('\n'); err != nil || !strings.HasPrefix(l, "USAGE ") || len(strings.Fields(l)) != 3 {
			t.Errorf("answer to %q: %q, %v; want USAGE cpu mallocs", req, l, err)
		}
	}
	inW.Close()
	if err := <-done; err != nil {
		t.Errorf("after stdin closed: %v, want nil", err)
	}
	for _, args := range [][]string{{"bogus"}, {}} {
		err := serveOverheadServer(args, strings.NewReader(""), io.Discard)
		if err == nil || len(args) > 0 && !strings.Contains(err.Error(), `"bogus"`) {
			t.Errorf("serveOverheadServer(%q) = %v, want an error naming the kind", args, err)
		}
	}
}

// TestServerProcessUsageIsCounted: calls to a server in a process of its
// own (the test binary, started as OverheadApart starts it) are served
// there, and the measurement adds that process's CPU and allocations to
// the client's: a kuberpc server allocates dozens of objects per call,
// so allocs/op with the server's usage must exceed the client's alone by
// more than that. Stopping the side stops the process.
func TestServerProcessUsageIsCounted(t *testing.T) {
	sd, err := apartSide(kuberpcServer, dialRaw, 1)
	if err != nil {
		t.Fatal(err)
	}
	c := example.NewExampleServiceClient(sd)
	req := &example.Request{Name: "x"}
	const n = 2000
	alone, err := unaryRound(c, req, n, 1)
	if err != nil {
		t.Fatal(err)
	}
	both, err := unaryCalls(c, sd, req, n, 0, 1)
	if err != nil {
		t.Fatal(err)
	}
	if both.allocs < alone.allocs+20 || both.cpu <= alone.cpu {
		t.Errorf("with the server process's usage: %.1f allocs/op, %.1f µs/call; the client's alone: %.1f, %.1f; want more than 20 more allocs and more CPU",
			both.allocs, both.cpu, alone.allocs, alone.cpu)
	}
	sd.Close()
	if st := sd.server.cmd.ProcessState; st == nil || !st.Exited() {
		t.Errorf("server process after Close: %v, want exited", st)
	}
	if _, err := sd.serverUsage(true); err == nil {
		t.Error("usage of a stopped server process: no error")
	}
}

// TestOverheadApart: the sides with their servers apart give the same
// rows as in one process, under their own pair, without goals (they are
// context: the goals are judged in one process).
func TestOverheadApart(t *testing.T) {
	rows, err := OverheadApart(Tiny, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	one := caseRows("", 1, 1, make([][]sideResult, len(overheadSideNames)))
	if want := 4 * len(one); len(rows) != want {
		t.Errorf("%d rows, want %d", len(rows), want)
	}
	var measured, want int
	for _, r := range one {
		if r.Metric == "QPS" {
			want += 4
		}
	}
	for _, r := range rows {
		if r.Pair != ApartPair || r.Goal != "" {
			t.Errorf("row %+v: want pair %q and no goal", r, ApartPair)
		}
		if r.Metric == "QPS" && r.Ratio > 0 && r.Subject > 0 {
			measured++
		}
	}
	if measured != want {
		t.Errorf("%d QPS rows measured, want %d (every case's)", measured, want)
	}
}
