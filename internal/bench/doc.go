// Command bench is the benchmark harness behind `make bench`.
//
// It builds a sample qcow2 image once (cached under the work directory),
// then copies it with every contender in the same run: qemu-img convert
// (the disk-bound floor), nbdcopy between two qemu-nbd servers, the imageio
// NBD client (package transfer over backend/nbd) between the same servers,
// and `imageio upload` / `imageio download` through a local imageiod over
// HTTPS and over its Unix socket. For each it measures wall time, CPU
// seconds and peak RSS of the client, the daemon and the qemu-nbd servers
// separately, checks the result with `qemu-img compare`, and prints a table
// with ratios against qemu-img convert. The table is also written as JSON
// and Markdown into the work directory. docs/benchmarks.md describes the
// method.
//
// Before the scenarios it measures the floors: the CPU seconds per GiB one
// process spends receiving or sending over loopback TCP, TLS (crypto/tls,
// as imageiod's remote service) and a Unix stream socket, and sealing or
// opening AES-128-GCM records in memory. Each socket floor runs this
// program twice as "bench floor-peer SPEC" (not for people to call), the
// measured end and its peer, joined by one connection the harness makes;
// the measured end reports its own getrusage time around the data loop.
// The sums of floors that make up imageiod's data paths (HTTPS upload: TLS
// receive + Unix send) are printed next to the daemon's CPU goal and its
// measured CPU.
//
// Usage:
//
//	bench run                    run the benchmark (settings from BENCH_* variables)
//	bench copy SRC-URL DST-URL   copy one NBD export to another with package transfer
//	bench image PATH SIZE        build a sample image (4G: half data, a quarter zero clusters)
//
// Settings of run (environment):
//
//	BENCH_SIZE         virtual size of the main image (default 4G)
//	BENCH_SPARSE_SIZE  size of the sparse image with little data (default 32G; 0 skips it)
//	BENCH_RUNS         runs of each scenario and floor; the tables show medians (default 1)
//	BENCH_ONLY         regular expression selecting scenarios and floors by name
//	BENCH_WORK         work directory (default bench-work)
//	BENCH_BIN          directory holding imageio, imageiod and imageioctl (default bin)
//	BENCH_SEED         seed of the image layout and data (default 1)
//	BENCH_FLOOR_SIZE   bytes each floor moves (default 2G; 0 skips the floors)
//
// Every process the harness starts runs in its own process group and is
// stopped when the harness ends or is interrupted. The harness runs on Linux
// only: it reads /proc for CPU time and peak RSS.
package main
