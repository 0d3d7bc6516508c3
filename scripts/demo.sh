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
mkdir -p bin
go build -o bin/kuberpc ./cmd/kuberpc
exec ./bin/kuberpc demo "$@"
