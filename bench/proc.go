package main

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// groupCommand makes a command that runs in its own process group, dies
// with the harness (SIGKILL on parent death) and is killed with all its
// descendants when ctx ends.
func groupCommand(ctx context.Context, argv ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	cmd.Cancel = func() error {
		killTree(cmd.Process.Pid, syscall.SIGKILL)
		return nil
	}
	cmd.WaitDelay = 5 * time.Second
	return cmd
}

// proc is a server process running in its own process group.
type proc struct {
	name string
	cmd  *exec.Cmd
	log  string        // file holding its stdout and stderr
	done chan struct{} // closed once the process has exited
	err  error         // how it exited; read only after done
}

// startProc starts argv with its output going to logPath.
func startProc(name, logPath string, argv ...string) (*proc, error) {
	f, err := os.Create(logPath)
	if err != nil {
		return nil, fmt.Errorf("bench: %w", err)
	}
	defer f.Close()
	cmd := groupCommand(context.Background(), argv...)
	cmd.Stdout, cmd.Stderr = f, f
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("bench: start %s: %w", name, err)
	}
	p := &proc{name: name, cmd: cmd, log: logPath, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	return p, nil
}

func (p *proc) pid() int { return p.cmd.Process.Pid }

func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// stop sends SIGTERM to the process group and waits up to grace for the
// process to exit, then kills the group. Whatever is left in the group
// after the leader exits is killed too. It reports an exit other than by
// the SIGTERM it was sent.
func (p *proc) stop(grace time.Duration) error {
	if p.exited() {
		syscall.Kill(-p.pid(), syscall.SIGKILL) // its pid may be reused: only the group
		return fmt.Errorf("bench: %s had exited (%v): %s", p.name, p.err, p.logTail())
	}
	syscall.Kill(-p.pid(), syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(grace):
		killTree(p.pid(), syscall.SIGKILL)
		<-p.done
		return fmt.Errorf("bench: %s ignored SIGTERM for %v, killed", p.name, grace)
	}
	syscall.Kill(-p.pid(), syscall.SIGKILL) // whatever the leader left behind
	var exit *exec.ExitError
	if p.err != nil && !(errors.As(p.err, &exit) && terminatedBy(exit, syscall.SIGTERM)) {
		return fmt.Errorf("bench: %s exited with %v on SIGTERM: %s", p.name, p.err, p.logTail())
	}
	return nil
}

func terminatedBy(e *exec.ExitError, sig syscall.Signal) bool {
	ws, ok := e.Sys().(syscall.WaitStatus)
	return ok && ws.Signaled() && ws.Signal() == sig
}

// logTail returns the last lines of the process's output, for errors.
func (p *proc) logTail() string {
	b, _ := os.ReadFile(p.log)
	if len(b) == 0 {
		return "(no output)"
	}
	return lastLines(string(b), 5)
}

