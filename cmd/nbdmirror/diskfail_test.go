package main

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nbdmirror/nbdmirror/internal/checker"
)

// failingFile is a disk image on a FUSE mount that fails on command:
// nbdkit's file plugin behind its error filter, mounted by nbdfuse. Once
// fail is called, every read, write, flush, trim and zero of the file
// fails with EIO, until heal.
type failingFile struct {
	t        testing.TB
	path     string // the file a daemon opens as its disk
	backing  string // the image behind it, to compare once all is stopped
	trigger  string
	fuseDir  string
	nbdkit   *exec.Cmd
	fuse     *exec.Cmd
	nbdkitMu bytes.Buffer
}

// newFailingFile makes a size-byte image and mounts it. Everything goes
// away when the test ends, after the daemons started later.
func newFailingFile(t testing.TB, size int64) *failingFile {
	t.Helper()
	needTools(t, "nbdkit", "nbdfuse", "fusermount3")
	if os.Geteuid() != 0 {
		t.Skip("FUSE mounts need root")
	}
	if _, err := os.Stat("/dev/fuse"); err != nil {
		t.Skip("no /dev/fuse")
	}
	dir := t.TempDir()
	f := &failingFile{t: t, backing: filepath.Join(dir, "backing.img"), trigger: filepath.Join(dir, "fail"),
		fuseDir: filepath.Join(dir, "fuse")}
	if err := os.Mkdir(f.fuseDir, 0o755); err != nil {
		t.Fatal(err)
	}
	img, err := os.Create(f.backing)
	if err == nil {
		err = img.Truncate(size)
		img.Close()
	}
	if err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(dir, "nbdkit.sock")
	f.nbdkit = exec.Command("nbdkit", "-f", "-U", sock, "--filter=error", "file", "file="+f.backing,
		"error=EIO", "error-rate=1", "error-file="+f.trigger)
	t.Cleanup(f.unmount)
	f.start(f.nbdkit)
	waitPath(t, sock, func() string { return f.nbdkitMu.String() })
	f.fuse = exec.Command("nbdfuse", f.fuseDir, "nbd+unix:///?socket="+sock)
	f.start(f.fuse)
	f.path = filepath.Join(f.fuseDir, "nbd")
	waitPath(t, f.path, func() string { return f.nbdkitMu.String() })
	return f
}

func (f *failingFile) start(c *exec.Cmd) {
	c.Stdout, c.Stderr = &f.nbdkitMu, &f.nbdkitMu
	c.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := c.Start(); err != nil {
		f.t.Fatal(err)
	}
}

// waitPath waits for a file to appear (a socket, the FUSE file).
func waitPath(t testing.TB, path string, logs func() string) {
	t.Helper()
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if fi, err := os.Stat(path); err == nil && (fi.Mode()&os.ModeSocket != 0 || fi.Size() > 0) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s did not appear: %s", path, logs())
		}
	}
}

// fail makes every operation on the file fail from now on.
func (f *failingFile) fail() {
	f.t.Helper()
	if err := os.WriteFile(f.trigger, nil, 0o600); err != nil {
		f.t.Fatal(err)
	}
}

// heal ends the failures.
func (f *failingFile) heal() {
	f.t.Helper()
	if err := os.Remove(f.trigger); err != nil {
		f.t.Fatal(err)
	}
}

// unmount stops nbdfuse and nbdkit, ignoring what is already gone.
func (f *failingFile) unmount() {
	if f.fuse != nil && f.fuse.Process != nil {
		exec.Command("fusermount3", "-u", f.fuseDir).Run()
		stopProc(f.fuse, func() { exec.Command("umount", "-l", f.fuseDir).Run() })
		f.fuse = nil
	}
	if f.nbdkit != nil && f.nbdkit.Process != nil {
		f.nbdkit.Process.Signal(syscall.SIGTERM)
		stopProc(f.nbdkit, nil)
		f.nbdkit = nil
	}
}

// stopProc waits 5 s for c to exit, then kills its process group.
func stopProc(c *exec.Cmd, also func()) {
	done := make(chan struct{})
	go func() { c.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		syscall.Kill(-c.Process.Pid, syscall.SIGKILL)
		if also != nil {
			also()
		}
		<-done
	}
}

// onDisk makes the node use path as its disk, its metadata staying in its
// own folder.
func (n *node) onDisk(path string) {
	for i, a := range n.args {
		if a == "--disk" {
			n.args[i+1] = path
		}
	}
	n.disk = path
	n.args = append(n.args, "--meta-dir", filepath.Join(n.dir, "meta"))
}

