#!/usr/bin/env bash
# protogen.sh regenerates the reference service's Go and Python code from
# examples/example/*.proto with protoc, the Go plugins (protobuf-go, grpc-go,
# vtprotobuf's marshalling for the fast path) pinned as tool
# dependencies in go.mod, and Debian's python3-grpc-tools.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
bin="$(mktemp -d)"
trap 'rm -rf "$bin"' EXIT
go build -o "$bin/protoc-gen-go" google.golang.org/protobuf/cmd/protoc-gen-go
go build -o "$bin/protoc-gen-go-grpc" google.golang.org/grpc/cmd/protoc-gen-go-grpc
go build -o "$bin/protoc-gen-go-vtproto" github.com/planetscale/vtprotobuf/cmd/protoc-gen-go-vtproto
pkg=github.com/kuberpc/kuberpc/examples/example
src=examples/example
m="Mexample.proto=$pkg,Mstream.proto=$pkg"
protoc -I "$src" \
  --plugin=protoc-gen-go="$bin/protoc-gen-go" --plugin=protoc-gen-go-grpc="$bin/protoc-gen-go-grpc" \
  --go_out="$src" --go_opt=paths=source_relative,"$m" \
  --go-grpc_out="$src" --go-grpc_opt=paths=source_relative,"$m" \
  --plugin=protoc-gen-go-vtproto="$bin/protoc-gen-go-vtproto" \
  --go-vtproto_out="$src" --go-vtproto_opt=paths=source_relative,features=marshal+unmarshal+size,"$m" \
  "$src/example.proto" "$src/stream.proto"
# Debian's python3 owns python3-grpc-tools; a python3 earlier on PATH may not.
/usr/bin/python3 -m grpc_tools.protoc -I "$src" \
  --python_out="$src/python" --grpc_python_out="$src/python" \
  "$src/example.proto" "$src/stream.proto"
/usr/bin/python3 -m grpc_tools.protoc -I "$src/python/proto" \
  --python_out="$src/python" --grpc_python_out="$src/python" \
  "$src/python/proto/health.proto" "$src/python/proto/reflection.proto"
