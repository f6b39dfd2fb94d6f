package sim

import (
	"encoding/binary"
	"fmt"
	"sync"
)

// BlockSize is the unit the model tracks: every write covers whole blocks,
// and each block written carries its write's id, so reading a block says
// which write (or trim: id 0) it holds.
const BlockSize = 4096

// model is what the client knows of the device: per block, the writes
// issued to it and how each ended. Time is a logical clock: every issue and
// every completion takes the next tick.
type model struct {
	mu     sync.Mutex // guards everything below
	clock  uint64
	blocks [][]*mwrite
	nextID uint64
	// flushes are the FLUSHes acknowledged, in the order they ended.
	flushes []mflush
}

// mflush is a FLUSH the client saw acknowledged: by node (the Primary it
// was issued to), issued at tick issued, answered at tick end.
type mflush struct {
	node        int
	issued, end uint64
}

// mwrite is one write (or trim) as the client saw it.
type mwrite struct {
	id     uint64 // the stamp its blocks carry; 0 for a trim
	node   int    // the node it was issued to
	issued uint64
	end    uint64 // tick of its completion, 0 while unknown
	acked  bool   // completed without error, on a live node
	// weak: acknowledged, but a power loss may have taken it (not durable
	// on the node that lost power).
	weak bool
	// void: acknowledged by a node whose data the operator discarded.
	void bool
	fua  bool
	// durable: an acknowledged FUA write. The link took it synced on both
	// nodes, or it was acknowledged alone and is written apart: the peer
	// has it only after a resync, whose end syncs it there.
	durable bool
}

func newModel(blocks int) *model {
	// The zeros of a created disk: a write that ended at tick 1.
	m := &model{blocks: make([][]*mwrite, blocks), nextID: 1, clock: 1}
	for b := range m.blocks {
		m.blocks[b] = []*mwrite{{issued: 1, end: 1, acked: true, durable: true}}
	}
	return m
}

// issue records a write of blocks [first, first+n) to node; trim writes
// zeros. It returns the write and the stamp its data must carry.
func (m *model) issue(node, first, n int, trim, fua bool) *mwrite {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.clock++
	w := &mwrite{node: node, issued: m.clock, fua: fua}
	if !trim {
		w.id = m.nextID
		m.nextID++
	}
	for b := first; b < first+n; b++ {
		m.blocks[b] = append(m.blocks[b], w)
	}
	return w
}

// complete records w's end: acked says the client heard success.
func (m *model) complete(w *mwrite, acked bool) uint64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.clock++
	w.end, w.acked = m.clock, acked
	w.durable = acked && w.fua
	return m.clock
}

// now is the current tick.
func (m *model) now() uint64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.clock++
	return m.clock
}

// flushed records a FLUSH issued to node at tick issued and acknowledged
// at tick end: every write acknowledged before it is durable on that node
// (see durableOn for its peer).
func (m *model) flushed(node int, issued, end uint64) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.flushes = append(m.flushes, mflush{node: node, issued: issued, end: end})
}

// powerLoss records that node lost what it had not synced: acknowledged
// writes not durable on it may be gone. inSync is the tick at which each
// node was last seen in sync with its peer (see durableOn).
func (m *model) powerLoss(node int, inSync [2]uint64) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.each(func(w *mwrite) {
		if w.acked && !w.durable && !m.durableOn(w, node, inSync) {
			w.weak = true
		}
	})
}

// durableOn says whether a FLUSH made w durable on node; m.mu held. A
// FLUSH syncs the journal of the node it was issued to, and its peer's
// only through the link: one acknowledged while the link was down (the
// Primary goes on alone) promises nothing of the peer, which holds the
// write in its journal unsynced until the next barrier or the end of a
// resync (the target syncs its journal before it is UpToDate). So the
// FLUSH counts on the peer only once its node was seen in sync after it
// ended: its barrier was acknowledged on the link, or a resync ended
// since.
func (m *model) durableOn(w *mwrite, node int, inSync [2]uint64) bool {
	for _, f := range m.flushes {
		if w.end < f.issued && (f.node == node || inSync[f.node] >= f.end) {
			return true
		}
	}
	return false
}

// discard records that node's data was given up (DiscardMyData): what it
// acknowledged after tick since may be gone.
func (m *model) discard(node int, since uint64) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.each(func(w *mwrite) {
		if w.acked && w.node == node && w.end > since {
			w.void = true
		}
	})
}

// ackedSince reports whether node (either node: anyNode) acknowledged a
// write after tick since that still counts.
func (m *model) ackedSince(node int, since uint64) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	found := false
	m.each(func(w *mwrite) {
		found = found || w.acked && !w.void && (node == anyNode || w.node == node) && w.end > since
	})
	return found
}

// anyNode asks ackedSince about the writes of both nodes.
const anyNode = -1

// each calls f once per write; m.mu held.
func (m *model) each(f func(*mwrite)) {
	seen := map[*mwrite]bool{}
	for _, ws := range m.blocks {
		for _, w := range ws {
			if !seen[w] {
				seen[w] = true
				f(w)
			}
		}
	}
}

// allowed reports whether block b, read from tick at on, may hold stamp
// id: some write of that stamp to b has not been superseded by a write
// acknowledged before at (and still counting) that was issued after it
// ended. A write acknowledged only once the read began may be missing
// from it: it was in flight when the read was made.
func (m *model) allowed(b int, id, at uint64) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return allowedIn(m.blocks[b], id, at)
}

// allowedIn is allowed over one block's writes.
func allowedIn(ws []*mwrite, id, at uint64) bool {
	for _, w := range ws {
		if w.id != id {
			continue
		}
		superseded := false
		for _, o := range ws {
			if o.acked && o.end < at && !o.weak && !o.void && w.end != 0 && o.issued > w.end {
				superseded = true
				break
			}
		}
		if !superseded {
			return true
		}
	}
	return false
}

// expected describes what block b may hold, for a report.
func (m *model) expected(b int) string {
	m.mu.Lock()
	defer m.mu.Unlock()
	s := ""
	for _, w := range m.blocks[b] {
		s += fmt.Sprintf(" [id %d node %d t%d-%d acked=%v weak=%v void=%v]", w.id, w.node, w.issued, w.end, w.acked, w.weak, w.void)
	}
	return s
}

// check compares an image, read from tick at on, with the model: every
// block must hold a stamp the model allows, and be whole.
func (m *model) check(img []byte, at uint64) error {
	for b := range m.blocks {
		blk := img[b*BlockSize : (b+1)*BlockSize]
		id, ok := readStamp(blk, b)
		if !ok {
			return fmt.Errorf("block %d is torn or foreign (starts %x)", b, blk[:16])
		}
		if !m.allowed(b, id, at) {
			return fmt.Errorf("block %d, read from t%d, holds write %d; allowed:%s", b, at, id, m.expected(b))
		}
	}
	return nil
}

// stamp fills blk (block b) with write id's pattern.
func stamp(blk []byte, id uint64, b int) {
	if id == 0 {
		clear(blk)
		return
	}
	for i := 0; i < len(blk); i += 16 {
		binary.LittleEndian.PutUint64(blk[i:], id)
		binary.LittleEndian.PutUint64(blk[i+8:], uint64(b))
	}
}

// readStamp reads the id blk (block b) carries; ok is false if it is not a
// whole stamp of one write.
func readStamp(blk []byte, b int) (id uint64, ok bool) {
	id = binary.LittleEndian.Uint64(blk)
	want := make([]byte, len(blk))
	stamp(want, id, b)
	return id, string(want) == string(blk)
}
