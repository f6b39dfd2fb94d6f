package main

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// ctlErr runs a control command that must fail and returns its output.
func ctlErr(t *testing.T, n *node, args ...string) string {
	t.Helper()
	out, err := exec.Command(binary, append(args, "--control", n.control)...).CombinedOutput()
	if err == nil {
		t.Fatalf("nbdmirror %v succeeded:\n%s", args, out)
	}
	return string(out)
}

func TestRoleChangesFollowTheRules(t *testing.T) {
	a, b := connectedPair(t, "32M")

	if out := ctlErr(t, b, "role", "primary"); !strings.Contains(out, "the peer is Primary") {
		t.Fatalf("promotion next to a Primary: %s", out)
	}
	client := dialNode(t, a)
	if out := ctlErr(t, a, "role", "secondary"); !strings.Contains(out, "NBD client") {
		t.Fatalf("demotion with a client connected: %s", out)
	}
	if _, err := client.WriteAt(bytes.Repeat([]byte{1}, 4096), 0, 0); err != nil {
		t.Fatalf("the client lost its export to a refused demotion: %v", err)
	}
	ctl(t, a, "role", "secondary", "--force")
	if _, err := client.ReadAt(make([]byte, 4096), 0); err == nil {
		t.Fatal("the client still reads from a demoted node")
	}
	if err := dialErr(a); err == nil || !strings.Contains(err.Error(), "Secondary") {
		t.Fatalf("a demoted node accepted a client: %v", err)
	}
	b.waitFor("the peer demoted", 10*time.Second, func(st Status) bool {
		return st.Peer.Connection == "Connected" && st.Peer.Role == "Secondary"
	})
	ctl(t, b, "role", "primary")
	b.waitFor("established again", 10*time.Second, established)
	stopPair(t, a, b)
}

// dialErr is the error of connecting an NBD client to the node, if any.
func dialErr(n *node) error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := nbdDial(ctx, n.nbd)
	if err == nil {
		c.Close()
	}
	return err
}

// TestInconsistentTargetIsNotPromoted kills the SyncSource in the middle of
// a bitmap resync: the target is Inconsistent and refuses promotion unless
// forced.
func TestInconsistentTargetIsNotPromoted(t *testing.T) {
	needTools(t, "fio")
	// A journal too small to hold the gap: the sync goes by the bitmap.
	a, b := newPair(t, "64M", []string{"--resync-rate", "4M", "--journal-size", "16M", "--journal-retain", "4M"}, nil)
	writeApart(t, a, b)
	b.waitFor("SyncTarget", 10*time.Second, func(st Status) bool {
		return st.Peer.Replication == "SyncTarget" && st.Disk == "Inconsistent"
	})
	watch := exec.Command(binary, "status", "--watch", "--interval", "100ms", "--control", a.control)
	var shown bytes.Buffer
	watch.Stdout = &shown
	watch.Start()
	time.Sleep(time.Second)
	watch.Process.Signal(os.Interrupt)
	watch.Wait()
	if !strings.Contains(shown.String(), "SyncSource: resync") || !strings.Contains(shown.String(), "%") {
		t.Fatalf("status --watch during a resync showed:\n%s", shown.String())
	}
	a.kill()
	if out := ctlErr(t, b, "role", "primary"); !strings.Contains(out, "Inconsistent") {
		t.Fatalf("promotion of an Inconsistent disk: %s", out)
	}
	ctl(t, b, "role", "primary", "--force")
	if st := b.status(); st.Role != "Primary" || st.Disk != "UpToDate" {
		t.Fatalf("after a forced promotion: %+v", st)
	}
}

func TestAttachWithoutNBDModuleSaysWhatToDo(t *testing.T) {
	if _, err := os.Stat("/dev/nbd0"); err == nil {
		t.Skip("this kernel has the nbd module; the VM test attaches for real")
	}
	out, err := exec.Command(binary, "attach", "--nbd", "127.0.0.1:10809", "/dev/nbd0").CombinedOutput()
	if err == nil || !strings.Contains(string(out), "no nbd module") || !strings.Contains(string(out), "nbdfuse") {
		t.Fatalf("attach without the module: %v\n%s", err, out)
	}
}
