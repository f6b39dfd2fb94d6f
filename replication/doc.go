// Package replication owns a resource: the backing disk, its journal and,
// later, the peer it mirrors to. A Resource is the nbdserver.Backend the
// NBD export serves: every write is compressed once, journaled, applied to
// the disk in journal order, and only then acknowledged.
//
//	disk, _ := filedisk.Open(path, size)
//	res, _ := replication.Open(replication.Config{Name: "r0", Disk: disk, MetaDir: path + ".meta"})
//	defer res.Close()
//	srv := nbdserver.New(nbdserver.Options{Name: "r0", Backend: res})
package replication
