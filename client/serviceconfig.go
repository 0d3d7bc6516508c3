package client

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"time"

	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
	"google.golang.org/protobuf/types/descriptorpb"
)

// RetryPolicy is gRPC's retry policy (gRFC A6) for idempotent methods.
type RetryPolicy struct {
	// MaxAttempts counts the first attempt; 1 disables retries. gRPC caps it
	// at 5. Default 4.
	MaxAttempts int
	// InitialBackoff and MaxBackoff bound the randomised exponential
	// back-off between attempts. Defaults 50ms and 1s.
	InitialBackoff, MaxBackoff time.Duration
	// BackoffMultiplier grows the back-off. Default 2.
	BackoffMultiplier float64
	// Codes are the retried status codes, as gRPC names them. Default
	// UNAVAILABLE: the server did not process the call (it was draining,
	// overloaded, or gone).
	Codes []string
}

// DefaultRetryPolicy is the policy idempotent methods get unless
// WithRetryPolicy replaces it.
var DefaultRetryPolicy = RetryPolicy{
	MaxAttempts:       4,
	InitialBackoff:    50 * time.Millisecond,
	MaxBackoff:        time.Second,
	BackoffMultiplier: 2,
	Codes:             []string{"UNAVAILABLE"},
}

type methodName struct {
	Service string `json:"service"`
	Method  string `json:"method,omitempty"`
}

type retryPolicyJSON struct {
	MaxAttempts          int      `json:"maxAttempts"`
	InitialBackoff       string   `json:"initialBackoff"`
	MaxBackoff           string   `json:"maxBackoff"`
	BackoffMultiplier    float64  `json:"backoffMultiplier"`
	RetryableStatusCodes []string `json:"retryableStatusCodes"`
}

type methodConfig struct {
	Name        []methodName     `json:"name"`
	RetryPolicy *retryPolicyJSON `json:"retryPolicy,omitempty"`
}

// HedgingPolicy is a hedging policy with the semantics of gRFC A6. grpc-go
// does not implement hedging, so kuberpc's client interceptor does.
type HedgingPolicy struct {
	// MaxAttempts counts the first request; gRPC caps it at 5.
	MaxAttempts int
	// Delay is how long to wait for an answer before the next copy.
	Delay time.Duration
	// NonFatalCodes are codes that let the other copies continue; by
	// default UNAVAILABLE.
	NonFatalCodes []string
}

type serviceConfig struct {
	LoadBalancingConfig []map[string]json.RawMessage `json:"loadBalancingConfig"`
	MethodConfig        []methodConfig               `json:"methodConfig,omitempty"`
	RetryThrottling     *struct {
		MaxTokens  int     `json:"maxTokens"`
		TokenRatio float64 `json:"tokenRatio"`
	} `json:"retryThrottling,omitempty"`
}

// ServiceConfig returns the gRPC service config JSON that Dial uses for the
// given balancer, idempotent methods and retry policy. It is exported so
// that the configuration can be inspected and logged.
func ServiceConfig(balancer, balancerConfig string, idempotent []string, p RetryPolicy) (string, error) {
	return serviceConfigJSON(balancer, balancerConfig, idempotent, p, nil, HedgingPolicy{})
}

func parseNames(names []string, kind string) ([]methodName, error) {
	var out []methodName
	for _, n := range names {
		service, method, _ := strings.Cut(strings.TrimPrefix(n, "/"), "/")
		if service == "" || strings.Contains(method, "/") {
			return nil, fmt.Errorf("%s method %q: want pkg.Service/Method or pkg.Service", kind, n)
		}
		mn := methodName{Service: service, Method: method}
		if !slices.Contains(out, mn) {
			out = append(out, mn)
		}
	}
	return out, nil
}

func serviceConfigJSON(balancer, balancerConfig string, idempotent []string, p RetryPolicy, hedged []string, h HedgingPolicy) (string, error) {
	if balancer == "" {
		balancer = "round_robin"
	}
	if balancerConfig == "" {
		balancerConfig = "{}"
	}
	if !json.Valid([]byte(balancerConfig)) {
		return "", fmt.Errorf("balancer %s: config is not valid JSON: %s", balancer, balancerConfig)
	}
	sc := serviceConfig{LoadBalancingConfig: []map[string]json.RawMessage{{balancer: json.RawMessage(balancerConfig)}}}
	hedgedNames, err := parseNames(hedged, "hedged")
	if err != nil {
		return "", err
	}
	// Hedged methods are hedged by kuberpc's interceptor (grpc-go ignores
	// hedgingPolicy) and are not retried on top.
	if p.MaxAttempts > 1 {
		all, err := parseNames(idempotent, "idempotent")
		if err != nil {
			return "", err
		}
		var names []methodName
		for _, n := range all {
			if !slices.Contains(hedgedNames, n) {
				names = append(names, n)
			}
		}
		if len(names) > 0 {
			sc.MethodConfig = append(sc.MethodConfig, methodConfig{Name: names, RetryPolicy: &retryPolicyJSON{
				MaxAttempts:          p.MaxAttempts,
				InitialBackoff:       seconds(p.InitialBackoff),
				MaxBackoff:           seconds(p.MaxBackoff),
				BackoffMultiplier:    p.BackoffMultiplier,
				RetryableStatusCodes: p.Codes,
			}})
			// Retries stop when more than half of recent RPCs failed, so
			// that an outage is not multiplied by MaxAttempts.
			sc.RetryThrottling = &struct {
				MaxTokens  int     `json:"maxTokens"`
				TokenRatio float64 `json:"tokenRatio"`
			}{MaxTokens: 10, TokenRatio: 0.1}
		}
	}
	b, err := json.Marshal(sc)
	return string(b), err
}

func seconds(d time.Duration) string {
	return fmt.Sprintf("%gs", d.Seconds())
}

// IdempotentMethods lists the methods, among all proto files linked into
// the program, whose idempotency_level is IDEMPOTENT or NO_SIDE_EFFECTS, as
// "pkg.Service/Method", sorted.
func IdempotentMethods() []string {
	var out []string
	protoregistry.GlobalFiles.RangeFiles(func(fd protoreflect.FileDescriptor) bool {
		svcs := fd.Services()
		for i := range svcs.Len() {
			sd := svcs.Get(i)
			ms := sd.Methods()
			for j := range ms.Len() {
				md := ms.Get(j)
				mo, ok := md.Options().(*descriptorpb.MethodOptions)
				if !ok || mo == nil {
					continue
				}
				switch mo.GetIdempotencyLevel() {
				case descriptorpb.MethodOptions_IDEMPOTENT, descriptorpb.MethodOptions_NO_SIDE_EFFECTS:
					out = append(out, string(sd.FullName())+"/"+string(md.Name()))
				}
			}
		}
		return true
	})
	slices.Sort(out)
	return out
}
