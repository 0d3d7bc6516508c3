#!/usr/bin/env bash
# demo.sh runs the kuberpc demo: example servers started as replicas, load
# driven through kuberpc's client, per-replica counts printed.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
go run ./examples/localdemo "$@"
