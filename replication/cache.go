package replication

import "github.com/nbdmirror/nbdmirror/replication/wire"

// cacheDropper is a disk that can leave the page cache (filedisk.Disk).
type cacheDropper interface {
	DropCache() error
}

// cacheLoop keeps a Secondary's disk out of the page cache: each time it is
// kicked (dropKick) while this node is Secondary, it has the disk's pages
// written back and dropped. A Secondary never reads its disk, so cached
// pages only cost it: on ext4 a write into a cached large folio (made by
// readahead, a resync or a large write) costs several times a write into a
// page of its own. A Primary keeps its cache for the reads it serves.
func (r *Resource) cacheLoop(d cacheDropper) {
	for {
		select {
		case <-r.stop:
			return
		case <-r.dropKick:
		}
		if r.Role() != wire.Secondary {
			continue
		}
		if err := d.DropCache(); err != nil {
			r.log.Warn("dropping the disk's pages from the page cache", "err", err)
		}
	}
}

// kick wakes whoever waits on c (a channel of capacity 1) without blocking.
func kick(c chan struct{}) {
	select {
	case c <- struct{}{}:
	default:
	}
}
