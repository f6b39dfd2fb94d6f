// Package replication owns a resource: the backing disk, its journal and,
// later, the peer it mirrors to. A Resource is the nbdserver.Backend the
// NBD export serves: every write is compressed once, journaled, applied to
// the disk in journal order, and only then acknowledged.
//
//	disk, _ := filedisk.Open(path, size)
//	res, _ := replication.Open(replication.Config{Name: "r0", Disk: disk, MetaDir: path + ".meta"})
//	defer res.Close()
//	srv := nbdserver.New(nbdserver.Options{Name: "r0", Backend: res})
//
// What the pair decides (whom to admit, which way and how to sync, when to
// go StandAlone, promotion and demotion, generation ids) is one pure
// function, step in core.go, fed by the Resource and scripted in
// testdata/core; the Resource only performs the actions it returns.
package replication
