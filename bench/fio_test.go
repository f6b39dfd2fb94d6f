package main

import (
	"math"
	"os"
	"strings"
	"testing"
)

func TestExpandJob(t *testing.T) {
	job := "# uses ${URI} and ${RUNTIME:-10s}\nuri=${URI}\nruntime=${RUNTIME:-10s}\nramp_time=${RAMP:-2s}\n"
	got, err := expandJob(job, map[string]string{"URI": "nbd://127.0.0.1:1/x", "RUNTIME": "3s"})
	if err != nil {
		t.Fatal(err)
	}
	want := "# uses ${URI} and ${RUNTIME:-10s}\nuri=nbd://127.0.0.1:1/x\nruntime=3s\nramp_time=2s\n"
	if got != want {
		t.Errorf("got\n%s\nwant\n%s", got, want)
	}
}

func TestExpandJobEmptyValueTakesDefault(t *testing.T) {
	got, err := expandJob("ramp_time=${RAMP:-2s}", map[string]string{"RAMP": ""})
	if err != nil || got != "ramp_time=2s" {
		t.Errorf("got %q, %v", got, err)
	}
}

func TestExpandJobMissing(t *testing.T) {
	_, err := expandJob("uri=${URI}\nsize=${SIZE}\n", map[string]string{"SIZE": "1"})
	if err == nil || !strings.Contains(err.Error(), "URI") {
		t.Errorf("err = %v, want one naming URI", err)
	}
}

// The committed job files must fill completely from what the harness sets.
func TestJobFilesExpand(t *testing.T) {
	vars := map[string]string{"URI": "nbd://h/e", "SIZE": "1073741824", "RUNTIME": "1s", "RAMP": "0s"}
	for _, w := range strings.Split(defaultWorkloads, ",") {
		b, err := os.ReadFile(jobFile("..", w))
		if err != nil {
			t.Fatal(err)
		}
		got, err := expandJob(string(b), vars)
		if err != nil {
			t.Errorf("%s: %v", w, err)
			continue
		}
		for _, l := range strings.Split(got, "\n") {
			if strings.Contains(l, "${") && !strings.HasPrefix(l, "#") {
				t.Errorf("%s: unfilled line %q", w, l)
			}
		}
	}
}

func readSample(t *testing.T, name string) []byte {
	t.Helper()
	b, err := os.ReadFile("testdata/" + name)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func near(a, b float64) bool { return math.Abs(a-b) < 1e-6*math.Max(1, math.Abs(b)) }

func TestParseFioRead(t *testing.T) {
	s, err := parseFio(readSample(t, "fio-randread.json"))
	if err != nil {
		t.Fatal(err)
	}
	if s.Side != "read" || !near(s.IOPS, 38459.54046) || s.Bytes != 473194496 {
		t.Errorf("side %s iops %v bytes %d", s.Side, s.IOPS, s.Bytes)
	}
	if !near(s.MiBps, 157573924.0/(1<<20)) {
		t.Errorf("MiB/s = %v", s.MiBps)
	}
	if !near(s.P50us, 585.728) || !near(s.P999us, 9371.648) {
		t.Errorf("p50 %v p99.9 %v", s.P50us, s.P999us)
	}
	if !near(s.MaxUs, 20315.559) {
		t.Errorf("max %v", s.MaxUs)
	}
	if s.Syncs != 0 || s.SyncP50 != 0 {
		t.Errorf("syncs %d p50 %v, want none", s.Syncs, s.SyncP50)
	}
}

func TestParseFioWriteWithFlush(t *testing.T) {
	s, err := parseFio(readSample(t, "fio-write-fsync.json"))
	if err != nil {
		t.Fatal(err)
	}
	if s.Side != "write" || !near(s.IOPS, 3400.533156) || !near(s.P50us, 70.144) {
		t.Errorf("side %s iops %v p50 %v", s.Side, s.IOPS, s.P50us)
	}
	if s.Syncs != 10204 || !near(s.SyncP50, 177.152) {
		t.Errorf("syncs %d sync p50 %v", s.Syncs, s.SyncP50)
	}
}

func TestParseFioSkipsLeadingText(t *testing.T) {
	b := append([]byte("fio: connected to NBD server\n"), readSample(t, "fio-randread.json")...)
	if _, err := parseFio(b); err != nil {
		t.Fatal(err)
	}
}

func TestParseFioRejects(t *testing.T) {
	for name, in := range map[string]string{
		"not json":  "fio: error",
		"two jobs":  `{"jobs":[{"write":{"total_ios":1}},{"write":{"total_ios":1}}]}`,
		"job error": `{"jobs":[{"jobname":"x","error":5,"write":{"total_ios":1}}]}`,
		"no io":     `{"jobs":[{"jobname":"x"}]}`,
	} {
		if _, err := parseFio([]byte(in)); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
}
