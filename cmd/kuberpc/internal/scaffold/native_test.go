package scaffold_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/emptypb"

	"github.com/kuberpc/kuberpc/cmd/kuberpc/internal/scaffold"
	"github.com/kuberpc/kuberpc/examples/example"
)

// A proto with what trips a scaffold: two services, the four streaming
// shapes, a nested message, a well-known type, a snake_case method, a
// dotted package and java_multiple_files in one file, an outer class
// named after a message in the other.
var shopProtos = []scaffold.File{
	{Name: "shop.proto", Content: []byte(`syntax = "proto3";
package acme.shop.v1;
option java_multiple_files = true;
import "google/protobuf/empty.proto";
import "item.proto";
message Order { message Line { string sku = 1; int32 qty = 2; } repeated Line lines = 1; }
service Orders {
  rpc Place (Order) returns (google.protobuf.Empty);
  rpc get_order (google.protobuf.Empty) returns (Order);
  rpc Watch (google.protobuf.Empty) returns (stream Order.Line);
  rpc Upload (stream Order.Line) returns (Order);
  rpc Sync (stream Order) returns (stream acme.items.Item);
}
service Health2 { rpc Ping (google.protobuf.Empty) returns (google.protobuf.Empty); }
`)},
	{Name: "item.proto", Content: []byte(`syntax = "proto3";
package acme.items;
message Item { string sku = 1; }
message ItemList { repeated Item items = 1; }
service Items { rpc List (Item) returns (ItemList); }
`)},
}

// mirrorProto declares a service named like item.proto's in another
// package. Go's one package pb cannot hold both (TestGoNameClashIsNamed);
// the other languages can, each service with a class of its own.
var mirrorProto = scaffold.File{Name: "mirror.proto", Content: []byte(`syntax = "proto3";
package acme.mirror;
import "item.proto";
service Items {
  rpc List (acme.items.Item) returns (acme.items.ItemList);
  rpc Find (acme.items.Item) returns (acme.items.Item);
}
`)}

// nativeMethods are the full method names of shopProtos and mirrorProto
// and whether the client streams.
var nativeMethods = map[string]bool{
	"/acme.shop.v1.Orders/Place": false, "/acme.shop.v1.Orders/get_order": false, "/acme.shop.v1.Orders/Watch": false,
	"/acme.shop.v1.Orders/Upload": true, "/acme.shop.v1.Orders/Sync": true, "/acme.shop.v1.Health2/Ping": false,
	"/acme.items.Items/List": false, "/acme.mirror.Items/List": false, "/acme.mirror.Items/Find": false,
}

