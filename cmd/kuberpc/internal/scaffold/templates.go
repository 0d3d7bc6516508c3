package scaffold

const serverTmpl = `// Command server serves {{range $i, $s := .Services}}{{if $i}}, {{end}}{{$s.Full}}{{end}} on the kuberpc runtime.
// Configuration comes from flags and the environment (PORT, POD_NAME, DRAIN_TIMEOUT, ...).
// Each method answers UNIMPLEMENTED until you write it.
package main

import (
	"context"
	"fmt"
	"os"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/kuberpc/kuberpc/server"
{{range .Imports}}
	"{{.}}"
{{- end}}

	"{{.Module}}/pb"
)

var _ = context.Background

{{range .Services}}
// {{.GoName | printf "%sServer"}} implements {{.Full}}.
type {{.GoName}}Server struct {
	pb.Unimplemented{{.GoName}}Server
}
{{$svc := .}}
{{range .Methods}}
{{if and (not .ClientStream) (not .ServerStream)}}
// {{.Name}} implements {{$svc.Full}}.{{.Name}}.
func (s *{{$svc.GoName}}Server) {{.Name}}(ctx context.Context, req *{{.In}}) (*{{.Out}}, error) {
	return nil, status.Error(codes.Unimplemented, "{{$svc.Full}}.{{.Name}} is not implemented yet")
}
{{else if and (not .ClientStream) .ServerStream}}
// {{.Name}} implements {{$svc.Full}}.{{.Name}} (server streaming).
func (s *{{$svc.GoName}}Server) {{.Name}}(req *{{.In}}, stream pb.{{.ServerType}}) error {
	return status.Error(codes.Unimplemented, "{{$svc.Full}}.{{.Name}} is not implemented yet")
}
{{else}}
// {{.Name}} implements {{$svc.Full}}.{{.Name}} ({{if .ServerStream}}bidirectional{{else}}client{{end}} streaming).
func (s *{{$svc.GoName}}Server) {{.Name}}(stream pb.{{.ServerType}}) error {
	return status.Error(codes.Unimplemented, "{{$svc.Full}}.{{.Name}} is not implemented yet")
}
{{end}}
{{end}}
{{end}}

func main() {
	cfg, err := server.LoadConfig(os.Args[1:], os.LookupEnv)
	if err != nil {
		fmt.Fprintln(os.Stderr, "server:", err)
		os.Exit(2)
	}
	s, err := server.New(server.WithConfig(cfg))
	if err != nil {
		fmt.Fprintln(os.Stderr, "server:", err)
		os.Exit(1)
	}
{{- range .Services}}
	pb.Register{{.GoName}}Server(s, &{{.GoName}}Server{})
{{- end}}
	if err := s.Run(context.Background()); err != nil {
		fmt.Fprintln(os.Stderr, "server:", err)
		os.Exit(1)
	}
}
`

const clientTmpl = `// Command client calls the service through kuberpc's client: with the
// kubernetes resolver imported, the default target balances over the
// Service's pods by watching its EndpointSlices.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"

	"github.com/kuberpc/kuberpc/client"
	_ "github.com/kuberpc/kuberpc/resolver/kubernetes"
{{- with .First}}{{with .InImport}}
	"{{.}}"{{end}}{{end}}

	"{{.Module}}/pb"
)

func main() {
	target := flag.String("target", "kubernetes:///{{.Name}}.default:grpc", "gRPC target")
	flag.Parse()
	cc, err := client.Dial(*target)
	if err != nil {
		fmt.Fprintln(os.Stderr, "client:", err)
		os.Exit(1)
	}
	defer cc.Close()
{{- with .First}}
	resp, err := pb.New{{.GoService}}Client(cc).{{.Name}}(context.Background(), &{{.In}}{})
	if err != nil {
		fmt.Fprintln(os.Stderr, "client:", err)
		os.Exit(1)
	}
	fmt.Println(resp)
{{- else}}
	_ = context.Background
	_ = pb.New{{(index .Services 0).GoName}}Client(cc)
	fmt.Println("the service has no unary method to call")
{{- end}}
}
`

const dockerfileTmpl = `# For real clusters: a static binary on a distroless base.
# (The kuberpc local cluster runs images registered with ` + "`kuberpc image build`" + ` instead.)
FROM golang:1.26 AS build
WORKDIR /src
COPY . .
RUN CGO_ENABLED=0 go build -trimpath -o /server ./cmd/server

FROM gcr.io/distroless/static:nonroot
COPY --from=build /server /server
USER 65532:65532
ENTRYPOINT ["/server"]
`

const appTmpl = `# kuberpc.yaml: how {{.Name}} runs. ` + "`kuberpc manifests`" + ` shows the objects; ` + "`kuberpc deploy`" + ` applies them.
name: {{.Name}}
image: kuberpc.local/{{.Name}}:v1
replicas: 3
ports:
  grpc: 50051
  metrics: 9090
resources:
  cpuRequest: 100m
  memoryRequest: 64Mi
  memoryLimit: 256Mi # the server sets GOMEMLIMIT to 90 % of it
drain:
  propagationDelay: 2s
  timeout: 10s
`
