package bench

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"runtime"
	"time"

	"google.golang.org/grpc"

	"github.com/kuberpc/kuberpc/client"
)

// overheadServerCommand is the argument with which the bench binary serves
// the example services in a process of its own (see RunSubcommand and
// OverheadApart).
const overheadServerCommand = "overhead-server"

// usage is what a process has used: CPU time (user and system) and heap
// allocations.
type usage struct {
	cpu     time.Duration
	mallocs uint64
}

// processUsage is this process's usage.
func processUsage() usage {
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return usage{cpu: processCPU(), mallocs: m.Mallocs}
}

// serveOverheadServer is the process startServerProcess starts: it serves
// the example services on a server of kind args[0] on a loopback port and
// prints "ADDR host:port" on stdout. Then, for each line it reads on
// stdin, it answers with a line "USAGE cpu-ns mallocs" (after a garbage
// collection when the line is "before", so that a round does not pay for
// the garbage of the one before, as unaryCalls does in one process), and
// it stops when stdin closes.
func serveOverheadServer(args []string, stdin io.Reader, stdout io.Writer) error {
	if len(args) != 1 {
		return errors.New("usage: overhead-server KIND")
	}
	srv, err := newExampleServer(serverKind(args[0]), nil)
	if err != nil {
		return err
	}
	defer srv.stop()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	go srv.serve(lis)
	if _, err := fmt.Fprintf(stdout, "ADDR %s\n", lis.Addr()); err != nil {
		return err
	}
	in := bufio.NewScanner(stdin)
	for in.Scan() {
		if in.Text() == "before" {
			runtime.GC()
		}
		u := processUsage()
		if _, err := fmt.Fprintf(stdout, "USAGE %d %d\n", u.cpu, u.mallocs); err != nil {
			return err
		}
	}
	return in.Err()
}

// serverProcess is a server of the example services running in a process
// of its own.
type serverProcess struct {
	*child
	kind   serverKind
	stdout *bufio.Reader
}

// startServerProcess starts this executable as a server of kind.
func startServerProcess(kind serverKind) (*serverProcess, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, err
	}
	c, stdout, err := startServing(exec.Command(exe, overheadServerCommand, string(kind)))
	if err != nil {
		return nil, fmt.Errorf("%s server process: %w", kind, err)
	}
	return &serverProcess{child: c, kind: kind, stdout: stdout}, nil
}

// usage asks the process for its usage; before says a round is about to
// start (the process collects its garbage first).
func (p *serverProcess) usage(before bool) (usage, error) {
	req := "after\n"
	if before {
		req = "before\n"
	}
	if _, err := io.WriteString(p.stdin, req); err != nil {
		return usage{}, fmt.Errorf("%s server process: %w", p.kind, err)
	}
	line, err := p.stdout.ReadString('\n')
	var u usage
	var cpu int64
	if n, _ := fmt.Sscanf(line, "USAGE %d %d\n", &cpu, &u.mallocs); err != nil || n != 2 {
		return usage{}, fmt.Errorf("%s server process: its usage: read %q: %v", p.kind, line, err)
	}
	u.cpu = time.Duration(cpu)
	return u, nil
}

// apartConn is a side's client connection to a server process; Close
// stops the process.
type apartConn struct {
	sideConn
	server *serverProcess
}

// apartSides starts the overhead sides (overheadSides' order) with each
// side's server in a process of its own and its client in this one.
func apartSides() ([]overheadSide, error) {
	dialFast := dialKuberpc(nil, client.WithFastPath())
	specs := []struct {
		kind serverKind
		dial func(target string) (*grpc.ClientConn, error)
		n    int // connections
	}{
		sideRaw:       {rawServer, dialRaw, 1},
		sideRawAA:     {rawServer, dialRaw, 1},
		sideRawTuned:  {tunedServer, dialRaw, 1},
		sideKuberpc:   {kuberpcServer, dialKuberpc(nil), 1},
		sideFast:      {fastServer, dialFast, 1},
		sideRawTuned2: {tunedServer, dialRaw, 2},
	}
	var sides []overheadSide
	for i, sp := range specs {
		sd, err := apartSide(sp.kind, sp.dial, sp.n)
		if err != nil {
			closeSides(sides)
			return nil, fmt.Errorf("%s: %w", overheadSideNames[i], err)
		}
		sides = append(sides, overheadSide{overheadSideNames[i], sd})
	}
	return sides, nil
}

func apartSide(kind serverKind, dial func(target string) (*grpc.ClientConn, error), n int) (*apartConn, error) {
	p, err := startServerProcess(kind)
	if err != nil {
		return nil, err
	}
	stop := func() { p.stop() }
	cc, err := dial("passthrough:///" + p.addr)
	if err != nil {
		stop()
		return nil, err
	}
	c := &Conn{ClientConn: cc, stop: stop}
	if n == 1 {
		return &apartConn{c, p}, nil
	}
	cs, err := dialConns(c, n)
	if err != nil {
		return nil, err
	}
	return &apartConn{cs, p}, nil
}

// serverUsage is implemented by a side whose server runs in another
// process: its usage, which a measurement adds to this process's.
func (c *apartConn) serverUsage(before bool) (usage, error) { return c.server.usage(before) }

// remoteServer is a side whose server runs in another process.
type remoteServer interface {
	serverUsage(before bool) (usage, error)
}

var _ remoteServer = (*apartConn)(nil)

// OverheadApart measures the unary cases of small messages (1 B and 1 KiB,
// one call in flight and 64) as Overhead does, on the same sides, but with
// each side's server in a process of its own, on the same machine, as a
// client pod and a server pod share a node: two Go runtimes, each with
// the machine's cores, instead of one that schedules the client's and the
// server's goroutines together. CPU µs/call and allocs/op add the server
// process's to the client's. Its rows (pair ApartPair) are
// context beside Overhead's, without goals.
func OverheadApart(s Scale, progress io.Writer) ([]Row, error) {
	sides, err := apartSides()
	if err != nil {
		return nil, err
	}
	defer closeSides(sides)
	var rows []Row
	for _, payload := range []int{1, 1024} {
		for _, conc := range []int{1, 64} {
			cr, _, err := measureCase(sides, s, payload, conc)
			if err != nil {
				return nil, err
			}
			for _, r := range cr {
				r.Pair, r.Goal = ApartPair, ""
				rows = append(rows, r)
			}
			fmt.Fprintf(progress, "overhead, server apart: %s done\n", caseName(payload, conc))
		}
	}
	return rows, nil
}

// ApartPair is the pair of OverheadApart's rows.
const ApartPair = "overhead, server apart"
