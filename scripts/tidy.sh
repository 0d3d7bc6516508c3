#!/usr/bin/env bash
# tidy.sh runs go mod tidy in every module of the repository. The nested
# modules require the library (and each other) at the version being
# released, which go.work resolves to this checkout; go mod tidy ignores
# go.work, so each module is tidied with temporary replace directives that
# are dropped again afterwards: no go.mod in the repository keeps one.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
declare -A dirs=(
  [github.com/kuberpc/kuberpc]=.
  [github.com/kuberpc/kuberpc/localcluster]=localcluster
  [github.com/kuberpc/kuberpc/cmd/kuberpc]=cmd/kuberpc
  [github.com/kuberpc/kuberpc/bench]=bench
  [github.com/kuberpc/kuberpc/e2e]=e2e
  [github.com/kuberpc/kuberpc/metricsadapter]=metricsadapter
)
for mod in . metricsadapter localcluster cmd/kuberpc bench e2e; do
  reps=()
  for path in "${!dirs[@]}"; do
    [[ ${dirs[$path]} == "$mod" ]] && continue
    if grep -q "^\s*$path " "$mod/go.mod" || grep -q "^require $path " "$mod/go.mod"; then
      reps+=("$path")
    fi
  done
  for path in "${reps[@]}"; do (cd "$mod" && go mod edit -replace "$path=$root/${dirs[$path]}"); done
  (cd "$mod" && GOWORK=off GOFLAGS=-mod=mod go mod tidy) || status=$?
  for path in "${reps[@]}"; do (cd "$mod" && go mod edit -dropreplace "$path"); done
  [[ -z ${status:-} ]] || exit "$status"
  echo "tidied $mod"
done
