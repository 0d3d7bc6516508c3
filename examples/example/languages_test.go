package example_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	orcapb "github.com/cncf/xds/go/xds/data/orca/v3"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/encoding/gzip"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	v1pb "google.golang.org/grpc/reflection/grpc_reflection_v1"
	v1alphapb "google.golang.org/grpc/reflection/grpc_reflection_v1alpha"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protodesc"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/descriptorpb"

	"github.com/kuberpc/kuberpc/client"
	"github.com/kuberpc/kuberpc/examples/example"
	"github.com/kuberpc/kuberpc/examples/example/exampletest"
	"github.com/kuberpc/kuberpc/internal/testutils/replicas"
	"github.com/kuberpc/kuberpc/server"
)

// foreign is a running example server in another language.
type foreign struct {
	*exampletest.Server
	addr, metrics string
	cmd           *exec.Cmd
}

// startForeign starts lang's example server on free ports with env added,
// waits until it listens, and stops it (SIGTERM, then kill) at cleanup.
// The server picks its ports (PORT=0, METRICS_PORT=0) and says which.
func startForeign(t *testing.T, lang string, env ...string) *foreign {
	t.Helper()
	progs, err := exampletest.Build(context.Background(), lang)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(progs.Server[0], progs.Server[1:]...)
	cmd.Env = append(append(os.Environ(), "PORT=0", "METRICS_PORT=0", "DRAIN_DELAY=0", "DRAIN_TIMEOUT=1s"), env...)
	srv, err := exampletest.StartServer(cmd, 30*time.Second)
	if err != nil {
		t.Fatalf("the %s server: %v", lang, err)
	}
	t.Cleanup(func() { srv.Stop(10 * time.Second) })
	return &foreign{Server: srv, cmd: cmd,
		addr: fmt.Sprintf("127.0.0.1:%d", srv.Port), metrics: fmt.Sprintf("127.0.0.1:%d", srv.MetricsPort)}
}

func dialPlain(t *testing.T, addr string) *grpc.ClientConn {
	t.Helper()
	cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return cc
}

