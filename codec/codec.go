// Package codec holds kuberpc's fast-path gRPC codec: protobuf on the
// wire, as grpc-go's own codec, so any gRPC peer understands it, but
// marshalled by the code vtprotobuf generates beside a message (SizeVT,
// MarshalToSizedBufferVT) rather than by protobuf-go's reflection, into
// buffers from grpc-go's pool.
//
// It marshals from Threshold up; below it the encoded size is checked
// and the message handed to grpc-go's own codec (bench/results.md
// measures both). Messages without vtprotobuf's methods always go to
// grpc-go's codec. Incoming messages are always read by protobuf-go:
// vtprotobuf's UnmarshalVT accepts invalid UTF-8 in proto3 strings,
// which protobuf-go refuses, and what a peer sends must be checked the
// same way whichever codec a server runs. The fast path
// (server.WithFastPath, client.WithFastPath) uses it for the
// connections it configures only; nothing is registered globally.
package codec

import (
	"fmt"

	"google.golang.org/grpc/encoding"
	_ "google.golang.org/grpc/encoding/proto" // registers the fallback
	"google.golang.org/grpc/mem"
)

// Name is the codec's content subtype: "proto", the standard one.
const Name = "proto"

// Threshold is the encoded size from which vtprotobuf's marshalling is
// used; smaller messages go through grpc-go's codec.
const Threshold = 1 << 10

// VTMessage is what vtprotobuf generates for a message with its marshal
// and size features.
type VTMessage interface {
	SizeVT() int
	MarshalToSizedBufferVT(dAtA []byte) (int, error)
}

// New returns the codec.
func New() encoding.CodecV2 {
	return &vtCodec{fallback: encoding.GetCodecV2(Name)}
}

type vtCodec struct {
	fallback encoding.CodecV2
}

func (c *vtCodec) Name() string { return Name }

func (c *vtCodec) Marshal(v any) (mem.BufferSlice, error) {
	m, ok := v.(VTMessage)
	if !ok {
		return c.fallback.Marshal(v)
	}
	size := m.SizeVT()
	if size < Threshold {
		return c.fallback.Marshal(v)
	}
	pool := mem.DefaultBufferPool()
	buf := pool.Get(size)
	n, err := m.MarshalToSizedBufferVT((*buf)[:size])
	if err != nil {
		pool.Put(buf)
		return nil, fmt.Errorf("codec: marshal %T: %w", v, err)
	}
	if n != size {
		pool.Put(buf)
		return nil, fmt.Errorf("codec: marshal %T: wrote %d bytes of %d (was it changed while being sent?)", v, n, size)
	}
	return mem.BufferSlice{mem.NewBuffer(buf, pool)}, nil
}

// Unmarshal is grpc-go's: see the package documentation.
func (c *vtCodec) Unmarshal(data mem.BufferSlice, v any) error {
	return c.fallback.Unmarshal(data, v)
}
