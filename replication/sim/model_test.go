package sim

import (
	"reflect"
	"testing"
)

// TestModelReadBeforeTheAck: a read that began before a write's ack may
// miss it; one that began after may not.
func TestModelReadBeforeTheAck(t *testing.T) {
	m := newModel(1)
	w := m.issue(0, 0, 1, false, false)
	before := m.now()
	m.complete(w, true)
	after := m.now()
	if !m.allowed(0, 0, before) {
		t.Errorf("a read from t%d may hold the zeros:%s", before, m.expected(0))
	}
	if m.allowed(0, 0, after) {
		t.Errorf("a read from t%d may not hold the zeros:%s", after, m.expected(0))
	}
}

// TestModelAllowed: which stamps a block may hold after writes end in
// different orders.
func TestModelAllowed(t *testing.T) {
	for _, c := range []struct {
		name  string
		build func(m *model) (allowed, refused []uint64)
	}{
		{"an acknowledged write replaces the zeros", func(m *model) ([]uint64, []uint64) {
			w := written(m, 0, false)
			return []uint64{w.id}, []uint64{0}
		}},
		{"overlapping writes in flight may show either", func(m *model) ([]uint64, []uint64) {
			w1 := m.issue(0, 0, 1, false, false)
			w2 := written(m, 0, false)
			m.complete(w1, true)
			return []uint64{w1.id, w2.id}, []uint64{0}
		}},
		{"a write issued after another's ack supersedes it", func(m *model) ([]uint64, []uint64) {
			w1 := written(m, 0, false)
			w2 := written(m, 0, false)
			return []uint64{w2.id}, []uint64{w1.id, 0}
		}},
		{"a failed write may or may not have landed", func(m *model) ([]uint64, []uint64) {
			w1 := written(m, 0, false)
			w2 := m.issue(0, 0, 1, false, false)
			m.complete(w2, false)
			return []uint64{w1.id, w2.id}, []uint64{0}
		}},
		{"a power loss may take what no flush covered", func(m *model) ([]uint64, []uint64) {
			w1 := written(m, 0, false)
			f := m.now()
			m.flushed(0, f, m.now())
			w2 := written(m, 0, false)
			m.powerLoss(0, [2]uint64{})
			return []uint64{w1.id, w2.id}, []uint64{0}
		}},
		{"a flush covers its own node", func(m *model) ([]uint64, []uint64) {
			w1 := written(m, 0, false)
			w2 := written(m, 0, false)
			f := m.now()
			m.flushed(0, f, m.now())
			m.powerLoss(0, [2]uint64{})
			return []uint64{w2.id}, []uint64{w1.id, 0}
		}},
		{"a flush made apart does not cover the peer", func(m *model) ([]uint64, []uint64) {
			w1 := written(m, 0, true) // FUA: durable on both
			w2 := written(m, 0, false)
			apart := m.now() // node 0 last seen in sync
			f := m.now()
			m.flushed(0, f, m.now())
			m.powerLoss(1, [2]uint64{apart, apart})
			return []uint64{w1.id, w2.id}, []uint64{0}
		}},
		{"a flush covers the peer once seen in sync after it", func(m *model) ([]uint64, []uint64) {
			w1 := written(m, 0, false)
			w2 := written(m, 0, false)
			f := m.now()
			m.flushed(0, f, m.now())
			seen := m.now()
			m.powerLoss(1, [2]uint64{seen, seen})
			return []uint64{w2.id}, []uint64{w1.id, 0}
		}},
		{"a discarded node's writes may be gone", func(m *model) ([]uint64, []uint64) {
			w1 := written(m, 0, false)
			since := m.now()
			w2 := written(m, 1, false)
			m.discard(1, since)
			return []uint64{w1.id, w2.id}, []uint64{0}
		}},
		{"a trim writes zeros", func(m *model) ([]uint64, []uint64) {
			w1 := written(m, 0, false)
			tr := m.issue(0, 0, 1, true, false)
			m.complete(tr, true)
			return []uint64{0}, []uint64{w1.id}
		}},
	} {
		t.Run(c.name, func(t *testing.T) {
			m := newModel(1)
			allowed, refused := c.build(m)
			at := m.now()
			for _, id := range allowed {
				if !m.allowed(0, id, at) {
					t.Errorf("stamp %d refused:%s", id, m.expected(0))
				}
			}
			for _, id := range refused {
				if m.allowed(0, id, at) {
					t.Errorf("stamp %d allowed:%s", id, m.expected(0))
				}
			}
		})
	}
}

func TestStampRoundTrip(t *testing.T) {
	blk := make([]byte, BlockSize)
	stamp(blk, 42, 7)
	if id, ok := readStamp(blk, 7); !ok || id != 42 {
		t.Fatalf("read %d, %v", id, ok)
	}
	if _, ok := readStamp(blk, 8); ok {
		t.Fatal("a stamp of block 7 read as block 8's")
	}
	blk[100] ^= 1
	if _, ok := readStamp(blk, 7); ok {
		t.Fatal("a torn block read as whole")
	}
}

// TestGenerateIsPure: a seed gives the same schedule every time.
func TestGenerateIsPure(t *testing.T) {
	for seed := uint64(1); seed < 50; seed++ {
		a, b := Generate(seed, knownKinds()), Generate(seed, knownKinds())
		if !reflect.DeepEqual(a, b) {
			t.Fatalf("seed %d: two schedules:\n%s\n%s", seed, a, b)
		}
		for _, st := range a.Steps {
			if knownKinds()[st.Kind] {
				t.Fatalf("seed %d drew skipped kind %s", seed, st.Kind)
			}
		}
	}
}

// written issues a one-block write at block 0 on node (with FUA if fua)
// and completes it with success.
func written(m *model, node int, fua bool) *mwrite {
	w := m.issue(node, 0, 1, false, fua)
	m.complete(w, true)
	return w
}
