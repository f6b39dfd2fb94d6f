package main

import (
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestServeRejectsBadFlagsAndCreatesNothing(t *testing.T) {
	dir := t.TempDir()
	existing := filepath.Join(dir, "small.img")
	if err := os.WriteFile(existing, make([]byte, 4096), 0o600); err != nil {
		t.Fatal(err)
	}
	missing := filepath.Join(dir, "new.img")
	ctl := filepath.Join(dir, "sub", "r0.sock")
	for _, c := range []struct {
		name string
		args []string
		want string
	}{
		{"no disk", nil, "--disk is required"},
		{"both roles", []string{"--disk", missing, "--size", "1M", "--primary", "--secondary"}, "exclude"},
		{"bad size", []string{"--disk", missing, "--size", "12Q"}, "--size"},
		{"missing disk without size", []string{"--disk", missing}, "give --size"},
		{"other size", []string{"--disk", existing, "--size", "1M"}, "never resized"},
		{"unknown flag", []string{"--disk", missing, "--size", "1M", "--frobnicate"}, "unknown flag"},
		{"bad name", []string{"--disk", missing, "--size", "1M", "--name", "a/b"}, "--name"},
		{"bad listen", []string{"--disk", missing, "--size", "1M", "--nbd-listen", "256.0.0.1:x"}, "--nbd-listen"},
		{"negative poll", []string{"--disk", missing, "--size", "1M", "--nbd-poll", "-1us"}, "--nbd-poll"},
		{"poll too long", []string{"--disk", missing, "--size", "1M", "--nbd-poll", "1s"}, "--nbd-poll"},
		{"negative peer poll", []string{"--disk", missing, "--size", "1M", "--peer-poll", "-1us"}, "--peer-poll"},
		{"peer poll too long", []string{"--disk", missing, "--size", "1M", "--peer-poll", "1s"}, "--peer-poll"},
		{"peer without credentials", []string{"--disk", missing, "--size", "1M", "--peer", "127.0.0.1:1"}, "--secret-file or --peer-tls-certificates"},
		{"peer name without TLS", []string{"--disk", missing, "--size", "1M", "--peer-listen", "127.0.0.1:1",
			"--secret-file", existing, "--peer-name", "b"}, "--peer-name goes with"},
		{"TLS without a peer name", []string{"--disk", missing, "--size", "1M", "--peer-listen", "127.0.0.1:1",
			"--peer-tls-certificates", dir}, "needs --peer-name"},
		{"TLS directory without files", []string{"--disk", missing, "--size", "1M", "--peer", "127.0.0.1:1",
			"--peer-tls-certificates", dir}, "server-key.pem"},
		{"unknown read balancing", []string{"--disk", missing, "--size", "1M", "--read-balancing", "32K-striping"}, "--read-balancing"},
		{"unknown control group", []string{"--disk", missing, "--size", "1M", "--control-group", "no-such-group-x"}, "--control-group"},
	} {
		t.Run(c.name, func(t *testing.T) {
			cmd := exec.Command(binary, append([]string{"serve", "--control", ctl}, c.args...)...)
			var stderr bytes.Buffer
			cmd.Stderr = &stderr
			err := cmd.Run()
			if code := cmd.ProcessState.ExitCode(); code != 2 {
				t.Fatalf("exit %d (%v), want 2; stderr: %s", code, err, stderr.String())
			}
			msg := strings.TrimRight(stderr.String(), "\n")
			if strings.Count(msg, "\n") != 0 || !strings.Contains(msg, c.want) {
				t.Fatalf("stderr %q: want one line containing %q", msg, c.want)
			}
			entries, _ := os.ReadDir(dir)
			if len(entries) != 1 || entries[0].Name() != "small.img" {
				t.Fatalf("files were created: %v", entries)
			}
			if fi, _ := os.Stat(existing); fi.Size() != 4096 {
				t.Fatalf("existing disk resized to %d", fi.Size())
			}
		})
	}
}

func TestServeCreatesSparseDiskAndStopsCleanly(t *testing.T) {
	n := newNode(t, "64M", "--primary")
	n.start()
	fi, err := os.Stat(n.disk)
	if err != nil || fi.Size() != 64<<20 {
		t.Fatalf("disk: %v %v", fi, err)
	}
	st := n.status()
	if st.Name != "r0" || st.Role != "Primary" || st.Disk != "UpToDate" || st.Size != 64<<20 ||
		st.Peer.Connection != "StandAlone" {
		t.Fatalf("status: %+v", st)
	}
	if code := n.stop(); code != 0 {
		t.Fatalf("exit %d after SIGTERM\n%s", code, n.logs())
	}
	if _, err := os.Stat(n.control); !os.IsNotExist(err) {
		t.Fatalf("control socket left behind: %v", err)
	}
}

func TestServeAdvertisesFlagsToNBDInfo(t *testing.T) {
	needTools(t, "nbdinfo")
	n := newNode(t, "64M")
	n.start()
	var info struct {
		Exports []struct {
			Size         int64 `json:"export-size"`
			CanFlush     bool  `json:"can_flush"`
			CanFUA       bool  `json:"can_fua"`
			CanTrim      bool  `json:"can_trim"`
			CanZero      bool  `json:"can_zero"`
			CanMultiConn bool  `json:"can_multi_conn"`
			IsReadOnly   bool  `json:"is_read_only"`
		} `json:"exports"`
	}
	out := runCmd(t, 30*time.Second, "nbdinfo", "--json", n.uri())
	if err := json.Unmarshal([]byte(out), &info); err != nil || len(info.Exports) != 1 {
		t.Fatalf("nbdinfo: %v\n%s", err, out)
	}
	e := info.Exports[0]
	if e.Size != 64<<20 || !e.CanFlush || !e.CanFUA || !e.CanTrim || !e.CanZero || !e.CanMultiConn || e.IsReadOnly {
		t.Fatalf("nbdinfo export: %+v\n%s", e, out)
	}
	// The empty export name reaches the same export.
	runCmd(t, 30*time.Second, "nbdinfo", "nbd://"+n.nbd)
}

func TestServeFioVerify(t *testing.T) {
	needTools(t, "fio")
	n := newNode(t, "256M")
	n.start()
	for _, job := range []struct {
		name string
		args []string
	}{
		{"randwrite-4k-qd32", []string{"--rw=randwrite", "--bs=4k", "--iodepth=32", "--size=64M"}},
		{"seqwrite-1m-qd8", []string{"--rw=write", "--bs=1M", "--iodepth=8", "--size=256M"}},
		{"randwrite-4k-qd1", []string{"--rw=randwrite", "--bs=4k", "--iodepth=1", "--size=8M"}},
	} {
		t.Run(job.name, func(t *testing.T) { runFioVerify(t, n.uri(), job.args...) })
	}
	st := n.status()
	if st.NBD.Errors != 0 || st.NBD.Writes == 0 {
		t.Fatalf("nbd counters after fio: %+v", st.NBD)
	}
	// --nbd-poll is on by default: the request reads were counted, polled or slept.
	if st.NBD.PolledReads+st.NBD.SleptReads == 0 {
		t.Fatalf("no request read counted with polling on: %+v", st.NBD)
	}
}

func TestServeWithoutPolling(t *testing.T) {
	needTools(t, "fio")
	n := newNode(t, "64M", "--nbd-poll", "0")
	n.start()
	runFioVerify(t, n.uri(), "--rw=randwrite", "--bs=4k", "--iodepth=1", "--size=8M")
	if st := n.status(); st.NBD.Writes == 0 || st.NBD.PolledReads != 0 || st.NBD.SleptReads != 0 {
		t.Fatalf("nbd counters with --nbd-poll 0: %+v", st.NBD)
	}
}

// runFioVerify writes with fio's nbd engine and has it read everything back
// against crc32c checksums.
func runFioVerify(t *testing.T, uri string, args ...string) {
	t.Helper()
	out := filepath.Join(t.TempDir(), "fio.json")
	base := []string{"--name=verify", "--ioengine=nbd", "--uri=" + uri, "--verify=crc32c",
		"--do_verify=1", "--verify_fatal=1", "--verify_state_save=0", "--output-format=json", "--output=" + out}
	runCmd(t, 3*time.Minute, "fio", append(base, args...)...)
	raw, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	var res struct {
		Jobs []struct {
			Error int `json:"error"`
			Write struct {
				IOBytes int64 `json:"io_bytes"`
			} `json:"write"`
			Read struct {
				IOBytes int64 `json:"io_bytes"`
			} `json:"read"`
		} `json:"jobs"`
	}
	if err := json.Unmarshal(raw, &res); err != nil || len(res.Jobs) != 1 {
		t.Fatalf("fio output: %v\n%s", err, raw)
	}
	j := res.Jobs[0]
	if j.Error != 0 || j.Write.IOBytes == 0 || j.Read.IOBytes != j.Write.IOBytes {
		t.Fatalf("fio: error %d, wrote %d, verified %d", j.Error, j.Write.IOBytes, j.Read.IOBytes)
	}
}
