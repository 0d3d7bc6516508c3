// Command kuberpc takes a gRPC service from a .proto to a running, scaled
// service on Kubernetes: cluster (the local cluster), image, manifests,
// deploy, status, rollback and demo. It follows kubectl's habits:
// -n/--namespace, --kubeconfig, --context, -o yaml|json, --dry-run.
package main

import (
	"os"

	"github.com/kuberpc/kuberpc/cmd/kuberpc/internal/cli"
)

func main() { os.Exit(cli.Main(os.Args[1:], os.Stdout, os.Stderr)) }
