#!/usr/bin/env bash
# tidy.sh runs go mod tidy in every module of the repository. The nested
# modules require the library (and each other) at the version being
# released, which go.work resolves to this checkout; go mod tidy ignores
# go.work, so each module is tidied with temporary replace directives that
# are dropped again afterwards: no go.mod in the repository keeps one.
#
# tidy.sh --check changes nothing: it fails, naming the modules and what
# tidy would change, when a go.mod or go.sum is not tidy (scripts/test.sh
# runs it).
set -euo pipefail
check=
if [[ ${1:-} == --check ]]; then
  check=1
elif [[ $# -gt 0 ]]; then
  echo "usage: $0 [--check]" >&2; exit 2
fi
untidy=()
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
# Each module is tidied in a copy of its go.mod and go.sum (go's -modfile),
# so the module's own files change only once tidy has succeeded, and an
# interrupted run leaves nothing behind in the repository.
tmp=$(mktemp -d)
child=
trap 'rm -rf "$tmp"' EXIT
trap '[[ -z $child ]] || { kill "$child" 2>/dev/null; wait "$child" 2>/dev/null; }; exit 130' INT TERM
for mod in . metricsadapter localcluster cmd/kuberpc bench e2e; do
  reps=()
  for path in "${!dirs[@]}"; do
    [[ ${dirs[$path]} == "$mod" ]] && continue
    if grep -q "^\s*$path " "$mod/go.mod" || grep -q "^require $path " "$mod/go.mod"; then
      reps+=("$path")
    fi
  done
  cp "$mod/go.mod" "$tmp/go.mod"
  if [[ -f $mod/go.sum ]]; then cp "$mod/go.sum" "$tmp/go.sum"; else : >"$tmp/go.sum"; fi
  for path in "${reps[@]}"; do go mod edit -replace "$path=$root/${dirs[$path]}" "$tmp/go.mod"; done
  GOWORK=off GOFLAGS=-mod=mod go -C "$mod" mod tidy -modfile="$tmp/go.mod" &
  child=$!
  wait "$child"
  child=
  for path in "${reps[@]}"; do go mod edit -dropreplace "$path" "$tmp/go.mod"; done
  for f in go.mod go.sum; do
    if [[ -n $check ]]; then
      committed="$mod/$f"
      [[ -f $committed ]] || committed=/dev/null
      if ! diff -u --label "$mod/$f (committed)" --label "$mod/$f (tidy)" "$committed" "$tmp/$f"; then
        untidy+=("$mod/$f")
      fi
    elif ! cmp -s "$mod/$f" "$tmp/$f"; then
      cp "$tmp/$f" "$mod/$f"
    fi
  done
  [[ -n $check ]] || echo "tidied $mod"
done
if [[ ${#untidy[@]} -gt 0 ]]; then
  echo "not tidy: ${untidy[*]}; run scripts/tidy.sh and commit the result" >&2
  exit 1
fi
