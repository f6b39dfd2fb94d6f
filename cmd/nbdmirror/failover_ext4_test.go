package main

import (
	"crypto/sha256"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"
)

// fileWriter writes and fsyncs files one after another until told to stop
// or a write fails, and remembers each file whose fsync returned.
type fileWriter struct {
	mu     sync.Mutex
	synced map[string][32]byte
	done   chan struct{}
}

func startFileWriter(dir string) *fileWriter {
	w := &fileWriter{synced: map[string][32]byte{}, done: make(chan struct{})}
	go func() {
		defer close(w.done)
		for i := 0; ; i++ {
			name := fmt.Sprintf("live-%04d", i)
			data := []byte(fmt.Sprintf("%s %x\n", name, sha256.Sum256([]byte(name))))
			for len(data) < 48<<10 {
				data = append(data, data...)
			}
			f, err := os.Create(filepath.Join(dir, name))
			if err != nil {
				return
			}
			_, err = f.Write(data)
			if err == nil {
				err = f.Sync()
			}
			f.Close()
			if err != nil {
				return
			}
			w.mu.Lock()
			w.synced[name] = sha256.Sum256(data)
			w.mu.Unlock()
		}
	}()
	return w
}

// fsynced is the files whose fsync returned so far.
func (w *fileWriter) fsynced() map[string][32]byte {
	w.mu.Lock()
	defer w.mu.Unlock()
	out := make(map[string][32]byte, len(w.synced))
	for k, v := range w.synced {
		out[k] = v
	}
	return out
}

// TestFailoverWithExt4 kills the Primary while a mounted ext4 on it writes
// and fsyncs files, promotes the Secondary and mounts its export: the file
// system replays its journal, e2fsck finds it clean, and every file whose
// fsync returned before the kill is intact.
func TestFailoverWithExt4(t *testing.T) {
	a, b := connectedPair(t, "256M")
	dev := attachBlockDev(t, a.uri())
	mnt := dev.mkfsAndMount()
	sums := writeFiles(t, mnt, 20, 1)

	w := startFileWriter(mnt)
	time.Sleep(700 * time.Millisecond)
	before := w.fsynced()
	a.kill()
	select {
	case <-w.done:
	case <-time.After(30 * time.Second):
		t.Log("the writer is still blocked on the dead export; detaching under it")
	}
	dev.detach()
	for k, v := range before {
		sums[k] = v
	}
	if len(before) == 0 {
		t.Fatal("no file was fsynced under load before the kill")
	}

	promoteAfterKill(t, b)
	dev2 := attachBlockDev(t, b.uri())
	mnt2 := dev2.mount() // replays the ext4 journal
	checkFiles(t, mnt2, sums)
	dev2.umount()
	dev2.fsck()
	t.Logf("%d files fsynced before the kill, all intact on the new Primary", len(sums))
}