// waitReady polls until every check passes, p exits, ctx ends or timeout.
func waitReady(ctx context.Context, p *proc, timeout time.Duration, checks ...func() bool) error {
	deadline := time.Now().Add(timeout)
	for {
		ok := true
		for _, c := range checks {
			if ok = c(); !ok {
				break
			}
		}
		switch {
		case ok:
			return nil
		case p.exited():
			return fmt.Errorf("bench: %s exited while starting (%v): %s", p.name, p.err, p.logTail())
		case time.Now().After(deadline):
			return fmt.Errorf("bench: %s not ready after %v: %s", p.name, timeout, p.logTail())
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// accepts reports whether a TCP connection to addr succeeds.
func accepts(addr string) func() bool {
	return func() bool {
		c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond)
		if err != nil {
			return false
		}
		c.Close()
		return true
	}
}

// exists reports whether path exists.
func exists(path string) func() bool {
	return func() bool {
		_, err := os.Stat(path)
		return err == nil
	}
}

// freeAddr returns 127.0.0.1:PORT with a port that was free a moment ago,
// drawn below the kernel's ephemeral ports: a port from that range, free
// when looked at, is any outgoing connection's to take (a node's dial to
// its peer, fio's, a readiness check's) before the server binds it, and a
// run lost a pair to "address already in use" that way now and then. No
// port is given twice in one run.
func freeAddr() (string, error) {
	low := ephemeralLow()
	portsMu.Lock()
	defer portsMu.Unlock()
	for range 100 {
		port := low - 1 - rand.IntN(min(low-1024, 16384))
		if portsGiven[port] {
			continue
		}
		l, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(port))
		if err == nil {
			l.Close()
			portsGiven[port] = true
			return l.Addr().String(), nil
		}
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", fmt.Errorf("bench: find a free port: %w", err)
	}
	defer l.Close()
	return l.Addr().String(), nil
}

var (
	portsMu    sync.Mutex
	portsGiven = map[int]bool{}
)

// ephemeralLow is the first port the kernel hands out to outgoing
// connections (32768 by default).
func ephemeralLow() int {
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if f := strings.Fields(string(b)); err == nil && len(f) == 2 {
		if n, err := strconv.Atoi(f[0]); err == nil && n > 2048 {
			return n
		}
	}
	return 32768
}

// clockTicks is USER_HZ, the unit of the CPU times in /proc/PID/stat.
const clockTicks = 100

// processes reads every process's parent and CPU ticks from /proc.
func processes() (parent map[int]int, ticks map[int]int64, err error) {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil, nil, fmt.Errorf("bench: %w", err)
	}
	parent, ticks = map[int]int{}, map[int]int64{}
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		ppid, t, err := readStat(pid)
		if err != nil {
			continue // gone meanwhile
		}
		parent[pid], ticks[pid] = ppid, t
	}
	return parent, ticks, nil
}

// descendants returns the processes of parent that are roots or below them.
func descendants(roots []int, parent map[int]int) []int {
	var out []int
	for pid := range parent {
		for p, depth := pid, 0; p > 1 && depth < 64; p, depth = parent[p], depth+1 {
			if slices.Contains(roots, p) {
				out = append(out, pid)
				break
			}
		}
	}
	return out
}

// cpuSeconds returns the user+system CPU time used so far by the processes
// roots and all their descendants (threads included, reaped children too).
func cpuSeconds(roots []int) (float64, error) {
	parent, ticks, err := processes()
	if err != nil {
		return 0, err
	}
	var total int64
	for _, pid := range descendants(roots, parent) {
		total += ticks[pid]
	}
	return float64(total) / clockTicks, nil
}

// killTree sends sig to pid, its process group and every process below it.
// fio's job processes call setsid, so the group alone does not reach them.
func killTree(pid int, sig syscall.Signal) {
	if parent, _, err := processes(); err == nil {
		for _, p := range descendants([]int{pid}, parent) {
			syscall.Kill(p, sig)
		}
	}
	syscall.Kill(-pid, sig)
}

// readStat returns the parent pid and utime+stime+cutime+cstime of pid.
func readStat(pid int) (ppid int, ticks int64, err error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, 0, err
	}
	return parseStat(string(b))
}

// parseStat reads a /proc/PID/stat line. The command name (field 2) may
// hold spaces and parentheses, so fields are counted after its last ')'.
func parseStat(line string) (ppid int, ticks int64, err error) {
	i := strings.LastIndexByte(line, ')')
	if i < 0 {
		return 0, 0, fmt.Errorf("bench: bad stat line %q", line)
	}
	f := strings.Fields(line[i+1:]) // f[0] is field 3 (state)
	if len(f) < 15 {
		return 0, 0, fmt.Errorf("bench: short stat line %q", line)
	}
	if ppid, err = strconv.Atoi(f[1]); err != nil {
		return 0, 0, fmt.Errorf("bench: stat ppid: %w", err)
	}
	for _, k := range []int{11, 12, 13, 14} { // utime stime cutime cstime
		v, err := strconv.ParseInt(f[k], 10, 64)
		if err != nil {
			return 0, 0, fmt.Errorf("bench: stat field %d: %w", k+3, err)
		}
		ticks += v
	}
	return ppid, ticks, nil
}