// TestGoClientForeignServers calls every language's example server with
// kuberpc's Go client: SayHello, the three streaming shapes, health per
// service, bad input, and server reflection where the language's gRPC
// has it.
func TestGoClientForeignServers(t *testing.T) {
	for _, lang := range exampletest.Languages {
		t.Run(lang, func(t *testing.T) {
			f := startForeign(t, lang)
			cc, err := client.Dial("dns:///"+f.addr, client.WithRegistry(prometheus.NewRegistry()))
			if err != nil {
				t.Fatal(err)
			}
			defer cc.Close()
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			resp, err := example.NewExampleServiceClient(cc).SayHello(ctx, &example.Request{Id: 7, Name: "Go"})
			if err != nil || resp.GetMessage() != "Hello, Go!" {
				t.Errorf("SayHello = %q, %v; want Hello, Go!", resp.GetMessage(), err)
			}
			// A gzip-compressed call is read, as Go's server reads it.
			zipped := strings.Repeat("gzip ", 1000)
			resp, err = example.NewExampleServiceClient(cc).SayHello(ctx, &example.Request{Id: 8, Name: zipped}, grpc.UseCompressor(gzip.Name))
			if err != nil || resp.GetMessage() != "Hello, "+zipped+"!" {
				t.Errorf("SayHello compressed with gzip = %.40q…, %v; want the greeting", resp.GetMessage(), err)
			}
			for _, svc := range []string{"", "example.ExampleService", "example.StreamService"} {
				h, err := healthpb.NewHealthClient(cc).Check(ctx, &healthpb.HealthCheckRequest{Service: svc})
				if err != nil || h.GetStatus() != healthpb.HealthCheckResponse_SERVING {
					t.Errorf("health of %q = %v, %v; want SERVING", svc, h, err)
				}
			}
			if _, err := healthpb.NewHealthClient(cc).Check(ctx, &healthpb.HealthCheckRequest{Service: "no.Such"}); status.Code(err) != codes.NotFound {
				t.Errorf("health of an unknown service: %v; want NOT_FOUND", err)
			}

			sc := example.NewStreamServiceClient(cc)
			gs, err := sc.Greetings(ctx, &example.Request{Id: 3, Name: "stream"})
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for {
				r, err := gs.Recv()
				if err == io.EOF {
					break
				}
				if err != nil {
					t.Fatal(err)
				}
				got = append(got, r.GetMessage())
			}
			if want := "Hello, stream! (1/3)|Hello, stream! (2/3)|Hello, stream! (3/3)"; strings.Join(got, "|") != want {
				t.Errorf("Greetings = %q, want %q", got, want)
			}
			if gs, err = sc.Greetings(ctx, &example.Request{Id: -1}); err == nil {
				_, err = gs.Recv()
			}
			if status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), "out of range") {
				t.Errorf("Greetings(id=-1) = %v, want INVALID_ARGUMENT naming the range", err)
			}

			cs, err := sc.CollectNames(ctx)
			if err != nil {
				t.Fatal(err)
			}
			for _, n := range []string{"a", "b", "c"} {
				cs.Send(&example.Request{Name: n})
			}
			if r, err := cs.CloseAndRecv(); err != nil || r.GetMessage() != "Hello, a, b, c!" {
				t.Errorf("CollectNames = %q, %v; want Hello, a, b, c!", r.GetMessage(), err)
			}
			cs, err = sc.CollectNames(ctx)
			if err != nil {
				t.Fatal(err)
			}
			big := strings.Repeat("x", 16<<10)
			for range 8 {
				if cs.Send(&example.Request{Name: big}) != nil {
					break
				}
			}
			if _, err := cs.CloseAndRecv(); status.Code(err) != codes.ResourceExhausted {
				t.Errorf("CollectNames of 128 KiB of names: %v; want RESOURCE_EXHAUSTED (64 KiB kept at most)", err)
			}

			chat, err := sc.Chat(ctx)
			if err != nil {
				t.Fatal(err)
			}
			for _, n := range []string{"x", "y"} {
				if err := chat.Send(&example.Request{Name: n}); err != nil {
					t.Fatal(err)
				}
				if r, err := chat.Recv(); err != nil || r.GetMessage() != "Hello, "+n+"!" {
					t.Errorf("Chat(%s) = %q, %v", n, r.GetMessage(), err)
				}
			}
			chat.CloseSend()
			if _, err := chat.Recv(); err != io.EOF {
				t.Errorf("Chat after CloseSend: %v, want EOF", err)
			}

			// Reflection: v1alpha in every language (C++'s plugin serves only
			// that), v1 in Python and Java (their runtimes' own).
			checkReflection(t, ctx, lang, f.addr, v1alphapb.ServerReflection_ServerReflectionInfo_FullMethodName)
			if lang != "cpp" {
				checkReflection(t, ctx, lang, f.addr, v1pb.ServerReflection_ServerReflectionInfo_FullMethodName)
			}
		})
	}
}

