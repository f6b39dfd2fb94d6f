package filedisk

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"
)

func TestOpenCreatesSparseAndRefusesOtherSize(t *testing.T) {
	path := filepath.Join(t.TempDir(), "disk.img")
	d, err := Open(path, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	if size, _ := d.Size(); size != 1<<20 {
		t.Fatalf("size %d", size)
	}
	d.Close()
	if _, err := Open(path, 2<<20); err == nil {
		t.Fatal("opening a 1 MiB disk as 2 MiB succeeded")
	}
	if fi, _ := os.Stat(path); fi.Size() != 1<<20 {
		t.Fatalf("disk was resized to %d", fi.Size())
	}
	if _, err := Open(filepath.Join(t.TempDir(), "missing"), 0); err == nil {
		t.Fatal("opening a missing disk without a size succeeded")
	}
}

func TestReadWriteZeroTrimBounds(t *testing.T) {
	d, err := Open(filepath.Join(t.TempDir(), "disk.img"), 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	data := bytes.Repeat([]byte{0xab}, 64<<10)
	for _, op := range []struct {
		name string
		zero func() error
	}{
		{"trim", func() error { return d.Trim(4096, 8192) }},
		{"zero", func() error { return d.Zero(4096, 8192, false) }},
		{"zero no-hole", func() error { return d.Zero(4096, 8192, true) }},
		{"write zeros", func() error { return d.writeZeros(4096, 8192) }},
	} {
		if _, err := d.WriteAt(data, 0); err != nil {
			t.Fatal(err)
		}
		if err := op.zero(); err != nil {
			t.Fatalf("%s: %v", op.name, err)
		}
		got := make([]byte, len(data))
		if _, err := d.ReadAt(got, 0); err != nil {
			t.Fatal(err)
		}
		want := bytes.Clone(data)
		clear(want[4096 : 4096+8192])
		if !bytes.Equal(got, want) {
			t.Fatalf("%s: range not zeroed exactly", op.name)
		}
	}
	if _, err := d.WriteAt(data, 1<<20-4096); !errors.Is(err, unix.EINVAL) {
		t.Fatalf("write past the end: %v", err)
	}
	if _, err := d.ReadAt(data, -1); !errors.Is(err, unix.EINVAL) {
		t.Fatalf("read at -1: %v", err)
	}
	if err := d.Sync(); err != nil || d.Syncs() != 1 {
		t.Fatalf("sync: %v, count %d", err, d.Syncs())
	}
}
