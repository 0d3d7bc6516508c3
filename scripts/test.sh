#!/usr/bin/env bash
# test.sh runs every kuberpc test on a fresh machine: it installs what they
# need (scripts/setup.sh), checks formatting, vet and generated code, runs
# the unit and black-box tests (-race on the runtime packages), runs every
# benchmark once at a tiny scale (so they cannot rot; nothing is asserted
# on time), and runs the end-to-end tests of both modules against the local
# cluster, which each test package starts and stops. Needs root.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
start=$(date +%s)
step() { echo; echo "== $* ($(( $(date +%s) - start ))s)"; }

step "gofmt"
unformatted=$(gofmt -l $(git ls-files '*.go' | grep -v '\.pb\.go$'))
if [[ -n "$unformatted" ]]; then
  echo "gofmt needed on:"; echo "$unformatted"; exit 1
fi

step "go vet"
go vet ./...
(cd localcluster && go vet ./...)

step "generated code is up to date"
go generate ./examples/example
git diff --exit-code -- examples/example || { echo "generated code differs from the committed code; commit go generate's output"; exit 1; }

step "control-plane binaries (built once, then cached)"
go run ./cmd/kuberpc cluster build

step "go test -race (runtime packages)"
go test -race -count=1 ./server/... ./client/... ./internal/... ./resolver/... ./balancer/...

step "go test ./... (includes e2e against the local cluster)"
go test -count=1 -timeout 30m ./...

step "benchmarks, once each at the tiny scale"
go test -count=1 -run '^$' -bench . -benchtime 1x ./bench/...

step "localcluster module (includes its e2e)"
(cd localcluster && go test -count=1 -timeout 30m ./...)

step "all tests passed"