// checkReflection asks lang's server, through method (v1 or v1alpha:
// the same messages), for its services and for the files of
// example.StreamService, and checks that the descriptors describe it.
func checkReflection(t *testing.T, ctx context.Context, lang, addr, method string) {
	t.Helper()
	rs, err := dialPlain(t, addr).NewStream(ctx, &grpc.StreamDesc{ClientStreams: true, ServerStreams: true}, method)
	if err != nil {
		t.Fatal(err)
	}
	ask := func(req *v1pb.ServerReflectionRequest) *v1pb.ServerReflectionResponse {
		if err := rs.SendMsg(req); err != nil {
			t.Fatalf("%s: %v", method, err)
		}
		resp := new(v1pb.ServerReflectionResponse)
		if err := rs.RecvMsg(resp); err != nil {
			t.Fatalf("%s: %v", method, err)
		}
		return resp
	}
	var names []string
	for _, s := range ask(&v1pb.ServerReflectionRequest{MessageRequest: &v1pb.ServerReflectionRequest_ListServices{}}).GetListServicesResponse().GetService() {
		names = append(names, s.GetName())
	}
	if !slices.Contains(names, "example.ExampleService") || !slices.Contains(names, "example.StreamService") {
		t.Errorf("%s lists %v; want both example services", method, names)
	}
	fds := &descriptorpb.FileDescriptorSet{}
	for _, req := range []*v1pb.ServerReflectionRequest{
		{MessageRequest: &v1pb.ServerReflectionRequest_FileContainingSymbol{FileContainingSymbol: "example.StreamService"}},
		{MessageRequest: &v1pb.ServerReflectionRequest_FileByFilename{FileByFilename: "example.proto"}},
	} {
		for _, b := range ask(req).GetFileDescriptorResponse().GetFileDescriptorProto() {
			fd := &descriptorpb.FileDescriptorProto{}
			if err := proto.Unmarshal(b, fd); err != nil {
				t.Fatal(err)
			}
			if !slices.ContainsFunc(fds.File, func(f *descriptorpb.FileDescriptorProto) bool { return f.GetName() == fd.GetName() }) {
				fds.File = append(fds.File, fd)
			}
		}
	}
	files, err := protodesc.NewFiles(fds)
	if err != nil {
		t.Fatalf("%s %s: the reflected files do not make a consistent set: %v", lang, method, err)
	}
	d, err := files.FindDescriptorByName("example.StreamService.Chat")
	if err != nil {
		t.Fatalf("%s %s: %v", lang, method, err)
	}
	if m := d.(protoreflect.MethodDescriptor); !m.IsStreamingClient() || !m.IsStreamingServer() || m.Input().FullName() != "example.Request" {
		t.Errorf("%s %s: Chat reflected as %v", lang, method, m)
	}
	if e := ask(&v1pb.ServerReflectionRequest{MessageRequest: &v1pb.ServerReflectionRequest_FileContainingSymbol{FileContainingSymbol: "no.Such"}}).GetErrorResponse(); codes.Code(e.GetErrorCode()) != codes.NotFound {
		t.Errorf("%s %s: an unknown symbol answered %v; want NOT_FOUND", lang, method, e)
	}
	rs.CloseSend()
}

// TestForeignClientsGoServer calls the kuberpc Go server with every
// language's example client, generated from the same proto.
func TestForeignClientsGoServer(t *testing.T) {
	_, addr := replicas.Serve(t, replicas.ExampleService(example.Greeter{}))

	for _, lang := range exampletest.Languages {
		t.Run(lang, func(t *testing.T) {
			progs, err := exampletest.Build(context.Background(), lang)
			if err != nil {
				t.Fatal(err)
			}
			args := append(progs.Client[1:], addr, lang, "interop")
			out, err := exec.Command(progs.Client[0], args...).CombinedOutput()
			if err != nil {
				t.Fatalf("%s client: %v\n%s", lang, err, out)
			}
			if got, want := string(out), "Hello, "+lang+"!\nHello, interop!\n"; got != want {
				t.Errorf("%s client printed %q, want %q", lang, got, want)
			}
		})
	}
}

// exercise makes the same calls on any server: two SayHello, one
// Greetings stream, one call that fails.
func exercise(t *testing.T, addr string) {
	t.Helper()
	cc := dialPlain(t, addr)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	c := example.NewExampleServiceClient(cc)
	for range 2 {
		if _, err := c.SayHello(ctx, &example.Request{Name: "m"}, grpc.WaitForReady(true)); err != nil {
			t.Fatal(err)
		}
	}
	s, err := example.NewStreamServiceClient(cc).Greetings(ctx, &example.Request{Name: "m", Id: 2})
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := s.Recv(); err != nil {
			break
		}
	}
	bad, _ := example.NewStreamServiceClient(cc).Greetings(ctx, &example.Request{Name: "m", Id: -1})
	if _, err := bad.Recv(); err == nil {
		t.Fatal("Greetings(-1) succeeded")
	}
}

