package journal

import (
	"strings"
	"testing"
	"time"

	"github.com/nbdmirror/nbdmirror/journal/vfs"
)

// shortFS is a MemFS that says it has free bytes left, and tells asked
// each time it is asked.
type shortFS struct {
	*vfs.MemFS
	free  int64
	asked chan struct{}
}

func (fs *shortFS) Free(string) (int64, error) {
	select {
	case fs.asked <- struct{}{}:
	default:
	}
	return fs.free, nil
}

// A fresh journal on a file system without room for a spare segment and as
// much again prepares none: spares only make syncs cheaper, and must not
// take the last free space from the segments and metadata that need it.
func TestNoSparesOnAFileSystemShortOfSpace(t *testing.T) {
	o := testOptions()
	o.spares = 2
	fs := &shortFS{MemFS: vfs.NewMem(), free: 2*o.segmentSize - 1, asked: make(chan struct{}, 1)}
	j, err := Open(fs, testDir, NewMemDisk(crashDiskSize), o)
	if err != nil {
		t.Fatal(err)
	}
	select {
	case <-fs.asked:
	case <-time.After(hangLimit):
		t.Fatal("the spare preparer never asked for the free space")
	}
	if err := j.Close(); err != nil {
		t.Fatal(err)
	}
	names, err := fs.ReadDir(testDir)
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range names {
		if isSpareName(n) || strings.HasSuffix(n, prepExt) {
			t.Fatalf("a spare was prepared with %d bytes free: %v", fs.free, names)
		}
	}
}
