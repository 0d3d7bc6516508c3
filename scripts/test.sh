#!/usr/bin/env bash
# test.sh runs every kuberpc test on a fresh machine: it installs what they
# need (scripts/setup.sh), checks formatting, vet, tidy go.mod files and
# generated code, runs the unit and black-box tests of every module (-race
# on the runtime packages), publishes the modules to a file-system proxy
# and installs and uses them from outside the checkout, runs every
# benchmark once at a tiny scale (so they cannot rot; nothing is asserted
# on time), and runs the end-to-end tests against the local cluster, which
# each test package starts and stops. Needs root.
#
# Modules (go.work ties them together in the checkout): the library (.),
# localcluster, cmd/kuberpc (the CLI), bench and e2e.
set -euo pipefail
cd "$(dirname "$0")/.."
# Build and test with the toolchain go.work names (the standard library
# with every published advisory fixed), fetched from the module proxy when
# the installed Go is older, even where the environment says local.
export GOTOOLCHAIN=auto
./scripts/setup.sh
start=$(date +%s)
step() { echo; echo "== $* ($(( $(date +%s) - start ))s)"; }

step "gofmt"
unformatted=$(gofmt -l $(git ls-files '*.go' | grep -v '\.pb\.go$'))
if [[ -n "$unformatted" ]]; then
  echo "gofmt needed on:"; echo "$unformatted"; exit 1
fi

modules=(. metricsadapter localcluster cmd/kuberpc bench e2e)

step "go vet (every module)"
for m in "${modules[@]}"; do (cd "$m" && go vet ./...); done

step "go.mod and go.sum tidy (every module)"
./scripts/tidy.sh --check

step "generated code is up to date"
go generate ./examples/example
git diff --exit-code -- examples/example || { echo "generated code differs from the committed code; commit go generate's output"; exit 1; }

step "control-plane binaries (built once, then cached)"
go run ./cmd/kuberpc cluster build

step "go test -race (runtime packages)"
go test -race -count=1 ./server/... ./client/... ./internal/... ./resolver/... ./balancer/...

step "go test: the library module, the CLI module, the metrics adapter"
go test -count=1 ./...
(cd cmd/kuberpc && go test -count=1 ./...)
(cd metricsadapter && go test -race -count=1 ./...)

step "govulncheck: the library and the CLI (offline database from golang.org/x/vulndb; scripts/vulncheck.sh all for every module)"
./scripts/vulncheck.sh

step "fuzz targets, 1 s each (scripts/fuzz.sh 5m for a long run)"
./scripts/fuzz.sh 1s

step "install from a published release, outside the checkout"
(cd e2e && go test -count=1 -v -timeout 20m ./install/... | grep -v "^=== ")

step "e2e: kuberpc's client, CLI and manifests against the local cluster"
(cd e2e && go test -count=1 -timeout 30m .)

step "benchmarks, once each at the tiny scale"
(cd bench && go test -count=1 -run '^$' -bench . -benchtime 1x ./...)

step "localcluster module (includes its e2e)"
(cd localcluster && go test -count=1 -timeout 30m ./...)

step "all tests passed"
