// Package refusal marks the errors with which a kuberpc server refuses a
// call before any handler runs (load shedding, the handler cap), so that
// kuberpc clients know the call was not processed and may retry it on
// another replica whatever the method, as gRPC retries a stream the
// server refused (gRFC A6's transparent retry) but cannot for a refusal
// that carries a status.
//
// The mark is a standard google.rpc.ErrorInfo detail (domain kuberpc.dev,
// reason OVERLOADED, metadata processed=false) with a google.rpc.RetryInfo
// hint, so other clients can read it too.
package refusal

import (
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"
)

// Domain and Reason identify the ErrorInfo of a refusal.
const (
	Domain = "kuberpc.dev"
	Reason = "OVERLOADED"
)

// RetryDelay is the RetryInfo hint a refusal carries: how long a client
// should wait before retrying on the same replica.
const RetryDelay = 5 * time.Millisecond

// New returns the status error of a refused call.
func New(code codes.Code, msg string) error {
	st := status.New(code, msg)
	if d, err := st.WithDetails(
		&errdetails.ErrorInfo{Domain: Domain, Reason: Reason, Metadata: map[string]string{"processed": "false"}},
		&errdetails.RetryInfo{RetryDelay: durationpb.New(RetryDelay)},
	); err == nil {
		st = d
	}
	return st.Err()
}

// Is reports whether err is a kuberpc server's refusal of a call it did
// not process, and the delay it suggests before a retry.
func Is(err error) (delay time.Duration, ok bool) {
	st, isStatus := status.FromError(err)
	if !isStatus || (st.Code() != codes.Unavailable && st.Code() != codes.ResourceExhausted) {
		return 0, false
	}
	for _, d := range st.Details() {
		switch d := d.(type) {
		case *errdetails.ErrorInfo:
			ok = ok || (d.GetDomain() == Domain && d.GetReason() == Reason && d.GetMetadata()["processed"] == "false")
		case *errdetails.RetryInfo:
			delay = d.GetRetryDelay().AsDuration()
		}
	}
	if !ok {
		return 0, false
	}
	return min(max(delay, 0), time.Second), true
}
