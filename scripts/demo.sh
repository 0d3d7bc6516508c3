#!/usr/bin/env bash
# demo.sh runs the kuberpc demo on the local cluster: it starts a real
# Kubernetes control plane and node agent (building them on first use),
# builds the example server as an image, deploys 3 replicas with kuberpc's
# manifests, drives SayHello load through the kubernetes:/// resolver,
# prints per-pod counts, then scales to 4 and shows the new pod taking its
# share. The cluster keeps running; `bin/kuberpc cluster down` stops it.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
t0=$(date +%s)
echo "==> downloading Go modules (once; quiet)"
# go list fetches exactly the modules the CLI's packages need; on failure
# run it again loudly so the error shows.
mods=$(go list -deps -f '{{with .Module}}{{.Path}}{{end}}' ./cmd/kuberpc 2>/dev/null | sort -u | wc -l) ||
  go list -deps ./cmd/kuberpc >/dev/null
echo "    $mods modules ready ($(( $(date +%s) - t0 ))s)"
t1=$(date +%s)
echo "==> building bin/kuberpc"
mkdir -p bin
go build -o bin/kuberpc ./cmd/kuberpc
echo "    built ($(( $(date +%s) - t1 ))s)"
exec ./bin/kuberpc demo "$@"
