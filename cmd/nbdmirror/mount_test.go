package main

import (
	"bytes"
	"crypto/sha256"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// blockDev is an NBD export seen as a Linux block device: nbdfuse exposes it
// as a file, losetup turns the file into /dev/loopN. Everything is undone in
// reverse order by detach, which t.Cleanup also calls.
type blockDev struct {
	t       testing.TB
	fuseDir string
	fuse    *exec.Cmd
	fuseOut bytes.Buffer
	loop    string
	mnt     string
}

// attachBlockDev needs root, /dev/fuse, nbdfuse and losetup; it skips the test
// when the machine cannot do it.
func attachBlockDev(t testing.TB, uri string) *blockDev {
	t.Helper()
	needTools(t, "nbdfuse", "losetup", "mkfs.ext4", "e2fsck", "mount", "umount")
	if os.Geteuid() != 0 {
		t.Skip("mounting needs root")
	}
	if _, err := os.Stat("/dev/fuse"); err != nil {
		t.Skip("no /dev/fuse")
	}
	b := &blockDev{t: t, fuseDir: filepath.Join(t.TempDir(), "fuse")}
	os.Mkdir(b.fuseDir, 0o755)
	t.Cleanup(b.detach)
	b.fuse = exec.Command("nbdfuse", b.fuseDir, uri)
	b.fuse.Stdout, b.fuse.Stderr = &b.fuseOut, &b.fuseOut
	b.fuse.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := b.fuse.Start(); err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(b.fuseDir, "nbd")
	deadline := time.Now().Add(20 * time.Second)
	for {
		if fi, err := os.Stat(file); err == nil && fi.Size() > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("nbdfuse did not come up: %s", b.fuseOut.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	b.loop = strings.TrimSpace(runCmd(t, 30*time.Second, "losetup", "--find", "--show", "--direct-io=off", file))
	return b
}

// mkfsAndMount makes an ext4 file system on the device and mounts it.
func (b *blockDev) mkfsAndMount() string {
	b.t.Helper()
	runCmd(b.t, 2*time.Minute, "mkfs.ext4", "-q", "-F", b.loop)
	return b.mount()
}

func (b *blockDev) mount() string {
	b.t.Helper()
	if b.mnt == "" {
		b.mnt = filepath.Join(b.t.TempDir(), "mnt")
		os.Mkdir(b.mnt, 0o755)
	}
	runCmd(b.t, time.Minute, "mount", "-t", "ext4", b.loop, b.mnt)
	return b.mnt
}

func (b *blockDev) umount() {
	b.t.Helper()
	runCmd(b.t, time.Minute, "umount", b.mnt)
}

// fsck runs e2fsck -fn on the unmounted device and fails on any finding.
func (b *blockDev) fsck() {
	b.t.Helper()
	runCmd(b.t, 2*time.Minute, "e2fsck", "-fn", b.loop)
}

// detach unmounts, frees the loop device and stops nbdfuse, ignoring what is
// already gone, so a failed test leaves nothing behind.
func (b *blockDev) detach() {
	if b.mnt != "" {
		exec.Command("umount", "-l", b.mnt).Run()
	}
	if b.loop != "" {
		exec.Command("losetup", "-d", b.loop).Run()
		b.loop = ""
	}
	if b.fuse != nil && b.fuse.Process != nil {
		exec.Command("fusermount3", "-u", b.fuseDir).Run()
		done := make(chan struct{})
		go func() { b.fuse.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			syscall.Kill(-b.fuse.Process.Pid, syscall.SIGKILL)
			exec.Command("umount", "-l", b.fuseDir).Run()
			<-done
		}
		b.fuse = nil
	}
}

// writeFiles writes count files of varied sizes, fsyncs each, and returns
// their checksums by name.
func writeFiles(t testing.TB, dir string, count int, seed int) map[string][32]byte {
	t.Helper()
	sums := map[string][32]byte{}
	for i := range count {
		name := fmt.Sprintf("file-%d-%03d", seed, i)
		data := bytes.Repeat([]byte(fmt.Sprintf("%s:%d;", name, seed*7919+i)), 1+(i*997)%4000)
		f, err := os.Create(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := f.Write(data); err != nil {
			t.Fatal(err)
		}
		if err := f.Sync(); err != nil {
			t.Fatal(err)
		}
		f.Close()
		sums[name] = sha256.Sum256(data)
	}
	return sums
}

// checkFiles fails unless every file reads back with its checksum.
func checkFiles(t testing.TB, dir string, sums map[string][32]byte) {
	t.Helper()
	for name, want := range sums {
		data, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if sha256.Sum256(data) != want {
			t.Fatalf("%s: checksum differs", name)
		}
	}
}

func TestServeMountsExt4(t *testing.T) {
	n := newNode(t, "256M")
	n.start()
	b := attachBlockDev(t, n.uri())
	mnt := b.mkfsAndMount()
	sums := writeFiles(t, mnt, 40, 1)
	runCmd(t, time.Minute, "sync")
	b.umount()
	b.fsck()
	b.mount()
	checkFiles(t, mnt, sums)
	b.umount()
	st := n.status()
	if st.NBD.Flushes == 0 || st.NBD.Writes == 0 {
		t.Fatalf("ext4 over the export sent no flush or write: %+v", st.NBD)
	}
}