// scrape returns the non-zero series of url as "name{labels}" → value
// (a histogram's sample count), for the grpc_server_* families.
func scrape(t *testing.T, url string) map[string]float64 {
	t.Helper()
	var resp *http.Response
	var err error
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		if resp, err = http.Get(url); err == nil || time.Now().After(deadline) {
			break
		}
	}
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	parser := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := parser.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatalf("%s is not Prometheus text: %v", url, err)
	}
	out := map[string]float64{}
	for name, f := range fams {
		if !strings.HasPrefix(name, "grpc_server_") {
			continue
		}
		for _, m := range f.GetMetric() {
			var ls []string
			for _, l := range m.GetLabel() {
				if l.GetName() == "grpc_service" && strings.HasPrefix(l.GetValue(), "grpc.") {
					ls = nil
					break // health and reflection differ in what each runtime serves
				}
				ls = append(ls, l.GetName()+"="+l.GetValue())
			}
			if ls == nil {
				continue
			}
			slices.Sort(ls)
			v := m.GetCounter().GetValue() + m.GetGauge().GetValue() + float64(m.GetHistogram().GetSampleCount())
			if v == 0 {
				continue // Go creates every code's series up front
			}
			out[name+"{"+strings.Join(ls, ",")+"}"] = v
		}
	}
	return out
}

// TestForeignMetricsMatchGo: after the same calls, every language's
// /metrics has exactly the Go runtime's grpc_server_* series (names,
// labels, codes) with the same counts, so dashboards, kuberpc status and
// the autoscaling adapter see every replica alike.
func TestForeignMetricsMatchGo(t *testing.T) {
	reg := prometheus.NewRegistry()
	cfg := server.DefaultConfig()
	cfg.Drain.PropagationDelay = 0
	srv, err := server.New(server.WithConfig(cfg), server.WithRegistry(reg), server.WithLogger(slog.New(slog.NewTextHandler(io.Discard, nil))))
	if err != nil {
		t.Fatal(err)
	}
	example.RegisterExampleServiceServer(srv, example.Greeter{})
	example.RegisterStreamServiceServer(srv, example.Greeter{})
	lis, _ := net.Listen("tcp", "127.0.0.1:0")
	hl, _ := net.Listen("tcp", "127.0.0.1:0")
	go srv.Serve(lis)
	go srv.ServeHTTP(hl)
	defer srv.Shutdown(context.Background())
	exercise(t, lis.Addr().String())
	goSeries := scrape(t, "http://"+hl.Addr().String()+"/metrics")
	if len(goSeries) != 7 {
		t.Errorf("%d Go series compared, want 7 (started, handled by code, latency of SayHello and Greetings): %v", len(goSeries), goSeries)
	}

	for _, lang := range exampletest.Languages {
		t.Run(lang, func(t *testing.T) {
			f := startForeign(t, lang)
			exercise(t, f.addr)
			series := scrape(t, "http://"+f.metrics+"/metrics")
			for k, v := range goSeries {
				if pv, ok := series[k]; !ok || pv != v {
					t.Errorf("Go has %s = %v; %s has %v (present %v)", k, v, lang, pv, ok)
				}
			}
			for k := range series {
				if _, ok := goSeries[k]; !ok {
					t.Errorf("%s has %s; Go does not", lang, k)
				}
			}
		})
	}
}

