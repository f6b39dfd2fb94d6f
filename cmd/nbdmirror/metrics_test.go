package main

import (
	"io"
	"net/http"
	"os/exec"
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
