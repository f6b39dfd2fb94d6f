package replication

import (
	"github.com/nbdmirror/nbdmirror/journal"
	"github.com/nbdmirror/nbdmirror/replication/internal/plant"
)

// plantedSwap is the planted bug ApplyOutOfOrder (see internal/plant):
// the first two records of a Records frame swap their contents (regions
// and data), each keeping its seq.
func plantedSwap(recs []journal.Record) {
	if !plant.On(plant.ApplyOutOfOrder) || len(recs) < 2 {
		return
	}
	first, second := recs[0], recs[1]
	recs[0], recs[1] = withContent(first, second), withContent(second, first)
}

// withContent is c (its region and data) under rec's seq.
func withContent(rec, c journal.Record) journal.Record {
	c.Seq = rec.Seq
	return c
}