// TestForeignORCA: with ORCA_PER_CALL=true every language's server sends
// a per-call ORCA load report in the trailers, as the Go runtime does,
// so weighted balancing sees every replica; without it, none.
func TestForeignORCA(t *testing.T) {
	for _, lang := range exampletest.Languages {
		t.Run(lang, func(t *testing.T) {
			for _, on := range []bool{true, false} {
				f := startForeign(t, lang, fmt.Sprintf("ORCA_PER_CALL=%v", on))
				c := example.NewExampleServiceClient(dialPlain(t, f.addr))
				var md metadata.MD
				// The load is sampled once a second: call until a report
				// shows the calls made.
				var rep orcapb.OrcaLoadReport
				for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); {
					ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
					_, err := c.SayHello(ctx, &example.Request{Name: "o"}, grpc.Trailer(&md))
					cancel()
					if err != nil {
						t.Fatal(err)
					}
					raw := md.Get("endpoint-load-metrics-bin")
					if !on {
						if len(raw) != 0 {
							t.Errorf("ORCA_PER_CALL=false: a report was sent (%d bytes)", len(raw[0]))
						}
						break
					}
					if len(raw) != 1 {
						t.Fatalf("ORCA_PER_CALL=true: trailers %v have no endpoint-load-metrics-bin", md)
					}
					if err := proto.Unmarshal([]byte(raw[0]), &rep); err != nil {
						t.Fatalf("the ORCA report is not an OrcaLoadReport: %v", err)
					}
					if rep.GetRpsFractional() > 0 {
						break
					}
					time.Sleep(50 * time.Millisecond)
				}
				if on {
					if rep.GetRpsFractional() <= 0 || rep.GetCpuUtilization() < 0 || rep.GetCpuUtilization() > 1 {
						t.Errorf("report %v: want rps > 0 and cpu utilisation in [0, 1]", &rep)
					}
					if _, ok := rep.GetNamedMetrics()["in_flight"]; !ok {
						t.Errorf("report %v has no in_flight", &rep)
					}
				}
			}
		})
	}
}

// holdChat opens a Chat stream on cc, has one message answered, and
// returns what ends the stream (nil if it gets another message instead).
func holdChat(t *testing.T, ctx context.Context, cc *grpc.ClientConn) <-chan error {
	t.Helper()
	chat, err := example.NewStreamServiceClient(cc).Chat(ctx)
	if err != nil {
		t.Fatal(err)
	}
	chat.Send(&example.Request{Name: "held"})
	if _, err := chat.Recv(); err != nil {
		t.Fatal(err)
	}
	ended := make(chan error, 1)
	go func() {
		_, err := chat.Recv()
		ended <- err
	}()
	return ended
}

// endsWithTheServer checks that a stream held by holdChat ended, once
// its server has exited.
func endsWithTheServer(t *testing.T, ended <-chan error) {
	t.Helper()
	select {
	case err := <-ended:
		if err == nil {
			t.Errorf("the held Chat stream got a message after the server exited, want its end")
		}
	case <-time.After(5 * time.Second):
		t.Errorf("the held Chat stream did not end with the server")
	}
}

