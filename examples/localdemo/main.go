// Command localdemo starts N example servers as local processes, each on
// its own loopback port, drives SayHello load through kuberpc's client with
// round_robin, prints how many calls each replica answered, and drains the
// servers with SIGTERM. It is the demo that needs no cluster; the cluster
// demo (scripts/demo.sh) runs the same servers as pods.
package main

import (
	"context"
	"flag"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/resolver"
	"google.golang.org/grpc/resolver/manual"

	"github.com/kuberpc/kuberpc/client"
	"github.com/kuberpc/kuberpc/examples/example"
)

func main() {
	replicas := flag.Int("replicas", 3, "example servers to start")
	requests := flag.Int("requests", 3000, "SayHello calls to make")
	concurrency := flag.Int("concurrency", 8, "concurrent callers")
	serverBin := flag.String("server", "", "example server binary (default: build ./examples/example/server)")
	flag.Parse()
	if err := run(*replicas, *requests, *concurrency, *serverBin); err != nil {
		fmt.Fprintln(os.Stderr, "localdemo:", err)
		os.Exit(1)
	}
}

func run(replicas, requests, concurrency int, bin string) error {
	if replicas < 1 || requests < 1 || concurrency < 1 {
		return fmt.Errorf("-replicas, -requests and -concurrency must be at least 1")
	}
	if bin == "" {
		dir, err := os.MkdirTemp("", "kuberpc-demo")
		if err != nil {
			return err
		}
		defer os.RemoveAll(dir)
		bin = filepath.Join(dir, "example-server")
		fmt.Println("building the example server...")
		b := exec.Command("go", "build", "-o", bin, "./examples/example/server")
		b.Stdout, b.Stderr = os.Stdout, os.Stderr
		if err := b.Run(); err != nil {
			return fmt.Errorf("build example server: %w", err)
		}
	}

	var addrs []resolver.Address
	var procs []*exec.Cmd
	defer func() {
		for _, p := range procs {
			p.Process.Signal(syscall.SIGTERM)
		}
		for _, p := range procs {
			p.Wait()
		}
	}()
	for i := range replicas {
		port, mport, err := freePorts()
		if err != nil {
			return err
		}
		cmd := exec.Command(bin)
		cmd.Env = append(os.Environ(), "PORT="+strconv.Itoa(port), "METRICS_PORT="+strconv.Itoa(mport),
			fmt.Sprintf("POD_NAME=example-%d", i), "DRAIN_DELAY=200ms", "LOG_LEVEL=warn")
		cmd.Stderr = os.Stderr
		if err := cmd.Start(); err != nil {
			return err
		}
		procs = append(procs, cmd)
		addr := fmt.Sprintf("127.0.0.1:%d", port)
		addrs = append(addrs, resolver.Address{Addr: addr})
		fmt.Printf("replica example-%d on %s (metrics on :%d)\n", i, addr, mport)
	}

	r := manual.NewBuilderWithScheme("demo")
	r.InitialState(resolver.State{Addresses: addrs})
	cc, err := client.Dial("demo:///example", client.WithDialOptions(grpc.WithResolvers(r)),
		client.WithIdempotentMethods("example.ExampleService/SayHello"), client.WithRegistry(prometheus.NewRegistry()))
	if err != nil {
		return err
	}
	defer cc.Close()
	c := example.NewExampleServiceClient(cc)

	// Wait until every replica answers.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, a := range addrs {
		for {
			conn, err := net.DialTimeout("tcp", a.Addr, time.Second)
			if err == nil {
				conn.Close()
				break
			}
			if ctx.Err() != nil {
				return fmt.Errorf("replica %s did not start", a.Addr)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}

	var mu sync.Mutex
	counts := map[string]int{}
	failures := 0
	start := time.Now()
	var wg sync.WaitGroup
	per := requests / concurrency
	for g := range concurrency {
		n := per
		if g < requests%concurrency {
			n++
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range n {
				var p peer.Peer
				resp, err := c.SayHello(ctx, &example.Request{Id: int32(i), Name: "demo"}, grpc.Peer(&p))
				mu.Lock()
				if err != nil || resp.GetMessage() != "Hello, demo!" {
					failures++
				} else {
					counts[p.Addr.String()]++
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	el := time.Since(start)
	fmt.Printf("\n%d calls in %v (%.0f/s), %d failed\n", requests, el.Round(time.Millisecond), float64(requests)/el.Seconds(), failures)
	keys := make([]string, 0, len(counts))
	for k := range counts {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	fmt.Printf("%-22s %8s %7s\n", "REPLICA", "CALLS", "SHARE")
	for _, k := range keys {
		fmt.Printf("%-22s %8d %6.1f%%\n", k, counts[k], 100*float64(counts[k])/float64(requests))
	}
	if failures > 0 {
		return fmt.Errorf("%d calls failed", failures)
	}
	if len(counts) != replicas {
		return fmt.Errorf("only %d of %d replicas answered", len(counts), replicas)
	}
	return nil
}

func freePorts() (int, int, error) {
	var ports [2]int
	for i := range ports {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return 0, 0, err
		}
		ports[i] = l.Addr().(*net.TCPAddr).Port
		defer l.Close()
	}
	return ports[0], ports[1], nil
}
