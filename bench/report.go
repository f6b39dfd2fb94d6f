package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// Results is everything one run of the harness measured, as written to
// bench/results/raw/DATE-TIME.json.
type Results struct {
	Date    time.Time       `json:"date"`
	Machine Machine         `json:"machine"`
	Params  Params          `json:"params"`
	Notes   []string        `json:"notes,omitempty"`
	Cells   []*Cell         `json:"cells"`
	Ratios  []Ratio         `json:"ratios"`
	Resyncs []*ResyncResult `json:"resyncs,omitempty"`
	Device  *DeviceResult   `json:"device,omitempty"`
	Note    string          `json:"note,omitempty"` // --note: what the run was for
}

// Params are the knobs of the run.
type Params struct {
	Systems   []string `json:"systems"`
	Workloads []string `json:"workloads"`
	Reps      int      `json:"reps"`
	Runtime   string   `json:"runtime"`
	Ramp      string   `json:"ramp"`
	SizeBytes int64    `json:"image_size_bytes"`
	Dir       string   `json:"image_dir"`
	DirFS     string   `json:"image_dir_fs"`
	Warm      bool     `json:"warm"` // images read into the page cache before each turn
	// SyncedBeforeFio: sync(2) ran once the system was up, so nothing its
	// start wrote (a pair's initial sync) was written back during the run.
	SyncedBeforeFio bool   `json:"synced_before_fio"`
	Order           string `json:"order"`
}

// writeTable prints the results as a markdown table, each workload's
// systems followed by their ratio rows.
func writeTable(w io.Writer, r *Results) {
	flush := false
	for _, c := range r.Cells {
		flush = flush || c.Median.Syncs > 0
	}
	cols := []string{"workload", "system", "IOPS", "MiB/s", "p50", "p99", "p99.9", "max", "IOPS min-max", "CPU s/GiB"}
	if flush {
		cols = append(cols, "flush p50 / p99")
	}
	fmt.Fprintf(w, "| %s |\n|%s\n", strings.Join(cols, " | "), strings.Repeat("---|", len(cols)))
	for _, wl := range r.Params.Workloads {
		first := true
		for _, c := range r.Cells {
			if c.Workload != wl {
				continue
			}
			name := ""
			if first {
				name, first = wl, false
			}
			writeRow(w, append([]string{name, c.System}, cellColumns(c, flush)...))
		}
		for _, q := range r.Ratios {
			if q.Workload == wl {
				writeRow(w, append([]string{"", q.System + " / " + q.Baseline}, ratioColumns(q, flush)...))
			}
		}
	}
}

// writeSummaryTable prints one row per workload and one column per
// system: the median IOPS (MiB/s for a 1 MiB stream) with the p50 and
// p99.9 completion latencies.
func writeSummaryTable(w io.Writer, r *Results) {
	systems := r.Params.Systems
	fmt.Fprintf(w, "| workload: IOPS or MiB/s (p50 / p99.9) | %s |\n|%s\n", strings.Join(systems, " | "),
		strings.Repeat("---|", len(systems)+1))
	for _, wl := range r.Params.Workloads {
		cols := []string{wl}
		for _, sys := range systems {
			cols = append(cols, summaryCell(r.Cells, wl, sys))
		}
		writeRow(w, cols)
	}
}

// summaryCell is one system's figures for one workload in the summary.
func summaryCell(cells []*Cell, workload, system string) string {
	for _, c := range cells {
		if c.Workload != workload || c.System != system {
			continue
		}
		if c.Good == 0 {
			return "failed"
		}
		m, rate := c.Median, fmtCount(c.Median.IOPS)
		if strings.HasPrefix(workload, "seq") {
			rate = fmtMiB(m.MiBps) + " MiB/s"
		}
		return fmt.Sprintf("%s (%s / %s)", rate, fmtUs(m.P50us), fmtUs(m.P999us))
	}
	return "-"
}

func writeRow(w io.Writer, cols []string) {
	fmt.Fprintf(w, "| %s |\n", strings.Join(cols, " | "))
}

func cellColumns(c *Cell, flush bool) []string {
	m := c.Median
	if c.Good == 0 {
		cols := []string{"failed", "-", "-", "-", "-", "-", "-", "-"}
		if flush {
			cols = append(cols, "-")
		}
		return cols
	}
	spreadCol := fmtCount(c.IOPSMin) + "-" + fmtCount(c.IOPSMax)
	if c.Good < len(c.Runs) {
		spreadCol += fmt.Sprintf(" (%d/%d ok)", c.Good, len(c.Runs))
	}
	cols := []string{fmtCount(m.IOPS), fmtMiB(m.MiBps), fmtUs(m.P50us), fmtUs(m.P99us),
		fmtUs(m.P999us), fmtUs(m.MaxUs), spreadCol, fmt.Sprintf("%.2f", m.CPUPerGB)}
	if flush {
		f := "-"
		if m.Syncs > 0 {
			f = fmtUs(m.SyncP50) + " / " + fmtUs(m.SyncP99)
		}
		cols = append(cols, f)
	}
	return cols
}

func ratioColumns(q Ratio, flush bool) []string {
	cols := []string{fmtRatio(q.IOPS), fmtRatio(q.MiBps), fmtRatio(q.P50), fmtRatio(q.P99),
		fmtRatio(q.P999), fmtRatio(q.Max), "", fmtRatio(q.CPUPerGB)}
	if flush {
		cols = append(cols, "")
	}
	return cols
}