// TestForeignDrain: on SIGTERM every language's server turns health
// NOT_SERVING at once, keeps serving DRAIN_DELAY, ends a stream its
// client holds open when DRAIN_TIMEOUT runs out, and exits with status 0
// within DRAIN_DELAY + DRAIN_TIMEOUT + 1 s.
func TestForeignDrain(t *testing.T) {
	const delay, timeout = 500 * time.Millisecond, time.Second
	for _, lang := range exampletest.Languages {
		t.Run(lang, func(t *testing.T) {
			f := startForeign(t, lang, "DRAIN_DELAY="+delay.String(), "DRAIN_TIMEOUT="+timeout.String())
			cc := dialPlain(t, f.addr)
			ctx, cancel := context.WithTimeout(context.Background(), delay+timeout+10*time.Second)
			defer cancel()
			chatEnded := holdChat(t, ctx, cc)

			begin := time.Now()
			f.cmd.Process.Signal(syscall.SIGTERM)
			hc := healthpb.NewHealthClient(cc)
			for {
				h, err := hc.Check(ctx, &healthpb.HealthCheckRequest{})
				if err == nil && h.GetStatus() == healthpb.HealthCheckResponse_NOT_SERVING {
					break
				}
				if time.Since(begin) > delay/2 {
					t.Fatalf("health %v, %v %v after SIGTERM; want NOT_SERVING at once", h, err, time.Since(begin))
				}
				time.Sleep(10 * time.Millisecond)
			}
			if _, err := example.NewExampleServiceClient(cc).SayHello(ctx, &example.Request{Name: "late"}); err != nil {
				t.Errorf("a call during DRAIN_DELAY failed: %v", err)
			}
			select {
			case <-f.Exited():
				took := time.Since(begin)
				if f.Err() != nil {
					t.Errorf("exit after drain: %v; want status 0\n%s", f.Err(), f.Output())
				}
				if took < delay || took > delay+timeout+time.Second {
					t.Errorf("exited %v after SIGTERM; want between DRAIN_DELAY %v and DRAIN_DELAY + DRAIN_TIMEOUT + 1s", took, delay)
				}
				t.Logf("%s: exit 0 %v after SIGTERM", lang, took.Round(10*time.Millisecond))
			case <-time.After(delay + timeout + 5*time.Second):
				t.Fatalf("still running %v after SIGTERM\n%s", delay+timeout+5*time.Second, f.Output())
			}
			endsWithTheServer(t, chatEnded)
		})
	}
}

// TestForeignSecondSignal: a second SIGTERM or SIGINT during the drain,
// in DRAIN_DELAY or while a stream holds the graceful stop, ends every
// language's server within a second or so (the drain would take a
// minute), with status 1, saying why; the held stream ends too.
func TestForeignSecondSignal(t *testing.T) {
	for _, lang := range exampletest.Languages {
		for _, tc := range []struct {
			phase       string
			delay, wait time.Duration // DRAIN_DELAY; the wait between the signals
		}{
			{"in DRAIN_DELAY", time.Minute, 500 * time.Millisecond},
			{"in the graceful stop", 100 * time.Millisecond, 600 * time.Millisecond},
		} {
			t.Run(lang+"/"+tc.phase, func(t *testing.T) {
				f := startForeign(t, lang, "DRAIN_DELAY="+tc.delay.String(), "DRAIN_TIMEOUT=1m")
				cc := dialPlain(t, f.addr)
				ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
				defer cancel()
				chatEnded := holdChat(t, ctx, cc)
				f.cmd.Process.Signal(syscall.SIGTERM)
				for !strings.Contains(f.Output(), "draining") {
					select {
					case <-f.Exited():
						t.Fatalf("exited after one SIGTERM\n%s", f.Output())
					case <-ctx.Done():
						t.Fatalf("no drain after SIGTERM\n%s", f.Output())
					case <-time.After(10 * time.Millisecond):
					}
				}
				time.Sleep(tc.wait)
				begin := time.Now()
				f.cmd.Process.Signal(syscall.SIGINT)
				select {
				case <-f.Exited():
					took := time.Since(begin)
					t.Logf("%s: %v %v after the second signal", lang, f.Err(), took.Round(10*time.Millisecond))
					var ee *exec.ExitError
					if !errors.As(f.Err(), &ee) || ee.ExitCode() != 1 {
						t.Errorf("exit: %v; want status 1\n%s", f.Err(), f.Output())
					}
					if took > 3*time.Second {
						t.Errorf("exited %v after the second signal; want within a second and a margin", took)
					}
					if !strings.Contains(f.Output(), "second signal during the drain") {
						t.Errorf("the output does not say why it stopped\n%s", f.Output())
					}
				case <-time.After(20 * time.Second):
					t.Fatalf("still running 20 s after the second signal\n%s", f.Output())
				}
				endsWithTheServer(t, chatEnded)
			})
		}
	}
}

