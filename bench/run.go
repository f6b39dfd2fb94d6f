package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// bench is one run of the harness.
type bench struct {
	cfg     config
	root    string // module root
	scratch string // images, sockets, logs, the nbdmirror binary
	rawDir  string // results/raw/STAMP: filled job files and raw fio JSON
	bin     string // nbdmirror binary, when nbdmirror runs
	machine Machine
	cells   []*Cell
	notes   []string

	resyncResults []*ResyncResult
	device        *DeviceResult
	revBin        string // nbdmirror built from --against
}

func run(ctx context.Context, args []string) error {
	root, err := moduleRoot()
	if err != nil {
		return err
	}
	cfg, err := parseFlags(args, root, os.Stderr)
	if err != nil {
		return err
	}
	if cfg.render != "" {
		return render(cfg.render)
	}
	if cfg.history != "" {
		return addHistory(cfg.out, cfg.history, cfg.rawName, cfg.note)
	}
	if err := checkTools(cfg.systems); err != nil {
		return err
	}
	// The commit and versions are those of the start, when nbdmirror is built.
	b := &bench{cfg: cfg, root: root, machine: machineInfo(root, runsQemu(cfg.systems))}
	if b.scratch, err = scratchDir(cfg.dir, filepath.Join(root, "bench")); err != nil {
		return err
	}
	defer os.RemoveAll(b.scratch)
	if err := b.prepare(ctx); err != nil {
		return err
	}
	start := time.Now()
	b.machine.LoadStart = loadAvg()
	stamp := start.Format("20060102-150405")
	b.rawDir = filepath.Join(cfg.out, rawDirName, stamp)
	if err := os.MkdirAll(b.rawDir, 0o755); err != nil {
		return fmt.Errorf("bench: %w", err)
	}
	if err := b.turns(ctx); err != nil {
		os.RemoveAll(b.rawDir)
		return err
	}
	if b.cfg.resync && slices.ContainsFunc(b.cfg.systems, func(s system) bool { return s.name == "pair-C" }) {
		b.resyncResults = b.resyncs(ctx)
	}
	if b.device, err = measureDevice(b.scratch, b.cfg.size, b.cfg.reps); err != nil {
		b.notes = append(b.notes, err.Error())
	}
	return b.report(start, stamp)
}

// checkTools fails early, and clearly, when an executable is missing.
func checkTools(systems []system) error {
	tools := []string{"fio"}
	for _, s := range systems {
		tools = append(tools, s.needs...)
	}
	for _, t := range tools {
		if _, err := exec.LookPath(t); err != nil {
			return fmt.Errorf("bench: %s is not installed (Debian: apt-get install -y "+
				"fio nbdkit qemu-utils qemu-system-common)", t)
		}
	}
	return nil
}

// prepare builds nbdmirror if it runs and creates every system's images.
func (b *bench) prepare(ctx context.Context) error {
	if slices.ContainsFunc(b.cfg.systems, func(s system) bool { return s.nbdmirror }) {
		logf("building ./cmd/nbdmirror")
		bin, err := buildNbdmirror(ctx, b.root, b.scratch)
		if err != nil {
			return err
		}
		b.bin = bin
	}
	for _, s := range b.cfg.systems {
		if s.rev != "" && b.revBin == "" {
			logf("building ./cmd/nbdmirror at %s", s.rev)
			bin, err := buildRevision(ctx, b.root, b.scratch, s.rev)
			if err != nil {
				return err
			}
			b.revBin = bin
		}
	}
	for _, s := range b.cfg.systems {
		if err := os.MkdirAll(b.sysDir(s), 0o755); err != nil {
			return fmt.Errorf("bench: %w", err)
		}
		for _, img := range b.images(s) {
			t := time.Now()
			if err := createImage(img, b.cfg.size); err != nil {
				return err
			}
			logf("created %s (%s) in %.1fs", img, fmtSize(b.cfg.size), time.Since(t).Seconds())
			if ctx.Err() != nil {
				return ctx.Err()
			}
		}
	}
	return nil
}

