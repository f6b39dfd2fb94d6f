// Command bench measures nbdmirror against the NBD servers its users would
// otherwise pick, with fio driving each over loopback.
//
// It is a module of its own (bench/go.mod), so that its chart library stays
// out of the daemon's go.mod. Build it and run it from the repository:
//
//	make bench                                      # builds bin/bench, runs bin/bench --warm
//	go -C bench build -o ../bin/bench .
//	bin/bench --systems nbdkit,qemu-nbd --reps 1 --runtime 3
//	bin/bench --workloads randwrite-4k-qd1,randread-4k-qd32 --size 256M
//	bin/bench --render bench/results/raw/DATE-TIME.json   # the table of an earlier run
//
// For every system it builds what is needed (go build ./cmd/nbdmirror for
// nbdmirror), creates its disk images the same way (written once in 1 MiB
// blocks of one fixed pattern, then fsynced) on a disk-backed file system,
// then runs each fio job of testdata/fio against each system in turns: for
// each rep, for each workload, every system once, the order of the systems
// flipping at every turn (A B, B A, A B...). Before each turn it syncs and
// drops the page cache (with --warm, then reads the system's images once),
// starts the system's servers on free 127.0.0.1 ports, runs fio, and stops
// them again. The CPU time of the server processes is read from /proc
// between the end of fio's ramp and its exit.
//
// A markdown table of medians, spreads and ratios goes to stdout and, with
// its chart, to bench/results/latest.md and latest.png when the run is the
// reference one (default systems and workloads, no --against), else to
// bench/results/raw/DATE-TIME.md. bench/results/raw/ (ignored by git) holds
// DATE-TIME.json, the machine, the parameters and every run, and
// DATE-TIME/, the filled job files and raw fio JSON; each run adds a line of
// its summary figures to bench/results/history.md, which names its raw
// results (--add-history adds the line of an earlier results file). Progress
// goes to stderr. Every server runs in its
// own process group and is stopped on return, error or Ctrl-C.
//
// The job files use ${URI}, ${SIZE}, ${RUNTIME:-10s} and ${RAMP:-2s}; the
// harness fills them in (see expandJob) before handing them to fio.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:])
	stop()
	if err != nil && !errors.Is(err, flag.ErrHelp) {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}
