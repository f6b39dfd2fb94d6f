package replication

import (
	"github.com/nbdmirror/nbdmirror/journal"
	"github.com/nbdmirror/nbdmirror/replication/internal/plant"
	"github.com/nbdmirror/nbdmirror/replication/wire"
)

// plantedSwap is the planted bug ApplyOutOfOrder (see internal/plant): the
// first two records of a Records frame body, their contents swapped, or
// nil.
func plantedSwap(body []byte, size int64, prev uint64) []journal.Record {
	if !plant.On(plant.ApplyOutOfOrder) {
		return nil
	}
	first, n, err := wire.ParseRecord(body, size, prev)
	if err != nil || n == len(body) {
		return nil
	}
	second, _, err := wire.ParseRecord(body[n:], size, first.Seq)
	if err != nil {
		return nil
	}
	return []journal.Record{second, first}
}

// withContent is c (its region and data) under rec's seq.
func withContent(rec, c journal.Record) journal.Record {
	c.Seq = rec.Seq
	return c
}
