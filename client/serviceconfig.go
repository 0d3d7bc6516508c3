package client

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
	"google.golang.org/protobuf/types/descriptorpb"

	"github.com/kuberpc/kuberpc/balancer/connections"
	"github.com/kuberpc/kuberpc/balancer/outlierdetection"
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

// Retry throttling (gRFC A6), so that an outage is not multiplied by
// MaxAttempts: each failed attempt with a retried code takes a token,
// each successful call gives back retryTokenRatio of one, and retries
// stop while half of the retryTokens or fewer are left. Retries therefore
// go on while fewer than about 1 call in 11 fails, and a burst of up to
// retryTokens/2 failures is retried before that sets in. The burst
// matters: outlier detection ejects a replica after 5 failures in a row,
// and concurrent calls bring them at once (50 calls starting together on
// 5 replicas put 10 on a bad one). grpc-go's example budget of 10 tokens
// stopped retrying at the fifth failure of such a burst
// (TestABurstOnAFailingReplicaIsRetried).
const (
	retryTokens     = 100
	retryTokenRatio = 0.1
)

// DefaultRetryPolicy is the policy idempotent methods get unless
// WithRetryPolicy replaces it.
var DefaultRetryPolicy = RetryPolicy{
	MaxAttempts:       4,
	InitialBackoff:    50 * time.Millisecond,
	MaxBackoff:        time.Second,
	BackoffMultiplier: 2,
	Codes:             []string{"UNAVAILABLE"},
}