func (b *bench) sysDir(s system) string { return filepath.Join(b.scratch, s.name) }

func (b *bench) images(s system) []string {
	var imgs []string
	for i := range s.images {
		imgs = append(imgs, filepath.Join(b.sysDir(s), "disk"+strconv.Itoa(i)+".img"))
	}
	return imgs
}

// turns runs every rep of every workload on every system, flipping the
// order of the systems at each turn.
func (b *bench) turns(ctx context.Context) error {
	for _, w := range b.cfg.workloads {
		for _, s := range b.cfg.systems {
			b.cells = append(b.cells, &Cell{Workload: w, System: s.name})
		}
	}
	total := b.cfg.reps * len(b.cells)
	per := b.cfg.runtime + b.cfg.ramp + 2*time.Second
	logf("%d runs of about %v: about %v", total, per, (time.Duration(total) * per).Round(time.Minute))
	n, flip := 0, false
	for rep := 1; rep <= b.cfg.reps; rep++ {
		for _, w := range b.cfg.workloads {
			order := slices.Clone(b.cfg.systems)
			if flip {
				slices.Reverse(order)
			}
			flip = !flip
			for _, s := range order {
				n++
				r := b.turn(ctx, rep, w, s)
				if ctx.Err() != nil {
					return fmt.Errorf("bench: interrupted")
				}
				logf("[%d/%d] rep %d %s %s: %s", n, total, rep, w, s.name, describe(r))
				c := b.cell(w, s.name)
				c.Runs = append(c.Runs, r)
			}
		}
	}
	return nil
}

func (b *bench) cell(workload, system string) *Cell {
	for _, c := range b.cells {
		if c.Workload == workload && c.System == system {
			return c
		}
	}
	panic("bench: no cell " + workload + "/" + system)
}

// turn starts the system cold, runs one workload on it and stops it.
func (b *bench) turn(ctx context.Context, rep int, workload string, s system) Run {
	t := time.Now()
	if err := dropCaches(); err != nil {
		b.note(err.Error())
	}
	r := Run{Rep: rep}
	if b.cfg.warm {
		if err := warmImages(b.images(s)); err != nil {
			r.Error, r.Seconds = err.Error(), time.Since(t).Seconds()
			return r
		}
	}
	l := &launch{ctx: ctx, dir: b.sysDir(s), images: b.images(s), bin: b.bin}
	if s.rev != "" {
		l.bin = b.revBin
	}
	uri, err := s.start(l)
	if err == nil {
		// What starting wrote (a pair's initial full sync) is written back
		// now, not during the measured run: the turn started with nothing dirty.
		syscall.Sync()
		name := fmt.Sprintf("r%d-%s-%s", rep, workload, s.name)
		r.Summary, err = b.measure(ctx, l, uri, workload, name)
		if err == nil {
			r.Raw = filepath.Join(filepath.Base(b.rawDir), name+".json")
		}
	}
	if stopErr := l.stop(); err == nil {
		err = stopErr // a server that died during the run spoils it
	}
	if err != nil {
		r.Summary, r.Error = nil, err.Error()
	}
	r.Seconds = time.Since(t).Seconds()
	return r
}