// TestForeignDrainWithTheLongestTimeout: with DRAIN_TIMEOUT at the
// largest the runtimes take, 2562047h, a stream held through the drain
// keeps working until its client ends it, and the server then exits 0:
// each language's clock and timers hold the bound (Python's thread
// timeouts stop at about 2562047h47m, which is why the bound is whole
// hours).
func TestForeignDrainWithTheLongestTimeout(t *testing.T) {
	for _, lang := range exampletest.Languages {
		t.Run(lang, func(t *testing.T) {
			f := startForeign(t, lang, "DRAIN_DELAY=0", "DRAIN_TIMEOUT=2562047h")
			cc := dialPlain(t, f.addr)
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			chat, err := example.NewStreamServiceClient(cc).Chat(ctx)
			if err != nil {
				t.Fatal(err)
			}
			say := func(name string) error {
				if err := chat.Send(&example.Request{Name: name}); err != nil {
					return err
				}
				_, err := chat.Recv()
				return err
			}
			if err := say("before"); err != nil {
				t.Fatal(err)
			}
			f.cmd.Process.Signal(syscall.SIGTERM)
			time.Sleep(time.Second)
			if err := say("during the drain"); err != nil {
				t.Fatalf("the held stream, 1 s into the drain: %v; want it answered\n%s", err, f.Output())
			}
			chat.CloseSend()
			if _, err := chat.Recv(); err != io.EOF {
				t.Errorf("the stream's end: %v, want io.EOF", err)
			}
			select {
			case <-f.Exited():
				if f.Err() != nil {
					t.Errorf("exit after drain: %v; want status 0\n%s", f.Err(), f.Output())
				}
			case <-time.After(10 * time.Second):
				t.Fatalf("still running 10 s after its last stream ended\n%s", f.Output())
			}
		})
	}
}

// TestForeignDrainNotHeldByWatch: a health Watch stream (a client's
// health checking holds one open) does not hold a language's drain to
// DRAIN_TIMEOUT: with nothing else running the server exits 0 soon after
// DRAIN_DELAY, and the Watch saw NOT_SERVING first.
func TestForeignDrainNotHeldByWatch(t *testing.T) {
	const delay, timeout = 200 * time.Millisecond, 20 * time.Second
	for _, lang := range exampletest.Languages {
		t.Run(lang, func(t *testing.T) {
			f := startForeign(t, lang, "DRAIN_DELAY="+delay.String(), "DRAIN_TIMEOUT="+timeout.String())
			// Bounded, so that a server that never answers fails the test
			// instead of hanging it.
			ctx, cancel := context.WithTimeout(context.Background(), delay+timeout+5*time.Second)
			defer cancel()
			w, err := healthpb.NewHealthClient(dialPlain(t, f.addr)).Watch(ctx, &healthpb.HealthCheckRequest{})
			if err != nil {
				t.Fatal(err)
			}
			if r, err := w.Recv(); err != nil || r.GetStatus() != healthpb.HealthCheckResponse_SERVING {
				t.Fatalf("first Watch answer %v, %v; want SERVING", r, err)
			}
			begin := time.Now()
			f.cmd.Process.Signal(syscall.SIGTERM)
			if r, err := w.Recv(); err != nil || r.GetStatus() != healthpb.HealthCheckResponse_NOT_SERVING {
				t.Errorf("Watch answer after SIGTERM %v, %v; want NOT_SERVING\n%s", r, err, f.Output())
			}
			select {
			case <-f.Exited():
				if f.Err() != nil {
					t.Errorf("exit: %v; want status 0", f.Err())
				}
				if took := time.Since(begin); took > delay+3*time.Second {
					t.Errorf("exited %v after SIGTERM: the Watch held the drain (DRAIN_DELAY %v, DRAIN_TIMEOUT %v)", took, delay, timeout)
				}
			case <-time.After(timeout + 5*time.Second):
				t.Fatal("did not exit")
			}
		})
	}
}

