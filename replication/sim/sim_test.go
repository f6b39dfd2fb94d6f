package sim

import (
	"flag"
	"strings"
	"sync"
	"testing"
	"time"
)

var (
	seedFlag  = flag.Uint64("seed", 0, "run only the schedule of this seed")
	seedsFlag = flag.Int("seeds", 0, "schedules to run (0: 1000, 100 with -short)")
	firstFlag = flag.Uint64("first", 1, "seed of the first schedule")
	parFlag   = flag.Int("par", 24, "schedules run at once")
	timeout   = flag.Duration("peer-timeout", PeerTimeout, "the nodes' peer timeout")
	allFaults = flag.Bool("all-faults", false, "draw also the fault kinds of KnownBugs, without its WaitBitmap")
	withFlag  = flag.String("with", "", "comma-separated step kinds to draw despite KnownBugs (e.g. crash,power-loss)")
	waitBmp   = flag.Bool("wait-bitmap", true, "with KnownBugs: crash a node apart only once its bitmap file exists")
	strict    = flag.Bool("strict", false, "fail also on the KnownOpen invariants")
)

// options are the run options the flags ask for.
func options(t *testing.T) Options {
	opt := KnownBugs()
	opt.WaitBitmap = *waitBmp
	if *allFaults {
		opt = Options{}
	}
	for _, name := range strings.Split(*withFlag, ",") {
		if name == "" {
			continue
		}
		k, ok := kindNamed(name)
		if !ok {
			t.Fatalf("-with: no step kind %q", name)
		}
		delete(opt.Skip, k)
	}
	opt.PeerTimeout = *timeout
	return opt
}

// knownOnly reports whether every violation of res is KnownOpen.
func knownOnly(res Result) bool {
	for _, v := range res.Violations {
		if _, ok := KnownOpen[v.Invariant]; !ok || *strict {
			return false
		}
	}
	return true
}

// TestSim runs many seeded schedules and fails with each failing seed's
// replay command.
func TestSim(t *testing.T) {
	opt := options(t)
	if *seedFlag != 0 {
		res := Run(*seedFlag, opt)
		if res.Failed() && knownOnly(res) {
			t.Logf("known open: %s", res.Summary())
			return
		}
		report(t, res, true)
		return
	}
	n := *seedsFlag
	if n == 0 {
		n = 1000
		if testing.Short() {
			n = 100
		}
	}
	start := time.Now()
	results := runMany(*firstFlag, n, *parFlag, opt)
	failed, known := 0, 0
	for _, res := range results {
		if res.Failed() && knownOnly(res) {
			known++
			t.Logf("seed %d: known open: %s (%s)", res.Schedule.Seed, res.Summary(), KnownOpen[res.Violations[0].Invariant])
			continue
		}
		if res.Failed() {
			failed++
			if failed <= 3 {
				// With the logs: a seed that fails only beside others
				// may not fail again alone.
				report(t, res, true)
			} else {
				t.Errorf("seed %d failed: %s; replay: go test ./replication/sim -run TestSim -seed %d",
					res.Schedule.Seed, res.Summary(), res.Schedule.Seed)
			}
		}
	}
	t.Logf("%d schedules (seeds %d-%d) in %v, %d failed, %d known open", n, *firstFlag, *firstFlag+uint64(n)-1,
		time.Since(start).Round(time.Millisecond), failed, known)
}

// runMany runs n schedules from seed first, par at once.
func runMany(first uint64, n, par int, opt Options) []Result {
	results := make([]Result, n)
	sem := make(chan struct{}, par)
	var wg sync.WaitGroup
	for i := range n {
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			results[i] = Run(first+uint64(i), opt)
		}()
	}
	wg.Wait()
	return results
}

// report fails t with res's violations and its replay command; verbose
// adds the schedule, notes and logs.
func report(t *testing.T, res Result, verbose bool) {
	t.Helper()
	if !res.Failed() && !verbose {
		return
	}
	var b strings.Builder
	for _, v := range res.Violations {
		b.WriteString("\n  " + v.String())
	}
	b.WriteString("\n  schedule: " + res.Schedule.String())
	for _, n := range res.Notes {
		b.WriteString("\n  note: " + n)
	}
	if verbose {
		for i, lines := range res.Logs {
			b.WriteString("\n  log of " + nodeName(i) + ":")
			for _, l := range lines {
				b.WriteString("\n    " + l)
			}
		}
	}
	if res.Failed() {
		t.Errorf("seed %d failed:%s\n  replay: go test ./replication/sim -run TestSim -seed %d", res.Schedule.Seed, b.String(), res.Schedule.Seed)
	} else {
		t.Logf("seed %d passed%s", res.Schedule.Seed, b.String())
	}
}
