#!/usr/bin/env bash
# build.sh compiles the Java example server and client against Debian's
# gRPC jars (libgrpc-java, libprotobuf-java, libnetty-java,
# libperfmark-java, protobuf-compiler-grpc-java-plugin):
#   ./build.sh OUT [PROTO_DIR [RUNTIME_PROTO_DIR]]
# (RUNTIME_PROTO_DIR holds health.proto and reflection.proto.)
# It writes OUT/classes and the launchers OUT/server and OUT/client.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
out=$(mkdir -p "${1:?usage: build.sh OUT [PROTO_DIR [HEALTH_PROTO_DIR]]}" && cd "$1" && pwd)
proto=$(cd "${2:-$here/..}" && pwd)
health=$(cd "${3:-$here/../python/proto}" && pwd)
jars=(grpc-api grpc-core grpc-context grpc-netty grpc-protobuf grpc-protobuf-lite grpc-stub protobuf guava
  failureaccess perfmark-api geronimo-annotation-1.3-spec netty-buffer netty-codec netty-codec-http
  netty-codec-http2 netty-common netty-handler netty-resolver netty-transport netty-transport-native-unix-common)
cp=""
for j in "${jars[@]}"; do
  f=/usr/share/java/$j.jar
  if [[ ! -f $f ]]; then
    [[ $j == failureaccess ]] && continue
    echo "build.sh: $f is missing: apt-get install libgrpc-java libprotobuf-java libnetty-java libperfmark-java libgeronimo-annotation-1.3-spec-java" >&2
    exit 1
  fi
  cp+="$f:"
done
command -v grpc_java_plugin >/dev/null || { echo "build.sh: grpc_java_plugin is missing: apt-get install protobuf-compiler-grpc-java-plugin" >&2; exit 1; }
rm -rf "$out/gen" "$out/classes"
mkdir -p "$out/gen" "$out/classes"
protos=()
for f in "$proto"/*.proto; do
  case $(basename "$f") in health.proto | reflection.proto) ;; *) protos+=("$f") ;; esac
done
protoc -I"$proto" --java_out="$out/gen" --plugin=protoc-gen-grpc-java="$(command -v grpc_java_plugin)" --grpc-java_out="$out/gen" "${protos[@]}"
protoc -I"$health" --java_out="$out/gen" --plugin=protoc-gen-grpc-java="$(command -v grpc_java_plugin)" --grpc-java_out="$out/gen" "$health/health.proto" "$health/reflection.proto"
javac -nowarn -encoding UTF-8 -d "$out/classes" -cp "$cp" $(find "$out/gen" -name "*.java") $(find "$here" -name "*.java" -not -path "$out/*")
for role in server client; do
  main=$(cd "$here" && grep -rl "public static void main" --include='*.java' . | grep -i "$role" | head -1 | sed 's#^\./##; s#\.java$##; s#/#.#g')
  # The launcher finds the classes beside it, so the build directory can move.
  printf '#!/bin/sh\nd=$(cd "$(dirname "$0")" && pwd)\nexec /usr/bin/java -XX:+UseSerialGC -Xss512k -cp "$d/classes:%s" %s "$@"\n' "$cp" "$main" > "$out/$role"
  chmod +x "$out/$role"
done
