package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"regexp"
	"strings"
)

// varPattern matches ${NAME} and ${NAME:-default} in a job file.
var varPattern = regexp.MustCompile(`\$\{([A-Za-z_][A-Za-z0-9_]*)(:-([^}]*))?\}`)

// expandJob fills the ${NAME} and ${NAME:-default} references of a fio job
// file from vars. A variable that is neither in vars (or set to "") nor given
// a default is an error, so that fio never sees a half-filled job. Comment
// lines are left as they are.
func expandJob(job string, vars map[string]string) (string, error) {
	var missing []string
	lines := strings.SplitAfter(job, "\n")
	for i, line := range lines {
		trimmed := strings.TrimSpace(line)
		if strings.HasPrefix(trimmed, "#") || strings.HasPrefix(trimmed, ";") {
			continue
		}
		lines[i] = varPattern.ReplaceAllStringFunc(line, func(ref string) string {
			m := varPattern.FindStringSubmatch(ref)
			if v := vars[m[1]]; v != "" {
				return v
			}
			if m[2] != "" {
				return m[3]
			}
			missing = append(missing, m[1])
			return ref
		})
	}
	if len(missing) > 0 {
		return "", fmt.Errorf("bench: job file needs %s", strings.Join(missing, ", "))
	}
	return strings.Join(lines, ""), nil
}

// fioOutput is the part of fio's --output-format=json that the harness reads.
type fioOutput struct {
	Version string   `json:"fio version"`
	Jobs    []fioJob `json:"jobs"`
}

type fioJob struct {
	Name  string  `json:"jobname"`
	Error int     `json:"error"`
	Read  fioSide `json:"read"`
	Write fioSide `json:"write"`
	Sync  fioSync `json:"sync"`
}

type fioSide struct {
	IOBytes  int64   `json:"io_bytes"`
	BWBytes  float64 `json:"bw_bytes"`
	IOPS     float64 `json:"iops"`
	TotalIOs int64   `json:"total_ios"`
	Clat     fioLat  `json:"clat_ns"`
}

type fioSync struct {
	TotalIOs int64  `json:"total_ios"`
	Lat      fioLat `json:"lat_ns"`
}

type fioLat struct {
	Mean       float64            `json:"mean"`
	Max        float64            `json:"max"`
	Percentile map[string]float64 `json:"percentile"`
}

// percentile returns the p-th percentile in nanoseconds as fio printed it,
// or 0 when fio did not report it (no I/O on that side).
func (l fioLat) percentile(p float64) float64 {
	return l.Percentile[fmt.Sprintf("%f", p)]
}

// Summary is what one fio run measured, on the side (read or write) that
// carried the I/O. Latencies are completion latencies in microseconds.
type Summary struct {
	Side     string  `json:"side"`
	IOPS     float64 `json:"iops"`
	MiBps    float64 `json:"mib_per_s"`
	Bytes    int64   `json:"bytes"`
	P50us    float64 `json:"p50_us"`
	P99us    float64 `json:"p99_us"`
	P999us   float64 `json:"p99_9_us"`
	MaxUs    float64 `json:"max_us"` // the run's longest completion: a stall that p99.9 hides
	Syncs    int64   `json:"syncs,omitempty"`
	SyncP50  float64 `json:"sync_p50_us,omitempty"`
	SyncP99  float64 `json:"sync_p99_us,omitempty"`
	CPUSec   float64 `json:"server_cpu_s"`
	CPUPerGB float64 `json:"server_cpu_s_per_gib"`
}

