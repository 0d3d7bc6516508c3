package example

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// MaxGreetings bounds Request.id in StreamService.Greetings, so that one
// request cannot make the server stream without end.
const MaxGreetings = 10000

// MaxCollected bounds what CollectNames keeps of one stream: its names
// together, in bytes, so that a client cannot make the server hold
// unbounded memory by streaming names.
const MaxCollected = 64 << 10

// Greeter implements ExampleService and StreamService. It is stateless and
// safe for concurrent use.
type Greeter struct {
	UnimplementedExampleServiceServer
	UnimplementedStreamServiceServer
}

// Greeting is the message SayHello answers for name: "Hello, <name>!".
func Greeting(name string) string { return "Hello, " + name + "!" }

// SayHello answers "Hello, <name>!".
func (Greeter) SayHello(_ context.Context, req *Request) (*Response, error) {
	return &Response{Message: Greeting(req.GetName())}, nil
}

// Greetings streams req.id greetings, "Hello, <name>! (i/n)".
func (Greeter) Greetings(req *Request, stream StreamService_GreetingsServer) error {
	n := req.GetId()
	if n < 0 || n > MaxGreetings {
		return status.Errorf(codes.InvalidArgument, "id %d out of range: Greetings sends 0-%d greetings", n, MaxGreetings)
	}
	for i := int32(1); i <= n; i++ {
		msg := fmt.Sprintf("%s (%d/%d)", Greeting(req.GetName()), i, n)
		if err := stream.Send(&Response{Message: msg}); err != nil {
			return err
		}
	}
	return nil
}

// CollectNames greets every name received, in one response once the client
// has finished sending.
func (Greeter) CollectNames(stream StreamService_CollectNamesServer) error {
	var names []string
	size := 0
	for {
		req, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return stream.SendAndClose(&Response{Message: Greeting(strings.Join(names, ", "))})
		}
		if err != nil {
			return err
		}
		if size += len(req.GetName()) + 2; size > MaxCollected {
			return status.Errorf(codes.ResourceExhausted, "CollectNames keeps at most %d bytes of names per stream", MaxCollected)
		}
		names = append(names, req.GetName())
	}
}

// Chat answers every request with its greeting, as it arrives.
func (Greeter) Chat(stream StreamService_ChatServer) error {
	for {
		req, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		if err := stream.Send(&Response{Message: Greeting(req.GetName())}); err != nil {
			return err
		}
	}
}
