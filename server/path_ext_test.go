package server_test

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/binary"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
	"google.golang.org/protobuf/proto"

	"github.com/kuberpc/kuberpc/examples/example"
	"github.com/kuberpc/kuberpc/security"
	"github.com/kuberpc/kuberpc/server"
)

// rawCall sends one gRPC request for path over a new mTLS connection
// with x/net's Framer, as a hostile client can (no client library
// normalises the path), and returns the grpc-status the server answered
// ("" when the stream was reset or the connection refused it) and its
// message.
func rawCall(t *testing.T, addr string, cert tls.Certificate, roots *x509.CertPool, path string) (code, msg string) {
	t.Helper()
	c, err := tls.Dial("tcp", addr, &tls.Config{
		Certificates: []tls.Certificate{cert}, RootCAs: roots, NextProtos: []string{"h2"},
		InsecureSkipVerify: true, // the server's workload certificate names no host; the test checks nothing of it
	})
	if err != nil {
		t.Fatalf("%q: dial: %v", path, err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	w := bufio.NewWriter(c)
	fr := http2.NewFramer(w, bufio.NewReader(c))
	fr.ReadMetaHeaders = hpack.NewDecoder(1<<20, nil)
	io.WriteString(w, http2.ClientPreface)
	fr.WriteSettings()
	var hb bytes.Buffer
	enc := hpack.NewEncoder(&hb)
	for _, f := range []hpack.HeaderField{
		{Name: ":method", Value: "POST"}, {Name: ":scheme", Value: "https"}, {Name: ":path", Value: path},
		{Name: ":authority", Value: "example"}, {Name: "content-type", Value: "application/grpc"}, {Name: "te", Value: "trailers"},
	} {
		enc.WriteField(f)
	}
	fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: hb.Bytes(), EndHeaders: true})
	b, _ := proto.Marshal(&example.Request{Name: "x"})
	frame := make([]byte, 5+len(b))
	binary.BigEndian.PutUint32(frame[1:], uint32(len(b)))
	copy(frame[5:], b)
	fr.WriteData(1, true, frame)
	w.Flush()
	for {
		f, err := fr.ReadFrame()
		if err != nil {
			return "", "connection ended: " + err.Error()
		}
		switch f := f.(type) {
		case *http2.SettingsFrame:
			if !f.IsAck() {
				fr.WriteSettingsAck()
				w.Flush()
			}
		case *http2.MetaHeadersFrame:
			if f.StreamID != 1 {
				continue
			}
			if s := f.PseudoValue("status"); s != "" && s != "200" {
				return "", "HTTP " + s
			}
			for _, h := range f.Fields {
				switch h.Name {
				case "grpc-status":
					code = h.Value
				case "grpc-message":
					msg = h.Value
				}
			}
			if f.StreamEnded() {
				return code, msg
			}
		case *http2.RSTStreamFrame:
			return "", "reset: " + f.ErrCode.String()
		case *http2.GoAwayFrame:
			return "", "GOAWAY: " + f.ErrCode.String()
		}
	}
}

// TestMalformedPathsWithAuthorization: with mTLS and a policy allowing
// the caller only StreamService/Greetings, no variation of a method's
// path reaches SayHello's handler or is allowed by Greetings' rule.
func TestMalformedPathsWithAuthorization(t *testing.T) {
	t.Parallel()
	p := newPKI(t)
	srvDir, cliDir := p.issue(t, "default", "example"), p.issue(t, "default", "frontend")
	policy, err := security.ParsePolicy([]byte(`
rules:
- methods: ["/example.StreamService/Greetings"]
  callers: ["default/frontend"]
`))
	if err != nil {
		t.Fatal(err)
	}
	cfg := secureConfig(srvDir)
	cfg.Security.MutualTLS = true
	svc, addr, _ := startSecure(t, cfg, server.WithAuthorizer(policy))
	cert, err := tls.LoadX509KeyPair(filepath.Join(cliDir, security.CertFile), filepath.Join(cliDir, security.KeyFile))
	if err != nil {
		t.Fatal(err)
	}
	caPEM, _ := os.ReadFile(filepath.Join(cliDir, security.CAFile))
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(caPEM)

	// The controls: the exact path of the denied method is denied, and
	// the allowed one is allowed, so the policy is in force.
	if code, msg := rawCall(t, addr, cert, roots, "/example.ExampleService/SayHello"); code != "7" {
		t.Fatalf("SayHello = %s %q, want PERMISSION_DENIED (7)", code, msg)
	}
	if code, msg := rawCall(t, addr, cert, roots, "/example.StreamService/Greetings"); code != "0" && code != "3" {
		t.Fatalf("Greetings = %s %q, want it allowed (OK, or INVALID_ARGUMENT from the handler)", code, msg)
	}
	paths := []string{
		"example.ExampleService/SayHello",
		"//example.ExampleService/SayHello",
		"/example.ExampleService//SayHello",
		"/example.ExampleService/SayHello/",
		"/example.ExampleService/SayHello?x=1",
		"/example.ExampleService/SayHello#x",
		"/example.ExampleService/./SayHello",
		"/./example.ExampleService/SayHello",
		"/example.ExampleService/../example.ExampleService/SayHello",
		"/example.ExampleService/%53ayHello",
		"/example.ExampleService%2FSayHello",
		"/example.exampleservice/sayhello",
		"/EXAMPLE.EXAMPLESERVICE/SAYHELLO",
		"/example.ExampleService/SayHello%00",
		"/example.ExampleService/SayHello ",
		" /example.ExampleService/SayHello",
		"/example.ExampleService/SayHello\t",
		"/example.StreamService/Greetings/../../example.ExampleService/SayHello",
		"/example.StreamService/Greetings/example.ExampleService/SayHello",
		"/example.StreamService/Greetings//example.ExampleService/SayHello",
		"/example.ExampleService/SayHello/example.StreamService/Greetings",
		"/example.StreamService/Greetings%2F..%2F..%2Fexample.ExampleService%2FSayHello",
		"/example.StreamService/*",
		"/*",
		"*",
		"/",
		"",
		"/grpc.health.v1.Health/Check/../../example.ExampleService/SayHello",
		"/example.ExampleService/SayHello" + strings.Repeat("/", 100),
		"/" + strings.Repeat("a", 8<<10) + "/SayHello",
	}
	for _, path := range paths {
		code, msg := rawCall(t, addr, cert, roots, path)
		if code == "0" {
			t.Errorf("%q answered OK (%q)", path, msg)
		}
		t.Logf("%-70.70q → grpc-status %q %.80s", path, code, msg)
	}
	if n := svc.calls.Load(); n != 0 {
		t.Errorf("SayHello's handler ran %d times for malformed paths", n)
	}
	if len(paths) < 20 {
		t.Errorf("only %d paths", len(paths))
	}
}
