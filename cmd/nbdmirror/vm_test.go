//go:build vmtest

package main

import (
	"bufio"
	"bytes"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/nbdmirror/nbdmirror/internal/tlstest"
)

// The kernel-client test (make vmtest): a Linux guest under qemu uses the
// kernel's nbd driver against a pair on host loopback. testdata/vm/init.sh
// is the guest's side of the script; this file is the host's.

const (
	vmKillAfter = 12                // files the guest fsyncs before the Primary is killed
	vmDeadline  = 210 * time.Second // from qemu's start to the guest's RESULT line
)

// TestVMKernelClient boots the guest once: it attaches /dev/nbd0 to the
// Primary with nbdmirror attach and /dev/nbd1 with nbd-client, checks the
// flags the kernel took, raw I/O and ext4, then writes and fsyncs files while
// the host SIGKILLs the Primary. Once the Secondary has refused the guest,
// the host promotes it; the guest attaches to the new Primary, runs e2fsck
// and finds every fsynced file. The daemons' counters must show the kernel's
// FLUSH, FUA writes and TRIMs.
func TestVMKernelClient(t *testing.T) {
	qemu := vmTools(t)
	dir := t.TempDir()
	// The export also takes TLS clients (--tls on) with certificates valid
	// for the guest's view of the two hosts; the guest gets a client's.
	ca := tlstest.NewCA(t, "vm test CA")
	ca.ServerIPs = []net.IP{net.IPv4(10, 0, 2, 100), net.IPv4(10, 0, 2, 101)}
	buildGuest(t, dir, ca.ClientDir(t, nil))

	tlsFlags := []string{"--tls", "on", "--tls-certificates", ca.Dir(t)}
	a, b := newPair(t, "128M", tlsFlags, tlsFlags)
	a.start()
	b.start()
	a.waitFor("connected", 10*time.Second, established)
	vm := startVM(t, qemu, dir, a.nbd, b.nbd)

	var beforeKill Status
	killed := false
	deadline := time.After(vmDeadline)
	for result := ""; result == ""; {
		var line string
		select {
		case l, ok := <-vm.lines:
			if !ok {
				t.Fatalf("qemu exited before the guest's result: %v\n%s", vm.cmd.ProcessState, vm.console())
			}
			line = l
		case <-deadline:
			t.Fatalf("no result from the guest after %v\n%s", vmDeadline, vm.console())
		}
		t.Log(line)
		if n, ok := strings.CutPrefix(line, "fsynced "); ok && !killed {
			if count, _ := strconv.Atoi(n); count >= vmKillAfter {
				beforeKill = a.status()
				a.kill()
				killed = true
				t.Logf("host: Primary killed after the guest's %d fsynced files", count)
			}
		}
		if strings.HasPrefix(line, "failover: refused by the Secondary") {
			b.waitFor("apart", 10*time.Second, apart)
			ctl(t, b, "role", "primary")
			t.Log("host: Secondary promoted")
		}
		if r, ok := strings.CutPrefix(line, "RESULT: "); ok {
			result = r
			if result != "PASS" {
				t.Fatalf("guest: %s\n%s\nsecondary:\n%s", result, vm.console(), b.logs())
			}
		}
	}
	vm.wait(30 * time.Second)

	after := b.status()
	for _, c := range []struct {
		who string
		st  NBDStatus
	}{{"old Primary before the kill", beforeKill.NBD}, {"new Primary", after.NBD}} {
		t.Logf("host: %s counted reads=%d writes=%d fua_writes=%d flushes=%d trims=%d zeroes=%d errors=%d",
			c.who, c.st.Reads, c.st.Writes, c.st.FUAWrites, c.st.Flushes, c.st.Trims, c.st.Zeroes, c.st.Errors)
		if c.st.Flushes == 0 || c.st.FUAWrites == 0 || c.st.Trims == 0 {
			t.Errorf("%s: the kernel's FLUSH, FUA writes and TRIMs did not all arrive", c.who)
		}
	}
	if n := beforeKill.NBD.TLSConnections; n < 2 {
		t.Errorf("the old Primary counted %d TLS connections, want 2 (attach and nbd-client)", n)
	}
}

// vmTools finds qemu and socat, or fails saying what to install: the test is
// only run on purpose (make vmtest), so it never skips.
func vmTools(t *testing.T) string {
	t.Helper()
	qemu, err := exec.LookPath("qemu-system-x86_64")
	if err != nil {
		t.Fatal("qemu-system-x86_64 not found: apt-get install qemu-system-x86 (make vmtest does, as root)")
	}
	if _, err := exec.LookPath("socat"); err != nil {
		t.Fatal("socat not found (qemu runs one per guest connection): apt-get install socat (make vmtest does, as root)")
	}
	return qemu
}

