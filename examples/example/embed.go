package example

import _ "embed"

// Proto is the source of example.proto, the reference service that
// `kuberpc new` scaffolds when given no proto of its own.
//
//go:embed example.proto
var Proto []byte
