package client_test

import (
	"encoding/json"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/kuberpc/kuberpc/client"
)

// FuzzServiceConfig: any method names for retries, hedging and timeouts
// give a service config that grpc-go accepts, or an error naming them,
// never a panic.
func FuzzServiceConfig(f *testing.F) {
	f.Add("a.B/C", "a.B", "a.B/D", int64(time.Second))
	f.Add("/a.B", "a.B/C/D", "", int64(0))
	f.Add("", "", "x", int64(-1))
	f.Fuzz(func(t *testing.T, idempotent, hedged, timed string, timeout int64) {
		opts := []client.Option{client.WithIdempotentMethods(idempotent), client.WithMethodTimeout(time.Duration(timeout), timed)}
		if hedged != "" {
			opts = append(opts, client.WithHedging(client.HedgingPolicy{MaxAttempts: 2}, hedged))
		}
		sc, err := client.ServiceConfig(opts...)
		if err != nil {
			return
		}
		if !json.Valid([]byte(sc)) {
			t.Fatalf("invalid JSON %s", sc)
		}
		cc, err := grpc.NewClient("passthrough:///x", grpc.WithTransportCredentials(insecure.NewCredentials()), grpc.WithDefaultServiceConfig(sc))
		if err != nil {
			t.Fatalf("grpc-go rejects the service config %s: %v", sc, err)
		}
		cc.Close()
	})
}
