// Package etcdtest runs a real etcd cluster of separate processes on
// loopback for tests: Debian's etcd-server binary, free ports, temporary
// data directories, every process stopped when the test ends.
//
//	c := etcdtest.Start(t, 3)
//	cli := ... c.Endpoints() ...
//	c.Stop(1); c.Stop(2) // quorum lost
//	c.Restart(1)         // back
package etcdtest

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
)

// Cluster is a running etcd cluster.
type Cluster struct {
	t       testing.TB
	members []*member
	initial string // --initial-cluster
}

type member struct {
	name, dir      string
	client, peer   string // host:port
	cmd            *exec.Cmd
	exited         chan struct{}
	mu             sync.Mutex
	log            bytes.Buffer
	startedAtLeast bool
}

// Available says whether the etcd binary is installed.
func Available() bool {
	_, err := exec.LookPath("etcd")
	return err == nil
}

// Start runs an n-member cluster and waits until it answers. addr gives
// each listener a loopback host:port that is free (nil: the kernel's).
func Start(t testing.TB, n int, addr func(testing.TB) string) *Cluster {
	t.Helper()
	if addr == nil {
		addr = kernelPort
	}
	c := &Cluster{t: t}
	var init []string
	dir := t.TempDir()
	for i := range n {
		m := &member{name: fmt.Sprintf("e%d", i), dir: filepath.Join(dir, fmt.Sprintf("e%d", i)),
			client: addr(t), peer: addr(t)}
		c.members = append(c.members, m)
		init = append(init, m.name+"=http://"+m.peer)
	}
	c.initial = strings.Join(init, ",")
	t.Cleanup(c.stopAll)
	for i := range c.members {
		c.run(i)
	}
	c.WaitHealthy(30 * time.Second)
	return c
}

func kernelPort(t testing.TB) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

func (c *Cluster) run(i int) {
	m := c.members[i]
	state := "new"
	if m.startedAtLeast {
		state = "existing"
	}
	m.cmd = exec.Command("etcd", "--name", m.name, "--data-dir", m.dir,
		"--listen-client-urls", "http://"+m.client, "--advertise-client-urls", "http://"+m.client,
		"--listen-peer-urls", "http://"+m.peer, "--initial-advertise-peer-urls", "http://"+m.peer,
		"--initial-cluster", c.initial, "--initial-cluster-state", state,
		"--initial-cluster-token", "nbdmirror-test",
		"--heartbeat-interval", "50", "--election-timeout", "500", "--logger", "zap", "--log-level", "warn")
	m.cmd.Stdout, m.cmd.Stderr = &lockedWriter{m}, &lockedWriter{m}
	m.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := m.cmd.Start(); err != nil {
		c.t.Fatalf("etcdtest: start %s: %v", m.name, err)
	}
	m.startedAtLeast = true
	m.exited = make(chan struct{})
	go func() { m.cmd.Wait(); close(m.exited) }()
}

type lockedWriter struct{ m *member }

func (w *lockedWriter) Write(p []byte) (int, error) {
	w.m.mu.Lock()
	defer w.m.mu.Unlock()
	return w.m.log.Write(p)
}

// Endpoints are the members' client URLs.
func (c *Cluster) Endpoints() []string {
	var eps []string
	for _, m := range c.members {
		eps = append(eps, "http://"+m.client)
	}
	return eps
}

// Addrs are the members' client host:port addresses.
func (c *Cluster) Addrs() []string {
	var a []string
	for _, m := range c.members {
		a = append(a, m.client)
	}
	return a
}

// Stop kills member i (SIGKILL: a crash) and waits for it.
func (c *Cluster) Stop(i int) {
	m := c.members[i]
	if m.cmd == nil || m.cmd.Process == nil {
		return
	}
	select {
	case <-m.exited:
		return
	default:
	}
	syscall.Kill(-m.cmd.Process.Pid, syscall.SIGKILL)
	<-m.exited
}

// Restart starts a stopped member again on its data directory.
func (c *Cluster) Restart(i int) { c.run(i) }

func (c *Cluster) stopAll() {
	for i := range c.members {
		c.Stop(i)
	}
}

// Logs are the members' outputs, for a failing test's message.
func (c *Cluster) Logs() string {
	var b strings.Builder
	for _, m := range c.members {
		m.mu.Lock()
		fmt.Fprintf(&b, "--- etcd %s\n%s", m.name, m.log.String())
		m.mu.Unlock()
	}
	return b.String()
}

// Client is a client of the whole cluster, closed when the test ends.
func (c *Cluster) Client() *clientv3.Client {
	cli, err := clientv3.New(clientv3.Config{Endpoints: c.Endpoints(), DialTimeout: 2 * time.Second,
		Logger: zap.NewNop()})
	if err != nil {
		c.t.Fatal(err)
	}
	c.t.Cleanup(func() { cli.Close() })
	return cli
}

// WaitHealthy waits until a linearizable read succeeds (polling: the
// members are separate processes).
func (c *Cluster) WaitHealthy(timeout time.Duration) {
	c.t.Helper()
	cli := c.Client()
	deadline := time.Now().Add(timeout)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		_, err := cli.Get(ctx, "health")
		cancel()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			c.t.Fatalf("etcdtest: cluster not healthy after %v: %v\n%s", timeout, err, c.Logs())
		}
		time.Sleep(50 * time.Millisecond)
	}
}
