// Package bench measures kuberpc against baselines run in the same process
// (raw grpc-go; grpc-go's round_robin), A/B interleaved, and reports the
// results as ratios. Nothing here asserts on time: the benchmarks report
// metrics, and the runner writes them to results.md.
//
// The A/A rows show the noise of rounds within one run, not all of it.
// With one call at a time a side's ratio also moves from one run (one
// process) to the next: on a 2-vCPU AMD machine, four throwaway runs of
// the same probe (8 rounds of 1 s, 1 KiB) put kuberpc's defaults at
// 0.83, 0.99, 1.09 and 0.89 of raw grpc-go's QPS, and one run's own A/A
// row at 1.09, while the rounds within each run agreed. Goals that sit
// within about 10 % of such a ratio are met or missed by the run as much
// as by the code. So Overhead measures the unary cases of small messages
// again in processes of their own (Scale.Processes: 3 at the full scale)
// and reports, beside each goal row and its A/A row, the processes'
// median and their spread; the goals are still judged on the run's own
// process.
package bench
