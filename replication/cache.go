package replication

import "github.com/nbdmirror/nbdmirror/replication/wire"

// writeOnlyDisk is a disk that can be told this node does not read it
// (filedisk.Disk): it then keeps small writes out of large cached folios.
// Told to write direct, it makes large writes with O_DIRECT.
type writeOnlyDisk interface {
	SetWriteOnly(on bool)
	SetDirect(on bool)
	CacheDrops() uint64
	DirectWrites() uint64
}

// setDiskRole tells the disk whether this node reads it: a Primary serves
// reads from it, a Secondary only writes it (its reads, for a resync, are
// few and large).
func (r *Resource) setDiskRole(role wire.Role) {
	if d, ok := r.disk.(writeOnlyDisk); ok {
		d.SetWriteOnly(role == wire.Secondary)
	}
}

// setDiskDirect tells the disk whether to make large writes direct: only
// as a resync's target, where they win; a Secondary that mirrors a stream
// keeps them buffered (see filedisk's direct.go for both measurements).
// r.mu held; it only sets a flag.
func (r *Resource) setDiskDirect(target bool) {
	if d, ok := r.disk.(writeOnlyDisk); ok {
		d.SetDirect(target)
	}
}

// cacheDrops is how many regions of the disk small writes dropped from the
// page cache (0 for a disk that does not).
func (r *Resource) cacheDrops() uint64 {
	if d, ok := r.disk.(writeOnlyDisk); ok {
		return d.CacheDrops()
	}
	return 0
}

// directWrites is how many writes the disk made with O_DIRECT (0 for a
// disk that does not).
func (r *Resource) directWrites() uint64 {
	if d, ok := r.disk.(writeOnlyDisk); ok {
		return d.DirectWrites()
	}
	return 0
}