// buildGuest writes dir/vmlinuz and dir/initrd.cpio, with a static nbdmirror.
func buildGuest(t *testing.T, dir, tlsDir string) {
	t.Helper()
	bin := filepath.Join(dir, "nbdmirror-static")
	cmd := exec.Command("go", "build", "-o", bin, ".")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("static build: %v\n%s", err, out)
	}
	script, err := filepath.Abs("../../testdata/vm/build-initramfs.sh")
	if err != nil {
		t.Fatal(err)
	}
	out, err := runCmdErr(4*time.Minute, script, dir, bin, tlsDir)
	if err != nil {
		t.Fatalf("build-initramfs.sh: %v\n%s", err, out)
	}
	t.Log(strings.TrimSpace(out))
}

// vm is the qemu process and what its serial console printed.
type vm struct {
	cmd    *exec.Cmd
	lines  chan string // the guest's VMTEST lines, prefix cut; closed when qemu exits; room for all
	exited chan struct{}
	mu     sync.Mutex
	out    bytes.Buffer // the whole console and qemu's own messages
}

// startVM boots the guest with the Primary's NBD address forwarded to
// 10.0.2.100:10809 and the Secondary's to 10.0.2.101:10809. Each guest
// connection gets its own socat, so the guest can connect many times.
func startVM(t *testing.T, qemu, dir, primary, secondary string) *vm {
	t.Helper()
	fwd := func(guest, host string) string {
		return fmt.Sprintf("guestfwd=tcp:%s-cmd:socat - TCP:%s", guest, host)
	}
	accel := vmAccel()
	args := append(accel,
		"-smp", "2", "-m", "512", "-M", "q35", "-nodefaults", "-display", "none", "-no-reboot",
		"-serial", "stdio", "-monitor", "none",
		"-kernel", filepath.Join(dir, "vmlinuz"), "-initrd", filepath.Join(dir, "initrd.cpio"),
		"-append", "console=ttyS0 quiet panic=-1 rdinit=/init",
		"-netdev", "user,id=n0,restrict=on,net=10.0.2.0/24,"+
			fwd("10.0.2.100:10809", primary)+","+fwd("10.0.2.101:10809", secondary),
		"-device", "e1000,netdev=n0,romfile=")
	v := &vm{cmd: exec.Command(qemu, args...), lines: make(chan string, 4096), exited: make(chan struct{})}
	v.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true} // qemu and its socats
	stdout, err := v.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	v.cmd.Stderr = v.cmd.Stdout
	if err := v.cmd.Start(); err != nil {
		t.Fatalf("qemu: %v", err)
	}
	t.Logf("host: qemu %s", strings.Join(accel, " "))
	go v.read(stdout)
	t.Cleanup(v.kill)
	return v
}

// vmAccel picks KVM only where it can run a stock kernel: /dev/kvm served by
// kvm_pvm (nested virtualization without VMX) hangs after the BIOS.
func vmAccel() []string {
	_, pvm := os.Stat("/sys/module/kvm_pvm")
	_, intel := os.Stat("/sys/module/kvm_intel")
	_, amd := os.Stat("/sys/module/kvm_amd")
	if syscall.Access("/dev/kvm", unix.R_OK|unix.W_OK) == nil && pvm != nil && (intel == nil || amd == nil) {
		return []string{"-accel", "kvm", "-cpu", "host"}
	}
	return []string{"-accel", "tcg,thread=multi", "-cpu", "max"}
}

func (v *vm) read(r interface{ Read([]byte) (int, error) }) {
	s := bufio.NewScanner(r)
	for s.Scan() {
		line := strings.TrimRight(s.Text(), "\r")
		v.mu.Lock()
		v.out.WriteString(line + "\n")
		v.mu.Unlock()
		if l, ok := strings.CutPrefix(line, "VMTEST: "); ok {
			v.lines <- l
		}
	}
	v.cmd.Wait()
	close(v.lines)
	close(v.exited)
}

func (v *vm) console() string {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.out.String()
}

// wait gives the guest time to power off, then kills it.
func (v *vm) wait(d time.Duration) {
	select {
	case <-v.exited:
	case <-time.After(d):
		v.kill()
	}
}

// kill SIGKILLs qemu's process group and waits for it.
func (v *vm) kill() {
	select {
	case <-v.exited:
		return
	default:
	}
	syscall.Kill(-v.cmd.Process.Pid, syscall.SIGKILL)
	<-v.exited
}