// stampedLoad runs the checker's stamped writes (16 in flight, FUA and
// FLUSH mixed) against n until stop is called, which returns Run's result
// and closes the client.
func stampedLoad(t testing.TB, ck *checker.Checker, n *node) (stop func() error) {
	return startLoad(t, ck, n).stop
}

// load is a stamped write load running against a node.
type load struct {
	dev    io.Closer
	cancel context.CancelFunc
	ended  chan struct{} // closed when Run has returned, with err
	err    error
}

// startLoad starts the checker's stamped writes against n.
func startLoad(t testing.TB, ck *checker.Checker, n *node) *load {
	dev := dialNode(t, n)
	ctx, cancel := context.WithCancel(context.Background())
	l := &load{dev: dev, cancel: cancel, ended: make(chan struct{})}
	go func() {
		l.err = ck.Run(ctx, dev)
		close(l.ended)
	}()
	return l
}

// stop ends the load, and returns Run's result. It may be called again.
func (l *load) stop() error {
	l.cancel()
	<-l.ended
	l.dev.Close()
	return l.err
}

// failure waits up to timeout for the load to end on its own, at its first
// failed request, and returns that failure (nil if it ran on), then stops
// it.
func (l *load) failure(timeout time.Duration) error {
	select {
	case <-l.ended:
	case <-time.After(timeout):
	}
	return l.stop()
}

func newChecker(blocks int) *checker.Checker {
	return checker.New(checker.Options{Blocks: blocks, InFlight: 16, FUAEvery: 5, FlushEvery: 50, Seed: 19})
}

// verifyOn reads every stamped block back through n and fails on any
// acknowledged write lost or torn.
func verifyOn(t testing.TB, ck *checker.Checker, n *node, what string) {
	t.Helper()
	rep, err := ck.Verify(dialNode(t, n))
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
	t.Logf("%s: %d writes acknowledged, %d blocks checked: lost %d, torn %d, foreign %d",
		what, rep.Acked, rep.Checked, rep.Lost, rep.Torn, rep.Foreign)
	if !rep.OK() {
		t.Fatalf("%s: %s", what, rep.FirstBad)
	}
}

// sameFiles fails unless two images hold the same bytes.
func sameFiles(t testing.TB, a, b string) {
	t.Helper()
	if fileSum(t, a) != fileSum(t, b) {
		t.Fatalf("the images %s and %s differ", a, b)
	}
}

// diskless says the node's disk is out and its first error is shown.
func diskless(st Status) bool {
	return st.Disk == "Diskless" && st.DiskError != nil
}

// plainStatus is `nbdmirror status` of the node.
func plainStatus(t testing.TB, n *node) string {
	t.Helper()
	return runCmd(t, 10*time.Second, binary, "status", "--control", n.control)
}

