package main

import (
	"io"
	"net/http"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"
)

func TestMetricsAndPlainStatus(t *testing.T) {
	needTools(t, "fio")
	metricsAddr := freeAddr(t)
	a, b := newPair(t, "64M", []string{"--metrics-listen", metricsAddr}, nil)
	a.start()
	b.start()
	a.waitFor("connected", 10*time.Second, established)
	runFio(t, a.uri(), "--rw=randwrite", "--bs=4k", "--iodepth=8", "--size=8M", "--fsync=16")
	if st := a.status(); st.NBD.Flushes == 0 {
		t.Fatalf("fio --fsync sent no flush: %+v", st.NBD)
	}

	resp, err := http.Get("http://" + metricsAddr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	text := string(raw)
	for _, want := range []string{
		`nbdmirror_writes_total{resource="r0"} 2048`,
		`nbdmirror_write_latency_seconds_count{resource="r0"} 2048`,
		`nbdmirror_peer_connected{resource="r0"} 1`,
		`nbdmirror_replication_lag_records{resource="r0"}`,
		`nbdmirror_replication_wire_bytes_total{resource="r0"}`,
		`nbdmirror_nbd_requests_total{command="flush",resource="r0"}`,
	} {
		if !strings.Contains(text, want) {
			t.Errorf("metrics lack %q", want)
		}
	}

	// Every write's journal and peer stages, each FLUSH, and the journal's
	// steps are timed.
	for stage, want := range map[string]int{"journal": 2048, "peer": 2048, "flush": 1, "journal_write": 1,
		"journal_sync": 1, "apply": 1} {
		n := stageCount(text, stage)
		if n < want || want == 2048 && n != want {
			t.Errorf("nbdmirror_write_stage_seconds{stage=%q} counted %d, want %d or more", stage, n, want)
		}
	}

	out, err := exec.Command(binary, "status", "--control", a.control).Output()
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"r0 role:Primary", "disk:UpToDate", "peer connection:Connected role:Secondary",
		"replication:Established peer-disk:UpToDate"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("plain status lacks %q:\n%s", want, out)
		}
	}
}

// stageCount is the count of the stage's write stage histogram in a
// metrics page, -1 if it has none.
func stageCount(text, stage string) int {
	prefix := `nbdmirror_write_stage_seconds_count{resource="r0",stage="` + stage + `"} `
	for _, line := range strings.Split(text, "\n") {
		if v, ok := strings.CutPrefix(line, prefix); ok {
			n, err := strconv.Atoi(v)
			if err != nil {
				return -1
			}
			return n
		}
	}
	return -1
}