// measure runs fio against uri and charges the CPU time the servers used
// between the end of the ramp and fio's exit to the bytes fio measured.
func (b *bench) measure(ctx context.Context, l *launch, uri, workload, name string) (*Summary, error) {
	pids := l.pids()
	atRamp := make(chan float64, 1)
	timer := time.AfterFunc(b.cfg.ramp, func() {
		c, _ := cpuSeconds(pids)
		atRamp <- c
	})
	raw, err := fioRun{
		jobFile: jobFile(b.root, workload),
		vars: map[string]string{"URI": uri, "SIZE": strconv.FormatInt(b.cfg.size, 10),
			"RUNTIME": fioTime(b.cfg.runtime), "RAMP": fioTime(b.cfg.ramp)},
		workDir: b.rawDir,
		name:    name,
		home:    l.fioHome,
	}.run(ctx)
	end, cpuErr := cpuSeconds(pids)
	ramped := !timer.Stop()
	switch {
	case err != nil:
		return nil, err
	case !ramped:
		return nil, fmt.Errorf("bench: fio %s ended before its ramp", name)
	case cpuErr != nil:
		return nil, cpuErr
	}
	sum, err := parseFio(raw)
	if err != nil {
		return nil, err
	}
	sum.CPUSec = end - <-atRamp
	sum.CPUPerGB = sum.CPUSec / (float64(sum.Bytes) / (1 << 30))
	return &sum, nil
}

// report summarizes the cells, writes the results and prints the table.
func (b *bench) report(start time.Time, stamp string) error {
	pairs := map[string][]string{}
	failed := 0
	for _, s := range b.cfg.systems {
		pairs[s.name] = s.baselines
	}
	for _, c := range b.cells {
		c.summarize()
		failed += len(c.Runs) - c.Good
	}
	b.machine.LoadEnd = loadAvg()
	r := &Results{Date: start, Machine: b.machine, Notes: b.notes, Params: b.params(), Cells: b.cells,
		Ratios: ratios(b.cells, pairs), Resyncs: b.resyncResults, Device: b.device, Note: b.cfg.note}
	path, err := save(b.cfg.out, stamp, r, b.cfg.replacesLatest())
	if err != nil {
		return err
	}
	writeSummaryTable(os.Stdout, r)
	fmt.Println()
	writeTable(os.Stdout, r)
	writeResyncTable(os.Stdout, r.Resyncs, r.Device)
	writeDeviceLine(os.Stdout, r.Device)
	for _, n := range b.notes {
		fmt.Printf("\nnote: %s\n", n)
	}
	md := strings.TrimSuffix(path, ".json") + ".md"
	if b.cfg.replacesLatest() {
		md = filepath.Join(b.cfg.out, "latest.md")
	}
	logf("results in %s and %s, a line in %s", path, md, filepath.Join(b.cfg.out, historyFile))
	if failed > 0 {
		return fmt.Errorf("bench: %d runs failed; their errors are in %s", failed, path)
	}
	return nil
}

func (b *bench) params() Params {
	p := Params{Workloads: b.cfg.workloads, Reps: b.cfg.reps, Runtime: fioTime(b.cfg.runtime),
		Ramp: fioTime(b.cfg.ramp), SizeBytes: b.cfg.size, Dir: b.scratch, DirFS: fsType(b.scratch),
		Warm: b.cfg.warm, SyncedBeforeFio: true, Order: "each turn every system once, order flipped every turn"}
	for _, s := range b.cfg.systems {
		p.Systems = append(p.Systems, s.name)
	}
	return p
}

func runsQemu(systems []system) bool {
	for _, s := range systems {
		if strings.HasPrefix(s.name, "qemu") {
			return true
		}
	}
	return false
}

// note records a remark for the results, once.
func (b *bench) note(msg string) {
	if !slices.Contains(b.notes, msg) {
		b.notes = append(b.notes, msg)
		logf("note: %s", msg)
	}
}

// describe is the progress line of a run.
func describe(r Run) string {
	if r.Summary == nil {
		return "FAILED: " + r.Error
	}
	s := r.Summary
	return fmt.Sprintf("%s IOPS, %s MiB/s, p50 %s, p99 %s, %.2f CPU s/GiB (%.1fs)",
		fmtCount(s.IOPS), fmtMiB(s.MiBps), fmtUs(s.P50us), fmtUs(s.P99us), s.CPUPerGB, r.Seconds)
}

func logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "bench: "+format+"\n", args...)
}
