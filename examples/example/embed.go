package example

import _ "embed"

// Proto is the source of example.proto, the reference service that
// `kuberpc new` scaffolds when given no proto of its own.
//
//go:embed example.proto
var Proto []byte

// HealthProto is grpc.health.v1's health.proto, which Python services
// generate their health stubs from (Debian ships no grpcio-health-checking).
//
//go:embed python/proto/health.proto
var HealthProto []byte

// ReflectionProto is grpc.reflection.v1's reflection.proto, which the
// Python and Java runtimes serve reflection with (Debian ships neither
// grpcio-reflection nor grpc-java's grpc-services).
//
//go:embed python/proto/reflection.proto
var ReflectionProto []byte

// PythonRuntime is kuberpc_runtime.py: grpc.health.v1, /healthz and
// /readyz, settings and the drain for Python grpcio servers. The reference
// Python server uses it, and `kuberpc new --lang python` copies it into
// every service, so the two cannot drift.
//
//go:embed python/kuberpc_runtime.py
var PythonRuntime []byte

// The C++ runtime (kuberpc_runtime.h and .cc: grpc.health.v1, reflection,
// /healthz, /readyz, /metrics, ORCA, settings and the drain) and the
// Makefile that builds a server on it against Debian's gRPC. The
// reference C++ server uses them, and `kuberpc new --lang cpp` copies them
// into every service.
var (
	//go:embed cpp/kuberpc_runtime.h
	CppRuntimeHeader []byte
	//go:embed cpp/kuberpc_runtime.cc
	CppRuntimeSource []byte
	//go:embed cpp/Makefile
	CppMakefile []byte
)

// The Java runtime (KuberpcRuntime.java, package kuberpc) and build.sh,
// which compiles a server on it against Debian's jars. The reference Java
// server uses them, and `kuberpc new --lang java` copies them into every
// service.
var (
	//go:embed java/kuberpc/KuberpcRuntime.java
	JavaRuntime []byte
	//go:embed java/build.sh
	JavaBuild []byte
)
