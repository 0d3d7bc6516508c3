package codec_test

import (
	"strings"
	"testing"

	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/proto"

	"github.com/kuberpc/kuberpc/codec"
	"github.com/kuberpc/kuberpc/examples/example"
)

// TestRoundTripAndWireCompatibility: below and above the threshold, what
// the codec writes is what protobuf-go writes, and each reads the other's.
func TestRoundTripAndWireCompatibility(t *testing.T) {
	c := codec.New()
	for _, n := range []int{0, 1, codec.Threshold - 10, codec.Threshold, 64 << 10, 1 << 20} {
		in := &example.Request{Id: int32(n), Name: strings.Repeat("é", n/2)}
		data, err := c.Marshal(in)
		if err != nil {
			t.Fatalf("%d: %v", n, err)
		}
		want, _ := proto.MarshalOptions{Deterministic: true}.Marshal(in)
		got := data.Materialize()
		if string(got) != string(want) {
			t.Errorf("%d bytes: the codec's encoding differs from protobuf-go's", n)
		}
		out := &example.Request{Name: "left over from a reused message"}
		if err := c.Unmarshal(data, out); err != nil {
			t.Fatalf("%d: unmarshal: %v", n, err)
		}
		if !proto.Equal(in, out) {
			t.Errorf("%d bytes: round trip gave another message (Id %d, %d bytes of name)", n, out.GetId(), len(out.GetName()))
		}
		data.Free()
	}
}

// TestBadInput: bytes that are not a message of the type are an error,
// never a panic, at every size, invalid UTF-8 in a string included
// (vtprotobuf's UnmarshalVT would accept it; protobuf-go does not).
func TestBadInput(t *testing.T) {
	c := codec.New()
	for _, bad := range [][]byte{
		{0xff}, // truncated varint key
		append([]byte{0x12, 0xff, 0xff, 0xff, 0x7f}, make([]byte, 2000)...),                    // length past the end
		append([]byte{0x12, 0x90, 0x10}, append([]byte{0xff, 0xfe}, make([]byte, 2062)...)...), // invalid UTF-8 in a string
	} {
		err := c.Unmarshal(mem.BufferSlice{mem.SliceBuffer(bad)}, &example.Request{})
		if err == nil {
			t.Errorf("%d bad bytes unmarshalled without an error", len(bad))
		}
	}
}

// FuzzUnmarshal: the codec accepts exactly what protobuf-go accepts, and
// reads it to the same message; and what it reads, it writes back as
// protobuf-go does.
func FuzzUnmarshal(f *testing.F) {
	big, _ := proto.Marshal(&example.Request{Id: 7, Name: strings.Repeat("x", 2000)})
	f.Add(big)
	f.Add([]byte{0x08, 0x01})
	f.Fuzz(func(t *testing.T, b []byte) {
		var want, got example.Request
		werr := proto.Unmarshal(b, &want)
		gerr := codec.New().Unmarshal(mem.BufferSlice{mem.SliceBuffer(b)}, &got)
		if (werr == nil) != (gerr == nil) {
			t.Fatalf("protobuf-go: %v; codec: %v", werr, gerr)
		}
		if werr != nil {
			return
		}
		if !proto.Equal(&want, &got) {
			t.Fatal("the codec read another message than protobuf-go")
		}
		data, err := codec.New().Marshal(&got)
		if err != nil {
			t.Fatal(err)
		}
		var again example.Request
		if err := proto.Unmarshal(data.Materialize(), &again); err != nil || !proto.Equal(&again, &got) {
			t.Fatalf("protobuf-go cannot read back what the codec wrote: %v", err)
		}
	})
}