func fmtCount(x float64) string {
	switch {
	case x == 0:
		return "-"
	case x >= 1e6:
		return fmt.Sprintf("%.2fM", x/1e6)
	case x >= 1e4:
		return fmt.Sprintf("%.1fk", x/1e3)
	case x >= 1e3:
		return fmt.Sprintf("%.2fk", x/1e3)
	}
	return fmt.Sprintf("%.0f", x)
}

func fmtMiB(x float64) string {
	if x >= 100 {
		return fmt.Sprintf("%.0f", x)
	}
	return fmt.Sprintf("%.1f", x)
}

// fmtUs formats a latency given in microseconds.
func fmtUs(us float64) string {
	switch {
	case us == 0:
		return "-"
	case us < 10:
		return fmt.Sprintf("%.1f us", us)
	case us < 1000:
		return fmt.Sprintf("%.0f us", us)
	case us < 10000:
		return fmt.Sprintf("%.2f ms", us/1000)
	case us < 100000:
		return fmt.Sprintf("%.1f ms", us/1000)
	}
	return fmt.Sprintf("%.0f ms", us/1000)
}

func fmtRatio(x float64) string {
	if x == 0 {
		return "-"
	}
	return fmt.Sprintf("%.2fx", x)
}

// writeMarkdown writes a header describing the run, then the table.
func writeMarkdown(w io.Writer, r *Results) {
	m, p := r.Machine, r.Params
	fmt.Fprintf(w, "# nbdmirror benchmark, %s\n\n", r.Date.Format("2006-01-02 15:04"))
	fmt.Fprintf(w, "- machine: %d CPUs, %.1f GiB, Linux %s, %s, %s, %s\n",
		m.CPUs, float64(m.MemoryBytes)/(1<<30), m.Kernel, m.Fio, m.Nbdkit, m.Go)
	if m.Qemu != "" {
		fmt.Fprintf(w, "- qemu: %s\n", m.Qemu)
	}
	fmt.Fprintf(w, "- commit: %s\n", m.Commit)
	if m.LoadStart != "" {
		fmt.Fprintf(w, "- load average (1 5 15 min): %s at start, %s at end\n", m.LoadStart, m.LoadEnd)
	}
	cache := "caches dropped before each turn"
	if p.Warm {
		cache += ", then the images read once"
	}
	if p.SyncedBeforeFio {
		cache += "; sync(2) once the system is up, before fio"
	}
	fmt.Fprintf(w, "- runs: %d reps, %s each after a %s ramp, %s images on %s, %s; %s\n",
		p.Reps, p.Runtime, p.Ramp, fmtSize(p.SizeBytes), p.DirFS, p.Order, cache)
	for _, n := range r.Notes {
		fmt.Fprintf(w, "- note: %s\n", n)
	}
	fmt.Fprintf(w, "\nMedians over reps. Latencies are fio completion latencies of the side that "+
		"carried the I/O; flush is the latency of the FLUSH after each write. CPU is the user+system "+
		"time of the server processes per GiB read or written. Ratio rows are system / baseline "+
		"on the medians (for latencies and CPU, lower is better).\n\n")
	writeSummaryTable(w, r)
	fmt.Fprintf(w, "\nIn full:\n\n")
	writeTable(w, r)
	writeResyncTable(w, r.Resyncs, r.Device)
	writeDeviceLine(w, r.Device)
}

// loadResults reads a results file written by save.
func loadResults(path string) (Results, error) {
	var r Results
	b, err := os.ReadFile(path)
	if err != nil {
		return r, fmt.Errorf("bench: %w", err)
	}
	if err := json.Unmarshal(b, &r); err != nil {
		return r, fmt.Errorf("bench: %s: %w", path, err)
	}
	return r, nil
}

// render prints the markdown of a results file written by save.
func render(path string) error {
	r, err := loadResults(path)
	if err != nil {
		return err
	}
	writeMarkdown(os.Stdout, &r)
	return writeChart(&r, strings.TrimSuffix(path, ".json")+".png")
}

// rawDirName is the results directory's git-ignored folder of full results.
const rawDirName = "raw"

// save writes a run's results under dir: raw/STAMP.json (every run's fio
// summary), its chart raw/STAMP.png and its markdown, as latest.md with the
// chart latest.png when latest is set (the reference run the README shows),
// else as raw/STAMP.md; then it appends the run's line to the history. It
// returns the JSON path.
func save(dir, stamp string, r *Results, latest bool) (string, error) {
	raw := filepath.Join(dir, rawDirName)
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return "", fmt.Errorf("bench: encode results: %w", err)
	}
	path := filepath.Join(raw, stamp+".json")
	if err := os.WriteFile(path, append(b, '\n'), 0o644); err != nil {
		return "", fmt.Errorf("bench: %w", err)
	}
	if err := writeChart(r, filepath.Join(raw, stamp+".png")); err != nil {
		return "", err
	}
	mdPath, chart := filepath.Join(raw, stamp+".md"), stamp+".png"
	if latest {
		mdPath, chart = filepath.Join(dir, "latest.md"), "latest.png"
		if err := writeChart(r, filepath.Join(dir, chart)); err != nil {
			return "", err
		}
	}
	var md strings.Builder
	writeMarkdown(&md, r)
	fmt.Fprintf(&md, "\n![IOPS and p99 per workload and system](%s)\n", chart)
	if err := os.WriteFile(mdPath, []byte(md.String()), 0o644); err != nil {
		return "", fmt.Errorf("bench: %w", err)
	}
	return path, appendHistory(dir, historyLine(r, rawDirName+"/"+stamp+".json"))
}
