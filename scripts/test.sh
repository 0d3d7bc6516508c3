#!/usr/bin/env bash
# test.sh runs every kuberpc test on a fresh machine: it installs what they
# need (scripts/setup.sh), checks formatting and vet, runs the unit and
# black-box tests with the race detector on the runtime packages, runs
# every benchmark once (so they cannot rot; nothing is asserted on time),
# and runs the local-cluster end-to-end tests. CI=true shortens long suites.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh

echo "== gofmt"
unformatted=$(gofmt -l $(git ls-files '*.go' | grep -v '\.pb\.go$'))
if [[ -n "$unformatted" ]]; then
  echo "gofmt needed on:"; echo "$unformatted"; exit 1
fi

echo "== go vet"
go vet ./...

echo "== generated code is up to date"
go generate ./examples/example
git diff --exit-code -- examples/example || { echo "generated code differs from the committed code; commit go generate's output"; exit 1; }

echo "== go test -race (runtime packages)"
go test -race -count=1 ./server/... ./client/... ./internal/...

echo "== go test ./..."
go test -count=1 ./...

echo "== benchmarks, once each"
go test -run '^$' -bench . -benchtime 1x ./...

for mod in localcluster; do
  if [[ -f "$mod/go.mod" && -d "$mod/e2e" ]]; then
    echo "== $mod"
    (cd "$mod" && go vet ./... && go test -count=1 -timeout 25m ./...)
  fi
done
echo "== all tests passed"