// TestForeignMetricsPortSurvivesSlowClients: 300 connections to the
// metrics port that never finish their request (slowloris) do not keep
// /healthz from answering, so such clients cannot get a replica killed by
// its liveness probe. Before, the C++ server refused connections past 32
// and the Java one ran requests on 4 threads, both held by the idle
// clients: /healthz went unanswered.
func TestForeignMetricsPortSurvivesSlowClients(t *testing.T) {
	for _, lang := range exampletest.Languages {
		t.Run(lang, func(t *testing.T) {
			f := startForeign(t, lang)
			var idle []net.Conn
			defer func() {
				for _, c := range idle {
					c.Close()
				}
			}()
			for range 300 {
				c, err := net.Dial("tcp", f.metrics)
				if err != nil {
					t.Fatal(err)
				}
				c.Write([]byte("GET /healthz HTTP/1.1\r\n"))
				idle = append(idle, c)
			}
			time.Sleep(300 * time.Millisecond)
			hc := http.Client{Timeout: 2 * time.Second}
			for _, path := range []string{"/healthz", "/readyz"} {
				begin := time.Now()
				resp, err := hc.Get("http://" + f.metrics + path)
				if err != nil {
					t.Errorf("%s with 300 idle clients: %v", path, err)
					continue
				}
				resp.Body.Close()
				if resp.StatusCode != http.StatusOK || time.Since(begin) > time.Second {
					t.Errorf("%s with 300 idle clients: %d in %v; want 200 within 1s", path, resp.StatusCode, time.Since(begin))
				}
			}
		})
	}
}

// TestForeignBadSettings: a bad setting stops every language's server at
// start, with a message naming the variable, as the Go runtime does; Go
// durations and plain seconds are both taken.
func TestForeignBadSettings(t *testing.T) {
	bad := map[string]string{
		"DRAIN_DELAY=2x":         "DRAIN_DELAY",
		"DRAIN_TIMEOUT=-1s":      "DRAIN_TIMEOUT",
		"DRAIN_TIMEOUT=1s2":      "DRAIN_TIMEOUT",
		"PORT=70000":             "PORT",
		"METRICS_PORT=http":      "METRICS_PORT",
		"ORCA_PER_CALL=sometime": "ORCA_PER_CALL",
		// Beyond what a duration holds: Python took inf and nan as
		// numbers (and crashed on inf), Java took 1e400 as infinity, and
		// none had Go's bound.
		"DRAIN_DELAY=inf":         "DRAIN_DELAY",
		"DRAIN_DELAY=nan":         "DRAIN_DELAY",
		"DRAIN_TIMEOUT=1e400":     "DRAIN_TIMEOUT",
		"DRAIN_TIMEOUT=2562048h":  "DRAIN_TIMEOUT",
		"DRAIN_TIMEOUT=-infinity": "DRAIN_TIMEOUT",
	}
	for _, lang := range exampletest.Languages {
		t.Run(lang, func(t *testing.T) {
			progs, err := exampletest.Build(context.Background(), lang)
			if err != nil {
				t.Fatal(err)
			}
			for setting, name := range bad {
				// A server that takes the setting runs until killed.
				ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
				cmd := exec.CommandContext(ctx, progs.Server[0], progs.Server[1:]...)
				cmd.Env = append(os.Environ(), "PORT=0", "METRICS_PORT=-1", setting)
				out, err := cmd.CombinedOutput()
				cancel()
				if err == nil || errors.Is(ctx.Err(), context.DeadlineExceeded) || !strings.Contains(string(out), name) || strings.Contains(string(out), "Traceback") {
					t.Errorf("%s: exit %v, output %q; want a failure at start naming %s", setting, err, out, name)
				}
			}
			// Good ones: the server starts (and is stopped).
			for _, good := range []string{"DRAIN_TIMEOUT=1m30s", "DRAIN_DELAY=250ms", "DRAIN_DELAY=0.5", "DRAIN_TIMEOUT=0", "DRAIN_TIMEOUT=2562047h"} {
				startForeign(t, lang, good)
			}
		})
	}
}
