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

// PythonRuntime is kuberpc_runtime.py: grpc.health.v1, /healthz and
// /readyz, settings and the drain for Python grpcio servers. The reference
// Python server uses it, and `kuberpc new --lang python` copies it into
// every service, so the two cannot drift.
//
//go:embed python/kuberpc_runtime.py
var PythonRuntime []byte
