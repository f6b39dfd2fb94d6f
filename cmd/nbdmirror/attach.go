package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/pflag"
	"golang.org/x/sys/unix"

	"github.com/nbdmirror/nbdmirror/internal/tlsdir"
	"github.com/nbdmirror/nbdmirror/nbdserver/nbdclient"
)

// The kernel nbd driver's ioctls (linux/nbd.h: _IO(0xab, n)).
const (
	nbdSetSock       = 0xab00
	nbdSetBlksize    = 0xab01
	nbdDoIt          = 0xab03
	nbdClearSock     = 0xab04
	nbdClearQue      = 0xab05
	nbdSetSizeBlocks = 0xab07
	nbdDisconnect    = 0xab08
	nbdSetTimeout    = 0xab09
	nbdSetFlags      = 0xab0a
)

// attachBlockSize is the block size given to the kernel.
const attachBlockSize = 4096

// attachChildEnv marks the background process that holds the device.
const attachChildEnv = "NBDMIRROR_ATTACH_CHILD"

const noNBDModule = `%s does not exist: this kernel has no nbd module loaded (try "modprobe nbd").
Without it, use the export through FUSE: nbdfuse DIR nbd://%s/%s & losetup --find --show DIR/nbd
or, where the module exists, nbd-client HOST PORT %s -N %s`

func runAttach(args []string, stdout io.Writer) error {
	fs := pflag.NewFlagSet("attach", pflag.ContinueOnError)
	fs.SetOutput(io.Discard)
	addr := fs.String("nbd", "127.0.0.1:10809", "address of the NBD export")
	export := fs.String("export", "r0", "export name")
	timeout := fs.Duration("timeout", 30*time.Second, "the kernel gives up a request after this long")
	foreground := fs.Bool("foreground", false, "stay in the foreground holding the device")
	tlsDir := fs.String("tls-certificates", "", "connect with TLS: directory of ca-cert.pem and, for --tls-verify-peer, client-cert.pem and client-key.pem")
	if err := parseFlags(fs, args, stdout, "attach --nbd ADDR [--export NAME] [--tls-certificates DIR] /dev/nbdN"); err != nil {
		return err
	}
	var tlsCfg *tls.Config
	if *tlsDir != "" {
		var err error
		if tlsCfg, err = attachTLS(*tlsDir, *addr); err != nil {
			return usagef("--tls-certificates: %v", err)
		}
	}
	if fs.NArg() != 1 {
		return usagef("want one argument: the device, e.g. /dev/nbd0")
	}
	dev := fs.Arg(0)
	if _, err := os.Stat(dev); errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf(noNBDModule, dev, *addr, *export, dev, *export)
	}
	if !*foreground && os.Getenv(attachChildEnv) == "" {
		return attachInBackground(dev)
	}
	return attach(dev, *addr, *export, *timeout, tlsCfg)
}

// attachInBackground runs this command again as a detached process that
// holds the device, and returns once the kernel has the connection.
func attachInBackground(dev string) error {
	pidFile := nbdPidFile(dev)
	if pid, err := os.ReadFile(pidFile); err == nil {
		return fmt.Errorf("attach: %s is in use (pid %s): attached, or still open after its connection ended",
			dev, strings.TrimSpace(string(pid)))
	}
	self, err := os.Executable()
	if err != nil {
		return err
	}
	cmd := exec.Command(self, os.Args[1:]...)
	cmd.Env = append(os.Environ(), attachChildEnv+"=1")
	var stderr strings.Builder
	cmd.Stderr = &stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return err
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); {
		select {
		case err := <-exited:
			if msg := strings.TrimSpace(stderr.String()); msg != "" {
				return errors.New(strings.TrimPrefix(msg, "nbdmirror attach: "))
			}
			return fmt.Errorf("attach %s: %v", dev, err)
		case <-time.After(20 * time.Millisecond):
		}
		if _, err := os.Stat(pidFile); err == nil {
			return nil
		}
	}
	cmd.Process.Kill()
	return fmt.Errorf("attach %s: the kernel did not take the connection within 30s", dev)
}

// nbdPidFile exists while the kernel holds a connection for the device; it
// names the thread that serves it (NBD_DO_IT).
func nbdPidFile(dev string) string {
	return filepath.Join("/sys/block", filepath.Base(dev), "pid")
}