// TestSecondaryDiskFailsUnderLoad: the Secondary's disk fails (EIO on
// every operation) under the Primary's stamped writes. The client sees no
// error; the Secondary goes Diskless, StandAlone with the reason and its
// first error; the Primary goes on alone. Once the disk works again, disk
// attach (the same disk) resyncs it to UpToDate; then disk detach and disk
// attach of a fresh file under the load make a full sync, and after a
// clean stop both images are identical.
func TestSecondaryDiskFailsUnderLoad(t *testing.T) {
	ff := newFailingFile(t, 64<<20)
	metricsAddr := freeAddr(t)
	a, b := newPair(t, "64M", nil, []string{"--metrics-listen", metricsAddr})
	b.onDisk(ff.path)
	startFullySynced(t, a, b)

	ck := newChecker(4096)
	stop := stampedLoad(t, ck, a)
	waitAcked(t, ck, 2000)
	ff.fail()
	st := b.waitFor("the Secondary Diskless", 30*time.Second, diskless)
	acked := ck.Acked()
	waitAcked(t, ck, acked+2000)
	if err := stop(); err != nil {
		t.Fatalf("the client saw an error: %v\n%s", err, a.logs())
	}
	plain := plainStatus(t, b)
	t.Logf("the Secondary: %s", plain)
	if st.Peer.Connection != "StandAlone" || st.StandAlone == "" {
		t.Fatalf("the Diskless Secondary: %s (%q)", st.Peer.Connection, st.StandAlone)
	}
	for _, want := range []string{"disk:Diskless", "disk-error: ", "input/output error", "peer connection:StandAlone (the disk failed"} {
		if !strings.Contains(plain, want) {
			t.Errorf("plain status lacks %q", want)
		}
	}
	metrics := scrape(t, metricsAddr)
	for _, want := range []string{`nbdmirror_disk_errors_total{op="`, `nbdmirror_diskless{resource="r0"} 1`} {
		if !strings.Contains(metrics, want) {
			t.Errorf("metrics lack %q", want)
		}
	}
	if pst := a.status(); pst.Peer.Connection == "Connected" || pst.Disk != "UpToDate" {
		t.Fatalf("the Primary: disk %s, peer %s", pst.Disk, pst.Peer.Connection)
	}

	ff.heal()
	ctl(t, b, "disk", "attach")
	a.waitFor("resynced", 60*time.Second, func(st Status) bool { return established(st) && st.Stats.OutOfSyncBytes == 0 })
	verifyOn(t, ck, a, "the Primary")

	// The disk replaced, on command, under the load: a full sync.
	stop = stampedLoad(t, ck, a)
	waitAcked(t, ck, ck.Acked()+1000)
	ctl(t, b, "disk", "detach")
	fresh := filepath.Join(t.TempDir(), "fresh.img")
	ctl(t, b, "disk", "attach", "--disk", fresh)
	waitAcked(t, ck, ck.Acked()+1000)
	if err := stop(); err != nil {
		t.Fatalf("the client saw an error: %v", err)
	}
	a.waitFor("the fresh disk synced", 60*time.Second, func(st Status) bool {
		return established(st) && st.Stats.OutOfSyncBytes == 0
	})
	verifyOn(t, ck, a, "the Primary")
	b.disk = fresh
	stopPair(t, a, b)
}

// startFullySynced starts a pair whose disks exist (of unrelated data,
// as a disk on a FUSE mount must): the Secondary gives in (resolve
// --discard-my-data) and takes the Primary's data by a full sync.
func startFullySynced(t testing.TB, a, b *node) {
	t.Helper()
	for _, n := range []*node{a, b} {
		if _, err := os.Stat(n.disk); err != nil {
			if err := os.WriteFile(n.disk, nil, 0o600); err != nil {
				t.Fatal(err)
			}
			if err := os.Truncate(n.disk, 64<<20); err != nil {
				t.Fatal(err)
			}
		}
	}
	b.start()
	ctl(t.(*testing.T), b, "resolve", "--discard-my-data")
	a.start()
	a.waitFor("in sync", 60*time.Second, func(st Status) bool { return established(st) && st.Stats.OutOfSyncBytes == 0 })
}

// waitAcked waits until the checker counted n acknowledged writes.
func waitAcked(t testing.TB, ck *checker.Checker, n uint64) {
	t.Helper()
	for deadline := time.Now().Add(60 * time.Second); ck.Acked() < n; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("only %d writes acknowledged in 60 s, waiting for %d", ck.Acked(), n)
		}
	}
}

// underLoadUntilDiskless runs the stamped load on the Primary a while
// fault (called after 2000 writes were acknowledged) takes its storage
// out; the client must see no error, a go Diskless with its first error
// while it stays Connected, and 2000 more writes be acknowledged after.
func underLoadUntilDiskless(t *testing.T, ck *checker.Checker, a *node, fault func()) Status {
	t.Helper()
	stop := stampedLoad(t, ck, a)
	waitAcked(t, ck, 2000)
	fault()
	st := a.waitFor("the Primary Diskless", 30*time.Second, diskless)
	waitAcked(t, ck, ck.Acked()+2000)
	if err := stop(); err != nil {
		t.Fatalf("the client saw an error: %v\n%s", err, a.logs())
	}
	t.Logf("the Primary: %s", plainStatus(t, a))
	if st = a.status(); st.Peer.Connection != "Connected" || st.Peer.Disk != "UpToDate" || !diskless(st) {
		t.Fatalf("the Diskless Primary: %+v", st)
	}
	return st
}

