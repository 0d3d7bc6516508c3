#!/usr/bin/env bash
# fuzz.sh runs every native Go fuzz target of the library for a while
# each (default 2s, as CI does; `scripts/fuzz.sh 5m` for a long run) and
# prints a table of executions and corpus size per target. With -o FILE it
# also writes the table there (bench/fuzz.md is a committed run). A
# crash fails the script and leaves its input in the package's
# testdata/fuzz directory, which reproduces it as a plain test.
set -euo pipefail
cd "$(dirname "$0")/.."
time=2s out=""
while (($#)); do
  case "$1" in
    -o) out=$2; shift 2 ;;
    *) time=$1; shift ;;
  esac
done
targets=(
  ./resolver/kubernetes:FuzzParseTarget
  ./resolver/kubernetes:FuzzMerge
  ./manifests:FuzzParseAndRender
  ./server:FuzzLoadConfig
  ./internal/tracecontext:FuzzExtract
  ./balancer/outlierdetection:FuzzParseConfig
  ./balancer/p2cewma:FuzzParseConfig
  ./client:FuzzServiceConfig
  ./security:FuzzPolicy
  ./security:FuzzParseSPIFFEID
  ./security:FuzzBearerToken
  ./codec:FuzzUnmarshal
)
table="| target | time | execs | corpus (new interesting / total) |
|---|---|---|---|"
# crashers counts the inputs saved for target $name of package $pkg.
crashers() { { find "$pkg/testdata/fuzz/$name" -type f 2>/dev/null || true; } | wc -l; }
for t in "${targets[@]}"; do
  pkg=${t%%:*} name=${t##*:}
  before=$(crashers)
  for attempt in 1 2; do
    if log=$(go test -run '^$' -fuzz "^${name}\$" -fuzztime "$time" "$pkg" 2>&1); then
      break
    fi
    # Go 1.26's fuzz coordinator can report its own -fuzztime deadline as
    # a failure ("context deadline exceeded", no input written:
    # go.dev/issue/75804, fixed in Go 1.27). That, once, is run again; a
    # failure that wrote an input, or a second one, fails the script.
    if [[ $attempt == 1 && $(crashers) == "$before" ]] && grep -q '^    context deadline exceeded$' <<<"$log"; then
      echo "fuzz: $pkg $name: the coordinator's deadline race (go.dev/issue/75804), no input written; running it again"
      continue
    fi
    echo "$log"; echo "fuzz: $pkg $name failed"; exit 1
  done
  last=$(grep -E '^fuzz: elapsed' <<<"$log" | tail -1)
  execs=$(sed -E 's/.*execs: ([0-9]+).*/\1/' <<<"$last")
  corpus=$(sed -E 's/.*new interesting: ([0-9]+) \(total: ([0-9]+)\).*/\1 \/ \2/' <<<"$last")
  row="| \`$pkg\` $name | $time | ${execs:-?} | ${corpus:-?} |"
  echo "$row"
  table+=$'\n'"$row"
done
if [[ -n $out ]]; then
  mkdir -p "$(dirname "$out")"
  { echo "# Fuzz run: $(date -u +%Y-%m-%d), $(go version | cut -d' ' -f3), $(nproc) cores, $time per target"; echo; echo "$table"; } >"$out"
fi
