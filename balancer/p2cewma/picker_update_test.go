package p2cewma

import (
	"fmt"
	"runtime"
	"testing"
	"time"

	"google.golang.org/grpc/balancer"
	"google.golang.org/grpc/resolver"

	"github.com/kuberpc/kuberpc/internal/endpointbalancer"
)

type nopPicker struct{}

func (nopPicker) Pick(balancer.PickInfo) (balancer.PickResult, error) {
	return balancer.PickResult{}, nil
}

func readyEndpoints(n int) []endpointbalancer.Endpoint {
	eps := make([]endpointbalancer.Endpoint, n)
	for i := range eps {
		addr := fmt.Sprintf("198.%d.%d.%d:50051", 18+(i>>16&1), i>>8&255, i&255)
		eps[i] = endpointbalancer.Endpoint{Key: addr, Endpoint: resolver.Endpoint{Addresses: []resolver.Address{{Addr: addr}}}, Picker: nopPicker{}}
	}
	return eps
}

// BenchmarkPickerUpdate reports what rebuilding p2c_ewma's picker costs
// when one of n endpoints changes (the builder keeps every other
// endpoint's statistics) ÷ building it from scratch. The picker is a
// flat array, so both are O(n): what the update saves is the per-endpoint
// statistics.
func BenchmarkPickerUpdate(b *testing.B) {
	for _, n := range []int{1000, 5000} {
		b.Run(fmt.Sprint(n), func(b *testing.B) {
			eps := readyEndpoints(n)
			changed := readyEndpoints(n)
			changed[0].Key, changed[0].Endpoint = "198.18.255.255:50051", resolver.Endpoint{Addresses: []resolver.Address{{Addr: "198.18.255.255:50051"}}}
			measure := func(f func()) (time.Duration, uint64) {
				runtime.GC()
				var before, after runtime.MemStats
				runtime.ReadMemStats(&before)
				start := time.Now()
				for range b.N {
					f()
				}
				el := time.Since(start)
				runtime.ReadMemStats(&after)
				return el / time.Duration(b.N), (after.Mallocs - before.Mallocs) / uint64(b.N)
			}
			full := func() { (&pickerBuilder{decay: DefaultDecay, stats: map[string]*stats{}}).Build(eps) }
			pb := &pickerBuilder{decay: DefaultDecay, stats: map[string]*stats{}}
			pb.Build(eps)
			flip := false
			update := func() {
				if flip = !flip; flip {
					pb.Build(changed)
				} else {
					pb.Build(eps)
				}
			}
			tf, af := measure(full)
			tu, au := measure(update)
			b.ReportMetric(float64(tu)/float64(tf), "time-ratio")
			b.ReportMetric(float64(au)/float64(max(af, 1)), "allocs-ratio")
		})
	}
}