// attach connects to the export, hands the socket and the export's flags to
// the kernel, and serves the device until it is detached or the connection
// ends (NBD_DO_IT returns).
func attach(dev, addr, export string, timeout time.Duration, tlsCfg *tls.Config) error {
	// The kernel binds the device's setup to the calling thread, and a
	// signal that reaches the thread waiting in NBD_DO_IT tears the
	// connection down: one thread for all of it, with signals blocked.
	// The thread is not handed back to the runtime.
	runtime.LockOSThread()
	blockSignals()
	// The parent reads stderr only until the device is up; an error
	// written later must not kill the process before it cleans up.
	signal.Ignore(syscall.SIGPIPE)
	f, err := os.OpenFile(dev, os.O_RDWR, 0)
	if err != nil {
		return fmt.Errorf("attach: %w", err)
	}
	defer f.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	nc, err := (&net.Dialer{}).DialContext(ctx, "tcp", addr)
	if err != nil {
		return fmt.Errorf("attach: %w", err)
	}
	defer nc.Close()
	tc, size, flags, err := nbdclient.NegotiateTLS(ctx, nc, export, tlsCfg)
	if err != nil {
		return fmt.Errorf("attach: %w", err)
	}
	sock, err := kernelSocket(tc)
	if err != nil {
		return fmt.Errorf("attach: %w", err)
	}
	defer sock.Close()
	defer tc.Close()
	fd := f.Fd()
	for _, c := range []struct {
		name     string
		req, arg uintptr
	}{
		{"NBD_CLEAR_SOCK", nbdClearSock, 0},
		{"NBD_SET_BLKSIZE", nbdSetBlksize, attachBlockSize},
		{"NBD_SET_SIZE_BLOCKS", nbdSetSizeBlocks, uintptr(size / attachBlockSize)},
		{"NBD_SET_TIMEOUT", nbdSetTimeout, uintptr(timeout / time.Second)},
		{"NBD_SET_FLAGS", nbdSetFlags, uintptr(flags)}, // FLUSH, FUA, TRIM: write-back cache with FUA
		{"NBD_SET_SOCK", nbdSetSock, sock.Fd()},
	} {
		if _, _, errno := unix.Syscall(unix.SYS_IOCTL, fd, c.req, c.arg); errno != 0 {
			return fmt.Errorf("attach: %s on %s: %w", c.name, dev, errno)
		}
	}
	_, _, errno := unix.Syscall(unix.SYS_IOCTL, fd, nbdDoIt, 0) // until detach
	unix.Syscall(unix.SYS_IOCTL, fd, nbdClearQue, 0)
	unix.Syscall(unix.SYS_IOCTL, fd, nbdClearSock, 0)
	if errno != 0 && errno != unix.EPIPE && errno != unix.ECONNRESET {
		return fmt.Errorf("attach: NBD_DO_IT on %s: %w", dev, errno)
	}
	return nil
}

// attachTLS is the TLS configuration for the export at addr, from the
// client directory dir.
func attachTLS(dir, addr string) (*tls.Config, error) {
	cfg, err := tlsdir.Client(dir)
	if err != nil {
		return nil, err
	}
	cfg.ServerName, _, err = net.SplitHostPort(addr)
	return cfg, err
}

// kernelSocket returns the socket to hand the kernel for nc. The kernel's
// nbd driver speaks the protocol in the clear on the socket it is given:
// for a plain TCP connection that is the connection itself; for TLS it is
// one end of a Unix socket pair, and two goroutines copy between the other
// end and the TLS connection until either side closes (nbd-client's TLS
// works the same way).
func kernelSocket(nc net.Conn) (*os.File, error) {
	if tc, ok := nc.(*net.TCPConn); ok {
		return tc.File()
	}
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("socketpair: %w", err)
	}
	kernel, local := os.NewFile(uintptr(fds[0]), "nbd-kernel"), os.NewFile(uintptr(fds[1]), "nbd-tls-proxy")
	lc, err := net.FileConn(local)
	local.Close()
	if err != nil {
		kernel.Close()
		return nil, err
	}
	pipe := func(dst, src net.Conn) {
		io.Copy(dst, src)
		dst.Close()
		src.Close()
	}
	go pipe(nc, lc)
	go pipe(lc, nc)
	return kernel, nil
}

// blockSignals blocks every signal on the calling thread.
func blockSignals() {
	var all unix.Sigset_t
	for i := range all.Val {
		all.Val[i] = ^uint64(0)
	}
	unix.PthreadSigmask(unix.SIG_BLOCK, &all, nil)
}

func runDetach(args []string, stdout io.Writer) error {
	fs := pflag.NewFlagSet("detach", pflag.ContinueOnError)
	fs.SetOutput(io.Discard)
	if err := parseFlags(fs, args, stdout, "detach /dev/nbdN"); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		return usagef("want one argument: the device, e.g. /dev/nbd0")
	}
	dev := fs.Arg(0)
	f, err := os.OpenFile(dev, os.O_RDWR, 0)
	if errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("%s does not exist: this kernel has no nbd module loaded", dev)
	}
	if err != nil {
		return fmt.Errorf("detach: %w", err)
	}
	pid, err := os.ReadFile(nbdPidFile(dev))
	if err != nil {
		f.Close()
		fmt.Fprintf(stdout, "%s is not attached\n", dev)
		return nil
	}
	_, _, errno := unix.Syscall(unix.SYS_IOCTL, f.Fd(), nbdDisconnect, 0)
	if errno == 0 {
		unix.Syscall(unix.SYS_IOCTL, f.Fd(), nbdClearSock, 0)
	}
	f.Close() // an open device keeps the kernel's connection state alive
	if errno != 0 {
		return fmt.Errorf("detach: NBD_DISCONNECT on %s: %w", dev, errno)
	}
	return waitDetached(dev, string(pid))
}

// waitDetached waits until the thread that served the device is gone or the
// kernel dropped the device's pid file, so that the device can be attached
// again. The file stays while a file system is still mounted on the device.
func waitDetached(dev, pid string) error {
	pid = strings.TrimSpace(pid)
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		now, err := os.ReadFile(nbdPidFile(dev))
		if err != nil || strings.TrimSpace(string(now)) != pid {
			return nil
		}
		if _, err := os.Stat(filepath.Join("/proc", pid)); errors.Is(err, os.ErrNotExist) {
			return nil
		}
	}
	return fmt.Errorf("detach: %s: pid %s still serves it after 30s", dev, pid)
}
