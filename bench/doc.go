// Package bench measures kuberpc against baselines run in the same process
// (raw grpc-go; grpc-go's round_robin), A/B interleaved, and reports the
// results as ratios. Nothing here asserts on time: the benchmarks report
// metrics, and the runner writes them to results.md.
package bench
