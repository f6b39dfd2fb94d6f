package main

import (
	"errors"
	"fmt"
	"os"
	"syscall"
	"testing"
	"time"
)

// TestSIGTERMRightAfterStartStopsCleanly sends SIGTERM the moment the
// control socket appears, 20 times: the daemon must already handle the
// signal (a clean stop, exit 0, within seconds), leave no process behind
// and remove its socket.
func TestSIGTERMRightAfterStartStopsCleanly(t *testing.T) {
	failed := 0
	for i := range 20 {
		if problem := sigtermAtStart(t); problem != "" {
			failed++
			t.Errorf("try %d: %s", i, problem)
		}
	}
	if failed > 0 {
		t.Logf("%d of 20 tries failed", failed)
	}
}

// sigtermAtStart starts a daemon, sends SIGTERM as soon as its control
// socket answers, and says what went wrong, if anything.
func sigtermAtStart(t *testing.T) string {
	n := newNode(t, "16M", "--primary")
	n.startPolling(200 * time.Microsecond)
	code, err := n.stopWithin(5 * time.Second)
	switch {
	case err != nil:
		return err.Error() + "\n" + n.logs()
	case code != 0:
		return fmt.Sprintf("exit %d (%v) after SIGTERM right after start\n%s", code, n.cmd.ProcessState, n.logs())
	}
	if err := syscall.Kill(-n.cmd.Process.Pid, 0); !errors.Is(err, syscall.ESRCH) {
		return fmt.Sprintf("a process of the daemon's group is left: %v", err)
	}
	if _, err := os.Stat(n.control); err == nil {
		return "control socket left behind"
	}
	return ""
}

// stopWithin sends SIGTERM and waits at most d for the daemon to exit; past
// that it dumps the daemon's goroutines into its log and kills it.
func (n *node) stopWithin(d time.Duration) (int, error) {
	n.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-n.exited:
		return n.cmd.ProcessState.ExitCode(), nil
	case <-time.After(d):
	}
	n.cmd.Process.Signal(syscall.SIGQUIT)
	select {
	case <-n.exited:
	case <-time.After(2 * time.Second):
		n.kill()
	}
	return -1, errors.New("daemon still running " + d.String() + " after SIGTERM")
}
