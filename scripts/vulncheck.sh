#!/usr/bin/env bash
# vulncheck.sh runs govulncheck on every module of the repository against
# the Go vulnerability database, built offline: the database's source
# (golang.org/x/vulndb, its OSV reports) comes from the Go module proxy,
# and its own indexdb command writes the database govulncheck reads
# (vuln.go.dev itself is not reachable from the development machines).
# Pin VULNDB to a newer pseudo-version to see newer advisories. It fails
# when a vulnerability is reachable from kuberpc's code.
#
# By default it scans what kuberpc ships: the library module and the CLI
# (which links the local cluster and the metrics adapter); `vulncheck.sh
# all` scans every module, the test harnesses too. The standard library
# is the one go.work names (toolchain), fetched from the module proxy
# when the installed Go is older.
set -euo pipefail
cd "$(dirname "$0")/.."
export GOTOOLCHAIN=auto
modules=(. cmd/kuberpc)
if [[ ${1:-} == all ]]; then
  modules=(. metricsadapter localcluster cmd/kuberpc bench e2e)
fi
VULN=${VULN:-v1.9.0}
VULNDB=${VULNDB:-v0.0.0-20261105234957-e22db6528018}
cache=${XDG_CACHE_HOME:-$HOME/.cache}/kuberpc/vulndb-$VULNDB
if [[ ! -f $cache/index/db.json ]]; then
  src=$(go mod download -json "golang.org/x/vulndb@$VULNDB" | sed -n 's/.*"Dir": "\(.*\)",/\1/p')
  rm -rf "$cache.tmp"
  (cd "$src" && GOFLAGS=-mod=mod GOWORK=off go run ./cmd/indexdb -vulns data/osv -out "$cache.tmp")
  mv "$cache.tmp" "$cache"
fi
status=0
for m in "${modules[@]}"; do
  echo "== $m"
  (cd "$m" && go run "golang.org/x/vuln/cmd/govulncheck@$VULN" -db "file://$cache" ./...) || status=1
done
exit $status
