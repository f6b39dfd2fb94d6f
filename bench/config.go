package main

import (
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// defaultWorkloads are the job files of testdata/fio run without --workloads.
const defaultWorkloads = "randwrite-4k-qd1,randwrite-4k-qd32,randread-4k-qd32," +
	"seqwrite-1m-qd8,seqwrite-1m-qd8-endfsync,randwrite-4k-qd1-fsync,randwrite-4k-qd32-compressible"

// config is what the command line asks for.
type config struct {
	systems   []system
	workloads []string
	reps      int
	runtime   time.Duration
	ramp      time.Duration
	size      int64
	warm      bool   // read the images after dropping caches
	resync    bool   // measure resync throughput on the pair-C images
	dir       string // where the scratch dir goes; "" picks one
	render    string // a results JSON to print again instead of running
	history   string // a results JSON to add to the history instead of running
	rawName   string // with history: how the line names the results
	note      string // what the run is for, for the history
	out       string // results dir
}

func parseFlags(args []string, root string, stderr io.Writer) (config, error) {
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	systemsFlag := fs.String("systems", defaultSystems, "systems to run, comma-separated (known: "+systemNames()+")")
	workloadsFlag := fs.String("workloads", defaultWorkloads, "fio job files of testdata/fio to run, without .fio")
	reps := fs.Int("reps", 3, "repetitions of every workload on every system")
	runtime := seconds(6 * time.Second) // 5 systems x 7 workloads x 3 reps stay under 25 minutes
	ramp := seconds(2 * time.Second)
	fs.Var(&runtime, "runtime", "measured time of each fio run (seconds, or a duration like 500ms)")
	fs.Var(&ramp, "ramp", "fio ramp time before measuring (seconds, or a duration)")
	sizeFlag := fs.String("size", "1G", "image size (K, M, G, T suffixes are powers of 1024)")
	warm := fs.Bool("warm", false, "after dropping caches, read the system's images once, so reads hit the page cache")
	dir := fs.String("dir", "", "directory for images (default: a temp dir on a disk-backed file system)")
	out := fs.String("out", filepath.Join(root, "bench", "results"), "results directory")
	render := fs.String("render", "", "print the markdown of an earlier results JSON and exit")
	resync := fs.Bool("resync", true, "after the fio runs, measure resync throughput of pair-C (when it runs)")
	history := fs.String("add-history", "", "append the history line of an earlier results JSON to the results dir's history.md and exit")
	rawName := fs.String("raw-name", "", "with --add-history: how the line names the results (default: the path given)")
	note := fs.String("note", "", "what the run is for, kept in its results and its history line")
	against := fs.String("against", "", "also run each nbdmirror system built from this git revision, side by side (before and after)")
	if err := fs.Parse(args); err != nil {
		return config{}, err
	}
	if *render != "" {
		return config{render: *render}, nil
	}
	if *history != "" {
		return config{history: *history, rawName: *rawName, note: *note, out: *out}, nil
	}
	if fs.NArg() > 0 {
		return config{}, fmt.Errorf("bench: unexpected arguments %q", fs.Args())
	}
	size, err := parseSize(*sizeFlag)
	if err != nil {
		return config{}, err
	}
	sys, err := lookupSystems(splitList(*systemsFlag))
	if err != nil {
		return config{}, err
	}
	if *against != "" {
		sys = withRevision(sys, *against)
	}
	cfg := config{systems: sys, workloads: splitList(*workloadsFlag), reps: *reps,
		runtime: time.Duration(runtime), ramp: time.Duration(ramp), size: size, warm: *warm, dir: *dir, out: *out,
		resync: *resync, note: *note}
	return cfg, cfg.check(root)
}

// check validates the config against the job files present under root.
func (c config) check(root string) error {
	switch {
	case len(c.systems) == 0:
		return fmt.Errorf("bench: no systems")
	case len(c.workloads) == 0:
		return fmt.Errorf("bench: no workloads")
	case c.reps < 1:
		return fmt.Errorf("bench: --reps must be at least 1")
	case c.runtime < time.Second:
		return fmt.Errorf("bench: --runtime must be at least 1s")
	case c.size < imageBlock || c.size%imageBlock != 0:
		return fmt.Errorf("bench: --size must be a positive multiple of 1M")
	}
	for _, w := range c.workloads {
		if _, err := os.Stat(jobFile(root, w)); err != nil {
			return fmt.Errorf("bench: unknown workload %q: %w", w, err)
		}
	}
	return nil
}

// replacesLatest reports whether the run is the reference one, whose table
// and chart become latest.md and latest.png: the default systems and
// workloads, none built from another revision.
func (c config) replacesLatest() bool {
	var names []string
	for _, s := range c.systems {
		names = append(names, s.name)
	}
	return strings.Join(names, ",") == defaultSystems && strings.Join(c.workloads, ",") == defaultWorkloads
}

func jobFile(root, workload string) string {
	return filepath.Join(root, "testdata", "fio", workload+".fio")
}

func splitList(s string) []string {
	var out []string
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f != "" {
			out = append(out, f)
		}
	}
	return out
}

// parseSize reads a byte count such as 1G, 512M, 1GiB or 4096.
func parseSize(s string) (int64, error) {
	t := strings.TrimSuffix(strings.TrimSuffix(strings.ToUpper(strings.TrimSpace(s)), "IB"), "B")
	shift := 0
	if n := len(t); n > 0 {
		if i := strings.IndexByte("KMGT", t[n-1]); i >= 0 {
			shift, t = 10*(i+1), t[:n-1]
		}
	}
	v, err := strconv.ParseInt(t, 10, 64)
	if err != nil || v <= 0 || v > (1<<62)>>shift {
		return 0, fmt.Errorf("bench: bad size %q", s)
	}
	return v << shift, nil
}

// fmtSize prints a byte count with the largest binary unit that divides it.
func fmtSize(n int64) string {
	for _, u := range []struct {
		shift int
		name  string
	}{{40, "TiB"}, {30, "GiB"}, {20, "MiB"}, {10, "KiB"}} {
		if n >= 1<<u.shift && n%(1<<u.shift) == 0 {
			return fmt.Sprintf("%d %s", n>>u.shift, u.name)
		}
	}
	return fmt.Sprintf("%d B", n)
}

// seconds is a duration flag that also takes a bare number of seconds.
type seconds time.Duration

func (s *seconds) String() string { return time.Duration(*s).String() }

func (s *seconds) Set(v string) error {
	if f, err := strconv.ParseFloat(v, 64); err == nil {
		*s = seconds(f * float64(time.Second))
		return nil
	}
	d, err := time.ParseDuration(v)
	if err != nil {
		return fmt.Errorf("want seconds or a duration: %w", err)
	}
	*s = seconds(d)
	return nil
}

// fioTime formats a duration for a fio job file.
func fioTime(d time.Duration) string {
	if d%time.Second == 0 {
		return fmt.Sprintf("%ds", d/time.Second)
	}
	return fmt.Sprintf("%dms", d/time.Millisecond)
}
