// Package bufpool lends byte buffers in size classes, so that the data path
// (payloads the journal compresses or decodes, records on their way to the
// peer and back) reuses memory instead of asking the runtime, and the
// kernel, for fresh pages at every write.
package bufpool

import "sync"

// Buffers for payloads come in size classes 4 KiB, 6 KiB, 8 KiB, 12 KiB, ...
// (powers of two and one and a half times them), so a pooled buffer wastes at
// most a third of itself.
const (
	minClassShift = 12
	numClasses    = 2 * (29 - minClassShift) // up to 384 MiB
)

var bufPools [numClasses]sync.Pool // of *[]byte with len == classSize(i)

func classSize(i int) int {
	if i%2 == 0 {
		return 1 << (minClassShift + i/2)
	}
	return 3 << (minClassShift + i/2 - 1)
}

func classOf(n int) int {
	for i := range numClasses {
		if classSize(i) >= n {
			return i
		}
	}
	return -1
}

// Get returns a buffer of at least n bytes, with len n. Put gives it back.
func Get(n int) *[]byte {
	i := classOf(n)
	if i < 0 {
		b := make([]byte, n)
		return &b
	}
	if bp, _ := bufPools[i].Get().(*[]byte); bp != nil {
		*bp = (*bp)[:n]
		return bp
	}
	b := make([]byte, n, classSize(i))
	return &b
}

// Put returns a buffer from Get; the caller must not use it any more. A
// buffer not from Get is left to the garbage collector.
func Put(bp *[]byte) {
	i := classOf(cap(*bp))
	if i < 0 || classSize(i) != cap(*bp) {
		return
	}
	bufPools[i].Put(bp)
}
