package nbdserver

import (
	"math/bits"
	"sync"
)

// Payload buffers come from one sync.Pool per power-of-two size class, from
// 4 KiB up to maxBlockSize, so a steady stream of requests allocates nothing.
const (
	minClassShift = 12 // 4 KiB
	maxClassShift = 25 // 32 MiB == maxBlockSize
	numClasses    = maxClassShift - minClassShift + 1
)

var payloadPools [numClasses]sync.Pool

// sizeClass returns the pool index for a buffer of n bytes (0 < n <= maxBlockSize).
func sizeClass(n int) int {
	if n <= 1<<minClassShift {
		return 0
	}
	return bits.Len(uint(n-1)) - minClassShift
}

// getPayload returns a buffer of length n from the pool. n must be in
// (0, maxBlockSize].
func getPayload(n int) *[]byte {
	c := sizeClass(n)
	if p, ok := payloadPools[c].Get().(*[]byte); ok {
		*p = (*p)[:n]
		return p
	}
	b := make([]byte, n, 1<<(c+minClassShift))
	return &b
}

// putPayload returns a buffer obtained from getPayload to its pool.
func putPayload(p *[]byte) {
	if p == nil {
		return
	}
	c := sizeClass(cap(*p))
	if cap(*p) != 1<<(c+minClassShift) {
		return // not one of ours
	}
	payloadPools[c].Put(p)
}
