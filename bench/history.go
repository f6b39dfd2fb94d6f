package main

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
)

// historyFile is the results directory's one line per run.
const historyFile = "history.md"

// historyHeader starts a new history file.
const historyHeader = `# nbdmirror benchmark history

One line per run of the harness (` + "`make bench`" + `, bench/), oldest first: when it started, the
commit it measured (` + "`+dirty`" + `: with uncommitted changes), the machine (CPUs, memory, kernel, load
average at start and end), reps and measured time per fio run, where the run's full results are,
then for each workload each system's median IOPS and p50 completion latency, the resync
throughput of a pair (MiB/s, median), the device under the images (MiB/s in 1 MiB O_DIRECT
writes), and what the run was for. ` + "`name@REV`" + ` is that system built from git revision REV
(` + "`--against REV`" + `, side by side in one run). Full results (` + "`raw/STAMP.json`" + `: every run's fio
summary; ` + "`raw/STAMP/`" + `: the job files and fio's JSON) stay on the machine that ran them (git
ignores raw/); runs from before raw/ existed name the commit that holds them
(` + "`git show COMMIT:PATH`" + `). ` + "`bin/bench --render raw/STAMP.json`" + ` prints a run's full table again.

`

// historyLine is the line of the history that records r, whose full
// results are at raw.
func historyLine(r *Results, raw string) string {
	m, p := r.Machine, r.Params
	commit := strings.Replace(m.Commit, " (work tree has changes)", "+dirty", 1)
	machine := fmt.Sprintf("%d CPUs %.1f GiB Linux %s load %s -> %s", m.CPUs,
		float64(m.MemoryBytes)/(1<<30), m.Kernel, firstField(m.LoadStart), firstField(m.LoadEnd))
	var b strings.Builder
	fmt.Fprintf(&b, "- %s | %s | %s | %d x %s | %s |", r.Date.Format("2006-01-02 15:04"), commit,
		machine, p.Reps, p.Runtime, raw)
	for i, wl := range p.Workloads {
		sep := ";"
		if i == 0 {
			sep = ""
		}
		fmt.Fprintf(&b, "%s %s:", sep, wl)
		first := true
		for _, c := range r.Cells {
			if c.Workload != wl {
				continue
			}
			if !first {
				b.WriteString(",")
			}
			first = false
			if c.Good == 0 {
				fmt.Fprintf(&b, " %s failed", c.System)
				continue
			}
			fmt.Fprintf(&b, " %s %s %s", c.System, fmtCount(c.Median.IOPS), strings.ReplaceAll(fmtUs(c.Median.P50us), " ", ""))
		}
	}
	if len(r.Resyncs) > 0 {
		b.WriteString("; resync MiB/s:")
		for i, rs := range r.Resyncs {
			if i > 0 {
				b.WriteString(",")
			}
			fmt.Fprintf(&b, " %s %.0f", strings.ReplaceAll(rs.label(), ",", ""), rs.MedianMiBs)
		}
	}
	if r.Device != nil {
		fmt.Fprintf(&b, "; device %.0f MiB/s", r.Device.MedianMiBs)
	}
	b.WriteString(" |")
	if r.Note != "" {
		b.WriteString(" " + strings.Join(strings.Fields(r.Note), " "))
	}
	return b.String() + "\n"
}

func firstField(s string) string {
	if f := strings.Fields(s); len(f) > 0 {
		return f[0]
	}
	return "?"
}

// appendHistory adds line to dir's history file, created with its header.
func appendHistory(dir, line string) error {
	path := filepath.Join(dir, historyFile)
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	if err != nil {
		return fmt.Errorf("bench: %w", err)
	}
	if fi, err := f.Stat(); err == nil && fi.Size() == 0 {
		line = historyHeader + line
	}
	if _, err := io.WriteString(f, line); err != nil {
		f.Close()
		return fmt.Errorf("bench: %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("bench: %s: %w", path, err)
	}
	return nil
}

// addHistory appends the history line of an earlier results file to dir's
// history (--add-history), naming its full results rawName (default: the
// path given), with note when the results have none.
func addHistory(dir, path, rawName, note string) error {
	r, err := loadResults(path)
	if err != nil {
		return err
	}
	if rawName == "" {
		rawName = path
	}
	if note != "" {
		r.Note = note
	}
	return appendHistory(dir, historyLine(&r, rawName))
}
