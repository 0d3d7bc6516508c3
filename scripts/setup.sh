#!/usr/bin/env bash
# setup.sh installs what kuberpc's demo and tests need on a fresh Debian
# machine: protoc, Debian's Python gRPC (python3-grpcio, grpc-tools), C++
# gRPC (libgrpc++-dev, protobuf-compiler-grpc, g++, make, pkg-config), Java
# gRPC (libgrpc-java and the jars it runs with, the protoc plugin, a JDK),
# iproute2 and nftables for the local cluster's pod networks. Go tools are
# pinned in go.mod (tool directives) and need no install. Idempotent.
set -euo pipefail
pkgs=(protobuf-compiler python3-grpcio python3-grpc-tools python3-protobuf iproute2 nftables
  g++ make pkg-config libgrpc++-dev protobuf-compiler-grpc
  default-jdk-headless libgrpc-java libprotobuf-java libnetty-java libperfmark-java libgeronimo-annotation-1.3-spec-java
  protobuf-compiler-grpc-java-plugin)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "setup: installing ${missing[*]}"
  SUDO=""
  [[ $(id -u) -eq 0 ]] || SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi
/usr/bin/python3 -c 'import grpc, grpc_tools' || { echo "setup: Debian's python3 lacks grpc" >&2; exit 1; }
go version >/dev/null