// TestScaffoldedNativeServices: `kuberpc new --lang cpp|java|python` on
// protos with several services, two of one name in different packages,
// every streaming shape, nested messages and a well-known type builds, serves health for every service, answers
// each method UNIMPLEMENTED naming it (the stub to fill in), and drains
// on SIGTERM with exit 0.
func TestScaffoldedNativeServices(t *testing.T) {
	for _, lang := range []string{"cpp", "java", "python"} {
		t.Run(lang, func(t *testing.T) {
			if err := example.RequireToolchain(lang); err != nil {
				t.Fatal(err)
			}
			o := scaffold.Options{Name: "shop", Dir: t.TempDir(), Protos: append(slices.Clone(shopProtos), mirrorProto)}
			var path string
			var err error
			var server []string
			switch lang {
			case "cpp":
				path, err = scaffold.NewCpp(context.Background(), o, scaffold.CppRuntime())
				server = []string{filepath.Join(path, "cpp", "build", "server")}
			case "java":
				path, err = scaffold.NewJava(context.Background(), o, scaffold.JavaRuntime())
				server = []string{filepath.Join(path, "java", "build", "server")}
			case "python":
				path, err = scaffold.NewPython(context.Background(), o, scaffold.PythonRuntime())
				server = []string{"/usr/bin/python3", filepath.Join(path, "python", "server.py")}
			}
			if err != nil {
				t.Fatal(err)
			}
			// The user's Place ignores cancellation (sleeps a minute): the
			// drain must still end on time.
			ignoreCancellation(t, lang, path)
			cmd := exec.Command(server[0], server[1:]...)
			cmd.Env = append(os.Environ(), "DRAIN_DELAY=100ms", "DRAIN_TIMEOUT=2s")
			srv := startServed(t, cmd)
			cc, err := grpc.NewClient(fmt.Sprintf("127.0.0.1:%d", srv.Port), grpc.WithTransportCredentials(insecure.NewCredentials()))
			if err != nil {
				t.Fatal(err)
			}
			defer cc.Close()
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			for _, svc := range []string{"", "acme.shop.v1.Orders", "acme.shop.v1.Health2", "acme.items.Items", "acme.mirror.Items"} {
				h, err := healthpb.NewHealthClient(cc).Check(ctx, &healthpb.HealthCheckRequest{Service: svc})
				if err != nil || h.GetStatus() != healthpb.HealthCheckResponse_SERVING {
					t.Errorf("health of %q: %v, %v; want SERVING", svc, h, err)
				}
			}
			hung := make(chan error, 1)
			go func() {
				hung <- cc.Invoke(context.Background(), "/acme.shop.v1.Orders/Place", &emptypb.Empty{}, &emptypb.Empty{})
			}()
			for m, clientStream := range nativeMethods {
				if m == "/acme.shop.v1.Orders/Place" {
					continue
				}
				// An empty message is a valid encoding of every message.
				// A stub may end a client stream before the request is
				// sent: SendMsg's io.EOF says so, and RecvMsg has the
				// status (grpc.ClientStream's contract).
				s, err := cc.NewStream(ctx, &grpc.StreamDesc{ClientStreams: clientStream, ServerStreams: true}, m)
				if err == nil {
					if err = s.SendMsg(&emptypb.Empty{}); err == nil {
						err = s.CloseSend()
					}
					if err == nil || errors.Is(err, io.EOF) {
						err = s.RecvMsg(&emptypb.Empty{})
					}
				}
				name := strings.ReplaceAll(strings.TrimPrefix(m, "/"), "/", ".")
				if status.Code(err) != codes.Unimplemented || !strings.Contains(err.Error(), name+" is not implemented yet") {
					t.Errorf("%s: %v; want the scaffold's UNIMPLEMENTED stub naming %s", m, err, name)
				}
			}
			time.Sleep(200 * time.Millisecond) // Place is running
			begin := time.Now()
			cmd.Process.Signal(syscall.SIGTERM)
			select {
			case <-srv.Exited():
				err := srv.Err()
				took := time.Since(begin)
				if err != nil {
					t.Errorf("exit after SIGTERM: %v, want 0", err)
				}
				// DRAIN_DELAY + DRAIN_TIMEOUT + 1 s, and half a second for
				// the signal and the process's exit.
				if bound := 100*time.Millisecond + 2*time.Second + 1500*time.Millisecond; took > bound {
					t.Errorf("exited %v after SIGTERM with a handler ignoring cancellation; want within %v", took, bound)
				}
				t.Logf("exit %v after SIGTERM, one handler ignoring its cancellation", took.Round(10*time.Millisecond))
			case <-time.After(10 * time.Second):
				t.Error("still running 10 s after SIGTERM: a handler ignoring cancellation holds the process")
			}
			if err := <-hung; err == nil {
				t.Error("the call whose handler ignored cancellation succeeded")
			}
		})
	}
}

// ignoreCancellation rewrites the scaffolded Orders.Place stub of lang's
// service at path to sleep a minute, deaf to cancellation, and rebuilds.
func ignoreCancellation(t *testing.T, lang, path string) {
	t.Helper()
	edit := map[string]struct{ file, marker, insert string }{
		"cpp":    {"cpp/server.cc", "grpc::Status Place(", "    std::this_thread::sleep_for(std::chrono::seconds(60));"},
		"java":   {"java/server/Server.java", "public void place(", "      try { Thread.sleep(60000); } catch (InterruptedException e) { }"},
		"python": {"python/server.py", "def Place(self", "        __import__('time').sleep(60)"},
	}[lang]
	f := filepath.Join(path, edit.file)
	b, err := os.ReadFile(f)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(string(b), "\n")
	var out []string
	found := false
	for _, l := range lines {
		out = append(out, l)
		if strings.Contains(l, edit.marker) {
			out, found = append(out, edit.insert), true
		}
	}
	if !found {
		t.Fatalf("%s has no %q", edit.file, edit.marker)
	}
	src := strings.Join(out, "\n")
	if lang == "cpp" {
		src = "#include <thread>\n" + src
	}
	if err := os.WriteFile(f, []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	switch lang {
	case "cpp":
		err = scaffold.GenCpp(context.Background(), path)
	case "java":
		err = scaffold.GenJava(context.Background(), path)
	}
	if err != nil {
		t.Fatal(err)
	}
}

// TestMissingToolchainNamesThePackage: without a language's tools the
// scaffold says which Debian packages to install, and creates nothing.
func TestMissingToolchainNamesThePackage(t *testing.T) {
	t.Setenv("PATH", t.TempDir())
	for lang, want := range map[string]string{"cpp": "apt-get install protobuf-compiler", "java": "apt-get install protobuf-compiler"} {
		dir := t.TempDir()
		var err error
		if lang == "cpp" {
			_, err = scaffold.NewCpp(context.Background(), scaffold.Options{Name: "x", Dir: dir, Protos: shopProtos}, scaffold.CppRuntime())
		} else {
			_, err = scaffold.NewJava(context.Background(), scaffold.Options{Name: "x", Dir: dir, Protos: shopProtos}, scaffold.JavaRuntime())
		}
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s without tools: %v; want an error saying %q", lang, err, want)
		}
		if entries, _ := os.ReadDir(dir); len(entries) != 0 {
			t.Errorf("%s without tools left %d entries behind", lang, len(entries))
		}
	}
}