// validate names the first field of p that grpc-go would refuse. It
// refuses them only in a method's config, so a policy that no method
// used would otherwise pass unseen until one did.
func (p RetryPolicy) validate() error {
	switch {
	case p.MaxAttempts < 1:
		return fmt.Errorf("MaxAttempts %d: want 1 (no retries) or more", p.MaxAttempts)
	case p.MaxAttempts == 1:
		return nil
	case p.InitialBackoff <= 0:
		return fmt.Errorf("InitialBackoff %v: must be positive", p.InitialBackoff)
	case p.MaxBackoff <= 0:
		return fmt.Errorf("MaxBackoff %v: must be positive", p.MaxBackoff)
	case !(p.BackoffMultiplier > 0) || math.IsInf(p.BackoffMultiplier, 1):
		return fmt.Errorf("BackoffMultiplier %v: must be a positive number", p.BackoffMultiplier)
	case len(p.Codes) == 0:
		return errors.New("Codes: empty; name the status codes to retry, such as UNAVAILABLE")
	}
	for _, c := range p.Codes {
		var code codes.Code
		if err := code.UnmarshalJSON([]byte(strconv.Quote(c))); err != nil || code == codes.OK {
			return fmt.Errorf("Codes: %q is not a gRPC status code to retry, such as UNAVAILABLE", c)
		}
	}
	return nil
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
	Timeout     string           `json:"timeout,omitempty"`
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

// ServiceConfig returns the gRPC service config JSON that Dial, given the
// same options, uses: the balancer, a retry policy for idempotent methods
// (those the linked protos declare and WithIdempotentMethods names) that
// are not hedged, and per-method timeouts. It is exported so that the
// configuration can be inspected and logged.
func ServiceConfig(opts ...Option) (string, error) {
	o, err := newOptions(opts)
	if err != nil {
		return "", err
	}
	return serviceConfigJSON(o)
}

// covers reports whether list names n, or n's whole service.
func covers(list []methodName, n methodName) bool {
	return slices.Contains(list, n) || slices.Contains(list, methodName{Service: n.Service})
}

func parseNames(names []string, kind string) ([]methodName, error) {
	var out []methodName
	for _, n := range names {
		service, method, _ := strings.Cut(strings.TrimPrefix(n, "/"), "/")
		if !protoreflect.FullName(service).IsValid() || (method != "" && !protoreflect.Name(method).IsValid()) {
			return nil, fmt.Errorf("%s method %q: want pkg.Service/Method or pkg.Service, with proto identifiers", kind, n)
		}
		mn := methodName{Service: service, Method: method}
		if !slices.Contains(out, mn) {
			out = append(out, mn)
		}
	}
	return out, nil
}

// serviceConfigJSON builds the service config of o. gRPC picks, for a
// call, the methodConfig naming its exact method, else the one naming its
// service; so every exact method kuberpc configures gets an entry that
// also carries what its service's entry says, and a hedged method gets an
// entry without a retry policy even when its service is retried.
func serviceConfigJSON(o options) (string, error) {
	balancer, balancerConfig := o.balancer, o.balancerConfig
	if balancer == "" {
		balancer = "round_robin"
	}
	if balancerConfig == "" {
		balancerConfig = "{}"
	}
	if !json.Valid([]byte(balancerConfig)) {
		return "", fmt.Errorf("balancer %s: config is not valid JSON: %s", balancer, balancerConfig)
	}
	lb := map[string]json.RawMessage{balancer: json.RawMessage(balancerConfig)}
	if n := o.connsPerEndpoint; n > 1 {
		// Inside outlier detection, which so counts an endpoint's calls
		// over all its connections and ejects them together.
		wrapped, err := json.Marshal(map[string]any{"perEndpoint": n, "childPolicy": []map[string]json.RawMessage{lb}})
		if err != nil {
			return "", err
		}
		lb = map[string]json.RawMessage{connections.Name: wrapped}
	}
	if od := o.outlier; od != nil {
		wrapped, err := json.Marshal(outlierJSON(*od, lb))
		if err != nil {
			return "", err
		}
		lb = map[string]json.RawMessage{outlierdetection.Name: wrapped}
	}
	sc := serviceConfig{LoadBalancingConfig: []map[string]json.RawMessage{lb}}
	hedged, err := parseNames(o.hedged, "hedged")
	if err != nil {
		return "", err
	}
	if err := o.retry.validate(); err != nil {
		return "", fmt.Errorf("retry policy: %w", err)
	}
	var idempotent []methodName
	if o.retry.MaxAttempts > 1 {
		if idempotent, err = parseNames(append(IdempotentMethods(), o.idempotent...), "idempotent"); err != nil {
			return "", err
		}
	}
	timeouts := map[methodName]time.Duration{}
	var timedNames []methodName
	for _, mt := range o.timeouts {
		names, err := parseNames(mt.names, "timeout")
		if err != nil {
			return "", err
		}
		if mt.timeout <= 0 {
			return "", fmt.Errorf("timeout %v for %s: must be positive", mt.timeout, strings.Join(mt.names, ", "))
		}
		for _, n := range names {
			timeouts[n] = mt.timeout
		}
		timedNames = append(timedNames, names...)
	}

	// Every name that needs an entry, services first, in a stable order.
	var names []methodName
	for _, list := range [][]methodName{idempotent, hedged, timedNames} {
		for _, n := range list {
			if !slices.Contains(names, n) {
				names = append(names, n)
			}
		}
	}
	slices.SortStableFunc(names, func(a, b methodName) int {
		if (a.Method == "") != (b.Method == "") {
			if a.Method == "" {
				return -1
			}
			return 1
		}
		return 0
	})
	retry := &retryPolicyJSON{
		MaxAttempts:          o.retry.MaxAttempts,
		InitialBackoff:       seconds(o.retry.InitialBackoff),
		MaxBackoff:           seconds(o.retry.MaxBackoff),
		BackoffMultiplier:    o.retry.BackoffMultiplier,
		RetryableStatusCodes: o.retry.Codes,
	}
	retried := false
	for _, n := range names {
		mc := methodConfig{Name: []methodName{n}}
		if covers(idempotent, n) && !covers(hedged, n) {
			mc.RetryPolicy, retried = retry, true
		}
		if d, ok := timeouts[n]; ok {
			mc.Timeout = seconds(d)
		} else if d, ok := timeouts[methodName{Service: n.Service}]; ok {
			mc.Timeout = seconds(d)
		}
		if mc.RetryPolicy == nil && mc.Timeout == "" && n.Method == "" {
			continue // a hedged service: gRPC's default applies
		}
		// Merge with an entry that says the same (one entry, many names).
		if k := slices.IndexFunc(sc.MethodConfig, func(m methodConfig) bool {
			return m.Timeout == mc.Timeout && (m.RetryPolicy == nil) == (mc.RetryPolicy == nil)
		}); k >= 0 {
			sc.MethodConfig[k].Name = append(sc.MethodConfig[k].Name, n)
			continue
		}
		sc.MethodConfig = append(sc.MethodConfig, mc)
	}
	if retried {
		sc.RetryThrottling = &struct {
			MaxTokens  int     `json:"maxTokens"`
			TokenRatio float64 `json:"tokenRatio"`
		}{MaxTokens: retryTokens, TokenRatio: retryTokenRatio}
	}
	b, err := json.Marshal(sc)
	return string(b), err
}

// seconds formats d as a service config duration: decimal seconds, never
// in exponent form ("1e-07s" is not a duration to gRPC).
func seconds(d time.Duration) string {
	return strconv.FormatFloat(d.Seconds(), 'f', -1, 64) + "s"
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

// outlierJSON is od as kuberpc_outlier_detection's config around child.
func outlierJSON(od OutlierDetection, child map[string]json.RawMessage) map[string]any {
	c := map[string]any{
		"childPolicy":         []map[string]json.RawMessage{child},
		"consecutiveFailures": od.ConsecutiveFailures,
		"maxEjectionPercent":  od.MaxEjectionPercent,
	}
	for k, d := range map[string]time.Duration{"interval": od.Interval, "baseEjectionTime": od.BaseEjectionTime, "maxEjectionTime": od.MaxEjectionTime} {
		if d > 0 {
			c[k] = d.String()
		}
	}
	if od.FailurePercentageThreshold > 0 {
		c["failurePercentage"] = map[string]int{"threshold": od.FailurePercentageThreshold, "minimumHosts": od.MinimumHosts, "requestVolume": od.RequestVolume}
	}
	return c
}