// attachUnderLoad reads every acknowledged write back through the
// Diskless Primary a (from its peer), then gives a a fresh disk (disk
// attach --disk NEW) while the stamped writes go on: a is UpToDate on it
// with every acknowledged write, and after a clean stop both images are
// identical.
func attachUnderLoad(t *testing.T, ck *checker.Checker, a, b *node) {
	t.Helper()
	verifyOn(t, ck, a, "the Diskless Primary, reading through its peer")
	stop := stampedLoad(t, ck, a)
	waitAcked(t, ck, ck.Acked()+1000)
	fresh := filepath.Join(t.TempDir(), "fresh.img")
	start := time.Now()
	ctl(t, a, "disk", "attach", "--disk", fresh)
	took := time.Since(start)
	waitAcked(t, ck, ck.Acked()+1000)
	if err := stop(); err != nil {
		t.Fatalf("the client saw an error during the attach: %v\n%s", err, a.logs())
	}
	st := a.status()
	t.Logf("disk attach took %v; the Primary: %s", took.Round(time.Millisecond), plainStatus(t, a))
	if !established(st) || st.DiskError != nil {
		t.Fatalf("after disk attach: %+v", st)
	}
	verifyOn(t, ck, a, "the Primary on its new disk")
	a.disk = fresh
	stopPair(t, a, b)
}

// TestPrimaryDiskFailsUnderLoad: the Primary's disk fails (EIO on every
// operation) under stamped writes. The client sees no error: the Primary
// goes Diskless, shows its first error, and reads and writes through its
// peer. A fresh disk attached under the same load is filled from the peer.
func TestPrimaryDiskFailsUnderLoad(t *testing.T) {
	ff := newFailingFile(t, 64<<20)
	a, b := newPair(t, "64M", nil, nil)
	a.onDisk(ff.path)
	startFullySynced(t, a, b)
	ck := newChecker(4096)
	underLoadUntilDiskless(t, ck, a, ff.fail)
	attachUnderLoad(t, ck, a, b)
}

// TestPrimaryJournalFullUnderLoad: the file system of the Primary's
// journal fills up under stamped writes. As with a failing disk, the
// client sees no error and the Primary goes on Diskless through its peer;
// once space is freed, a fresh disk is attached under load.
func TestPrimaryJournalFullUnderLoad(t *testing.T) {
	mnt := smallExt4(t, 32<<20)
	a, b := newPair(t, "64M", []string{"--meta-dir", filepath.Join(mnt, "meta")}, nil)
	a.start()
	b.start()
	a.waitFor("connected", 20*time.Second, established)
	ballast := fillUp(t, mnt, 1<<20)
	ck := newChecker(4096)
	st := underLoadUntilDiskless(t, ck, a, func() {})
	if !strings.Contains(st.DiskError.Error, "no space left on device") {
		t.Fatalf("disk_error %+v", st.DiskError)
	}
	os.Remove(ballast)
	attachUnderLoad(t, ck, a, b)
}

// TestSecondaryJournalFullUnderLoad: the file system of the Secondary's
// journal fills up under the Primary's stamped writes. The client sees no
// error and no write waits past --peer-timeout; the Secondary goes
// Diskless and StandAlone with the reason, with no storm of connections;
// once space is freed disk attach brings it back to UpToDate by a resync,
// and after a clean stop both images are identical.
func TestSecondaryJournalFullUnderLoad(t *testing.T) {
	mnt := smallExt4(t, 32<<20)
	a, b := newPair(t, "64M", []string{"--peer-timeout", peerTimeout.String()},
		[]string{"--meta-dir", filepath.Join(mnt, "meta"), "--journal-size", "8M", "--journal-retain", "2M", "--peer-timeout", peerTimeout.String()})
	a.start()
	b.start()
	a.waitFor("connected", 20*time.Second, established)
	// Nothing left: the next block the Secondary's journal takes (a
	// segment, a spare, its checkpoint file) fails. With room left, a
	// journal that had made all its segment files before the fill
	// recycled them for good, and never filled up.
	ballast := fillUp(t, mnt, 0)
	needTools(t, "fio")
	fio := startFio(t, a.uri(), "--rw=randwrite", "--bs=4k", "--iodepth=16", "--size=64M", "--refill_buffers",
		"--time_based", "--runtime=1h")
	st := b.waitFor("the Secondary Diskless", 60*time.Second, diskless)
	from := time.Now()
	const window = 10 * time.Second
	time.Sleep(window) // the scenario's length: writes go on meanwhile
	res := fio.stop(t, 2*peerTimeout)
	checkFio(t, res)
	ok, bad := peerAttempts(a.logs(), from)
	t.Logf("the Secondary: %s", plainStatus(t, b))
	t.Logf("in the %v after the Secondary went Diskless: %d peer connections came up, %d were refused", window, ok, bad)
	if st.Peer.Connection != "StandAlone" || !strings.Contains(st.StandAlone, "no space left on device") {
		t.Fatalf("the Diskless Secondary: %s (%q)", st.Peer.Connection, st.StandAlone)
	}
	if ok > 0 || bad > int(window/time.Second) {
		t.Fatalf("%d connections and %d refusals in %v", ok, bad, window)
	}
	os.Remove(ballast)
	ctl(t, b, "disk", "attach")
	a.waitFor("resynced", 60*time.Second, func(st Status) bool { return established(st) && st.Stats.OutOfSyncBytes == 0 })
	stopPair(t, a, b)
}

