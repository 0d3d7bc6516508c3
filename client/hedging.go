package client

import (
	"context"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
)

// hedger sends hedged copies of unary calls. grpc-go parses but does not
// implement the service config's hedgingPolicy, so kuberpc does it in an
// interceptor: each copy is a separate RPC of the call's context, so
// kuberpc's policies send it to an endpoint the call has not tried
// (package attempts); round_robin to the next of its rotation.
type hedger struct {
	policy  HedgingPolicy
	methods []methodName
}

func (h *hedger) applies(fullMethod string) bool {
	if h == nil {
		return false
	}
	svc, m, _ := strings.Cut(strings.TrimPrefix(fullMethod, "/"), "/")
	return covers(h.methods, methodName{Service: svc, Method: m})
}

func (h *hedger) nonFatal(err error) bool {
	codes := h.policy.NonFatalCodes
	if len(codes) == 0 {
		codes = []string{"UNAVAILABLE"}
	}
	name := strings.ToUpper(status.Code(err).String())
	for _, c := range codes {
		if strings.ReplaceAll(strings.ToUpper(c), "_", "") == strings.ReplaceAll(name, "_", "") {
			return true
		}
	}
	return false
}

type attempt struct {
	reply proto.Message
	err   error
}

// invoke runs up to MaxAttempts copies, one every Delay (or at once after
// a non-fatal failure), and returns the first success or the last error.
func (h *hedger) invoke(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
	out, ok := reply.(proto.Message)
	if !ok {
		return invoker(ctx, method, req, reply, cc, opts...)
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel() // the losers
	results := make(chan attempt, h.policy.MaxAttempts)
	launch := func() {
		r := out.ProtoReflect().New().Interface()
		go func() {
			results <- attempt{r, invoker(ctx, method, req, r, cc, opts...)}
		}()
	}
	launched, done := 1, 0
	launch()
	timer := time.NewTimer(h.policy.Delay)
	defer timer.Stop()
	var last error
	for done < launched || launched < h.policy.MaxAttempts {
		select {
		case <-timer.C:
			if launched < h.policy.MaxAttempts {
				launch()
				launched++
				timer.Reset(h.policy.Delay)
			}
		case a := <-results:
			done++
			if a.err == nil {
				proto.Reset(out)
				proto.Merge(out, a.reply)
				return nil
			}
			last = a.err
			if !h.nonFatal(a.err) {
				return a.err
			}
			if launched < h.policy.MaxAttempts {
				launch()
				launched++
				timer.Reset(h.policy.Delay)
			}
		case <-ctx.Done():
			return status.FromContextError(ctx.Err()).Err()
		}
	}
	return last
}
