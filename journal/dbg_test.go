package journal

import (
	"fmt"
	"os"

	"github.com/nbdmirror/nbdmirror/journal/vfs"
)

func dumpFS(tag string, fs *vfs.MemFS) {
	if os.Getenv("JOURNAL_DEBUG") == "" {
		return
	}
	names, _ := fs.ReadDir("/meta/journal")
	fmt.Fprint(os.Stderr, tag, ":")
	for _, n := range names {
		fi, err := fs.Stat("/meta/journal/" + n)
		if err != nil {
			continue
		}
		fmt.Fprintf(os.Stderr, " %s=%d", n, fi.Size())
	}
	fmt.Fprintln(os.Stderr)
}