// parseFio reads fio's JSON output and summarizes its single job (the job
// files use group_reporting). Anything before the first '{' is skipped, in
// case a fio engine printed a line into the output file.
func parseFio(data []byte) (Summary, error) {
	if i := bytes.IndexByte(data, '{'); i > 0 {
		data = data[i:]
	}
	var out fioOutput
	if err := json.Unmarshal(data, &out); err != nil {
		return Summary{}, fmt.Errorf("bench: parse fio json: %w", err)
	}
	if len(out.Jobs) != 1 {
		return Summary{}, fmt.Errorf("bench: fio json has %d jobs, want 1 (group_reporting)", len(out.Jobs))
	}
	j := out.Jobs[0]
	if j.Error != 0 {
		return Summary{}, fmt.Errorf("bench: fio job %s failed with error %d", j.Name, j.Error)
	}
	side, s := "write", j.Write
	if j.Read.TotalIOs > j.Write.TotalIOs {
		side, s = "read", j.Read
	}
	if s.TotalIOs == 0 {
		return Summary{}, fmt.Errorf("bench: fio job %s did no I/O", j.Name)
	}
	sum := Summary{
		Side:   side,
		IOPS:   s.IOPS,
		MiBps:  s.BWBytes / (1 << 20),
		Bytes:  j.Read.IOBytes + j.Write.IOBytes,
		P50us:  s.Clat.percentile(50) / 1e3,
		P99us:  s.Clat.percentile(99) / 1e3,
		P999us: s.Clat.percentile(99.9) / 1e3,
		MaxUs:  s.Clat.Max / 1e3,
		Syncs:  j.Sync.TotalIOs,
	}
	if j.Sync.TotalIOs > 0 {
		sum.SyncP50 = j.Sync.Lat.percentile(50) / 1e3
		sum.SyncP99 = j.Sync.Lat.percentile(99) / 1e3
	}
	return sum, nil
}

// fioRun is one invocation of fio against a URI.
type fioRun struct {
	jobFile string            // path of the job file with ${...} references
	vars    map[string]string // URI, SIZE, RUNTIME, RAMP
	workDir string            // where the filled job, output and log go
	name    string            // base name of those files
	// home, if set, makes fio run as nobody with this HOME (where libnbd
	// finds its TLS certificates); its job and output pass through
	// home/out, which nobody may write.
	home string
}

// run fills the job file, runs fio to completion and returns its raw JSON.
// fio runs in its own process group and is killed, with every process
// under it, if ctx ends.
func (r fioRun) run(ctx context.Context) ([]byte, error) {
	tmpl, err := os.ReadFile(r.jobFile)
	if err != nil {
		return nil, fmt.Errorf("bench: %w", err)
	}
	job, err := expandJob(string(tmpl), r.vars)
	if err != nil {
		return nil, fmt.Errorf("%w (%s)", err, r.jobFile)
	}
	base := r.workDir + "/" + r.name
	if err := os.WriteFile(base+".fio", []byte(job), 0o644); err != nil {
		return nil, fmt.Errorf("bench: %w", err)
	}
	argv, fioBase := []string{"fio"}, base
	if r.home != "" {
		fioBase = r.home + "/out/" + r.name
		if err := os.WriteFile(fioBase+".fio", []byte(job), 0o644); err != nil {
			return nil, fmt.Errorf("bench: %w", err)
		}
		argv = []string{"setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "env", "HOME=" + r.home, "fio"}
	}
	cmd := groupCommand(ctx, append(argv, "--output="+fioBase+".json",
		"--output-format=json", "--eta=never", fioBase+".fio")...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("bench: fio %s: %w: %s", r.name, err, lastLines(stderr.String(), 5))
	}
	out, err := os.ReadFile(fioBase + ".json")
	if err != nil {
		return nil, fmt.Errorf("bench: fio %s wrote no output: %w", r.name, err)
	}
	if r.home != "" {
		if err := os.WriteFile(base+".json", out, 0o644); err != nil {
			return nil, fmt.Errorf("bench: %w", err)
		}
	}
	return out, nil
}

// lastLines returns the last n non-empty lines of s, joined by " | ".
func lastLines(s string, n int) string {
	var lines []string
	for _, l := range strings.Split(s, "\n") {
		if l = strings.TrimSpace(l); l != "" {
			lines = append(lines, l)
		}
	}
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, " | ")
}