// fillUp fills the file system at mnt but for about leave bytes with a
// ballast file, and returns its path. The ballast takes what it can of
// free-leave: the blocks that map it come out of the same free space. Free
// counts the blocks kept for root: the daemon runs as root (so does the
// test: smallExt4 needs it) and may write there.
func fillUp(t testing.TB, mnt string, leave int64) string {
	t.Helper()
	var fs syscall.Statfs_t
	if err := syscall.Statfs(mnt, &fs); err != nil {
		t.Fatal(err)
	}
	free := int64(fs.Bfree) * fs.Bsize
	path := filepath.Join(mnt, "ballast")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for n := max(free-leave, 0); n > 0; n -= 64 << 10 {
		err = syscall.Fallocate(int(f.Fd()), 0, 0, n)
		if err != syscall.ENOSPC {
			break
		}
	}
	if err != nil {
		t.Fatal(err)
	}
	return path
}

// TestPassOnUnderLoad: with --on-io-error pass-on the Primary's failing
// disk gives the client EIO for the failing request and stays. After the
// repair (the disk healed, the daemon restarted), no acknowledged write is
// lost and verify finds no difference the resync did not carry.
func TestPassOnUnderLoad(t *testing.T) {
	ff := newFailingFile(t, 64<<20)
	a, b := newPair(t, "64M", []string{"--on-io-error", "pass-on"}, nil)
	a.onDisk(ff.path)
	startFullySynced(t, a, b)
	ck := newChecker(4096)
	ld := startLoad(t, ck, a)
	waitAcked(t, ck, 2000)
	ff.fail()
	// The next request the failing disk takes fails, and ends the load.
	err := ld.failure(30 * time.Second)
	if err == nil || !strings.Contains(err.Error(), "EIO") && !strings.Contains(err.Error(), "input/output") {
		t.Fatalf("pass-on: the client saw %v, want EIO", err)
	}
	t.Logf("the client saw: %v", err)
	st := a.status()
	if st.Disk != "UpToDate" || st.DiskError == nil {
		t.Fatalf("pass-on: disk %s, disk_error %+v", st.Disk, st.DiskError)
	}
	ff.heal()
	a.kill() // the repair: a restart replays the journal onto the healed disk
	a.start()
	a.waitFor("resynced", 60*time.Second, func(st Status) bool { return established(st) && st.Stats.OutOfSyncBytes == 0 })
	verifyOn(t, ck, a, "the repaired Primary")
	out := ctl(t, a, "verify", "--json")
	if !strings.Contains(out, `"DifferentBytes":0`) && !strings.Contains(out, `"different_bytes":0`) {
		t.Fatalf("verify after the repair: %s", out)
	}
	stopPair(t, a, b)
}

// scrape reads a daemon's Prometheus metrics.
func scrape(t testing.TB, addr string) string {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return string(raw)
}

// TestAttachFresh: a disk given by another path, or one that did not
// exist, is new and fully synced; the detached disk's own path is not.
func TestAttachFresh(t *testing.T) {
	for _, c := range []struct {
		detached, path string
		exists, fresh  bool
	}{
		{"/d/disk.img", "/d/disk.img", true, false},
		{"/d/disk.img", "/d/./disk.img", true, false},
		{"/d/disk.img", "/d/new.img", true, true},
		{"/d/disk.img", "/d/new.img", false, true},
		{"/d/disk.img", "/d/disk.img", false, true}, // recreated at the same path: nothing of the old disk
	} {
		if got := attachFresh(c.detached, c.path, c.exists); got != c.fresh {
			t.Errorf("attachFresh(%q, %q, exists=%v) = %v", c.detached, c.path, c.exists, got)
		}
	}
}
