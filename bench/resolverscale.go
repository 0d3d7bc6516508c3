package bench

import (
	"fmt"
	"io"
	"runtime"
	"slices"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"

	kuberesolver "github.com/kuberpc/kuberpc/resolver/kubernetes"
)

// slices builds n endpoints in EndpointSlices of 100, as the EndpointSlice
// controller writes them.
func makeSlices(n int) []*discoveryv1.EndpointSlice {
	name, port, yes := "grpc", int32(50051), true
	var out []*discoveryv1.EndpointSlice
	for i := 0; i < n; i += 100 {
		s := &discoveryv1.EndpointSlice{AddressType: discoveryv1.AddressTypeIPv4,
			Ports: []discoveryv1.EndpointPort{{Name: &name, Port: &port}}}
		s.Name = fmt.Sprintf("example-%d", i/100)
		for j := i; j < min(i+100, n); j++ {
			zone := "z1"
			s.Endpoints = append(s.Endpoints, discoveryv1.Endpoint{
				Addresses:  []string{fmt.Sprintf("198.%d.%d.%d", 18+(j>>16&1), j>>8&255, j&255)},
				Conditions: discoveryv1.EndpointConditions{Ready: &yes, Serving: &yes},
				Zone:       &zone,
				TargetRef:  &corev1.ObjectReference{Kind: "Pod", Name: fmt.Sprintf("example-%d", j)},
			})
		}
		out = append(out, s)
	}
	return out
}

// ResolverScale measures what the resolver does per EndpointSlice event at
// 1,000 and 5,000 endpoints: the time and allocations to apply a change
// of one endpoint, against a full rebuild from every slice, and the heap
// the merged endpoints take.
func ResolverScale(s Scale, progress io.Writer) ([]Row, error) {
	t := kuberesolver.Target{Service: "example", Namespace: "default", PortName: "grpc"}
	var rows []Row
	for _, n := range []int{1000, 5000} {
		full := makeSlices(n)
		iters := max(s.Calls/100, 3)
		var tFull, tOne, aFull, aOne []float64
		m := kuberesolver.NewMerger(t, "")
		m.Update(full)
		for r := range s.Rounds {
			// Full rebuild: a fresh merger over every slice.
			d, a := measureOp(iters, func() { kuberesolver.NewMerger(t, "").Update(full) })
			tFull, aFull = append(tFull, d), append(aFull, a)
			// One endpoint changes: one slice is replaced by a new object
			// with one endpoint flipped, as the informer delivers it. The
			// objects are made beforehand: decoding them is the
			// informer's work, not the resolver's.
			variants := oneEndpointChanges(full, r*iters, iters, true)
			i := 0
			d, a = measureOp(iters, func() {
				m.Update(variants[i])
				i++
			})
			tOne, aOne = append(tOne, d), append(aOne, a)
		}
		cas := fmt.Sprintf("%d endpoints in %d slices", n, len(full))
		rows = append(rows,
			ratioRow("resolver scale", cas+": one-endpoint change ÷ full rebuild", "time", "≤ 0.1", tOne, tFull),
			ratioRow("resolver scale", cas+": one-endpoint change ÷ full rebuild", "allocs", "≤ 0.1", aOne, aFull))
		// Heap held by the merged endpoints, per 1,000.
		runtime.GC()
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		keep := kuberesolver.NewMerger(t, "")
		keep.Update(full)
		runtime.GC()
		runtime.ReadMemStats(&after)
		perK := float64(after.HeapAlloc-before.HeapAlloc) / float64(n) * 1000
		runtime.KeepAlive(keep)
		rows = append(rows, Row{Pair: "resolver scale", Case: cas, Metric: "heap KiB per 1,000 endpoints", Subject: perK / 1024, Ratio: perK / 1024, Min: perK / 1024, Max: perK / 1024})
		fmt.Fprintf(progress, "resolver scale: %s done\n", cas)
	}
	return rows, nil
}

// oneEndpointChanges returns n versions of full, the i-th with slice
// (first+i) mod len(full) replaced by a copy whose first endpoint is ready
// or not, alternately, starting with ready: one endpoint changed per
// version, as the informer delivers it.
func oneEndpointChanges(full []*discoveryv1.EndpointSlice, first, n int, startReady bool) [][]*discoveryv1.EndpointSlice {
	variants := make([][]*discoveryv1.EndpointSlice, n)
	for i := range variants {
		changed := slices.Clone(full)
		k := (first + i) % len(full)
		c := full[k].DeepCopy()
		ready := (i%2 == 0) == startReady
		c.Endpoints[0].Conditions.Ready = &ready
		changed[k] = c
		variants[i] = changed
	}
	return variants
}

// measureOp runs op iters times and returns ns and allocations per run.
func measureOp(iters int, op func()) (float64, float64) {
	runtime.GC()
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	start := time.Now()
	for range iters {
		op()
	}
	el := time.Since(start)
	runtime.ReadMemStats(&after)
	return float64(el.Nanoseconds()) / float64(iters), float64(after.Mallocs-before.Mallocs) / float64(iters)
}
