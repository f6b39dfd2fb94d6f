package replication

import (
	"crypto/sha256"
	"fmt"
	"time"

	"github.com/nbdmirror/nbdmirror/replication/wire"
)

// A checksum comparison asks the peer for the checksums of a run of
// blocks, computes its own, and marks the blocks that differ. A full sync
// runs it over the whole disk before sending anything, so identical and
// zero regions never cross the wire; verify runs it while I/O goes on.
const (
	sumBlock = 64 << 10     // bytes a checksum covers
	sumSize  = wire.SumSize // bytes of SHA-256 kept per block
)

// blockSums reads count blocks from first and returns their checksums.
func (r *Resource) blockSums(first, count uint64, buf []byte) ([]byte, error) {
	sums := make([]byte, 0, count*sumSize)
	for b := first; b < first+count; b++ {
		off := int64(b) * sumBlock
		n := min(sumBlock, r.size-off)
		if _, err := r.disk.ReadAt(buf[:n], off); err != nil {
			r.health.fault(OpRead, err)
			return nil, err
		}
		h := sha256.Sum256(buf[:n])
		sums = append(sums, h[:sumSize]...)
	}
	return sums, nil
}

// answerSums serves a SumRequest from the peer, off the receive loop.
func (l *link) answerSums(body []byte) error {
	req, err := wire.ParseSumRequest(body)
	if err != nil {
		return fmt.Errorf("%w: %v", ErrLinkDown, err)
	}
	first, count := req.First, uint64(req.Count)
	blocks := uint64((l.res.size + sumBlock - 1) / sumBlock)
	if count > tune.sumBlocks || first > blocks || count > blocks-first {
		return fmt.Errorf("%w: sum request for blocks [%d, +%d) of %d", ErrLinkDown, first, count, blocks)
	}
	go func() {
		sums, err := l.res.blockSums(first, count, make([]byte, sumBlock))
		if err != nil {
			l.fail(fmt.Errorf("%w: checksums: %v", ErrLinkDown, err))
			return
		}
		f, _ := wire.AppendSums(nil, wire.Sums{First: first, Sums: sums})
		l.queue(f)
	}()
	return nil
}

// compareSums compares every block of the disk with the peer's and marks
// the regions of those that differ. It returns the bytes marked.
func (r *Resource) compareSums(l *link) (int64, error) {
	l.sumMu.Lock()
	defer l.sumMu.Unlock()
	blocks := uint64((r.size + sumBlock - 1) / sumBlock)
	buf := make([]byte, sumBlock)
	var marked int64
	for first := uint64(0); first < blocks; first += tune.sumBlocks {
		count := min(tune.sumBlocks, blocks-first)
		l.queue(wire.AppendSumRequest(nil, wire.SumRequest{First: first, Count: uint32(count)}))
		mine, err := r.blockSums(first, count, buf)
		if err != nil {
			return marked, err
		}
		var body []byte
		select {
		case body = <-l.sums:
		case <-l.closed:
			return marked, ErrLinkDown
		case <-time.After(tune.sumTimeouts * r.cfg.PeerTimeout):
			return marked, fmt.Errorf("%w: no checksums from the peer", ErrLinkDown)
		}
		theirs, err := wire.ParseSums(body)
		if err != nil || theirs.First != first || len(theirs.Sums) != len(mine) {
			return marked, fmt.Errorf("%w: checksums for the wrong blocks", ErrLinkDown)
		}
		// Both directions of the exchange count as resync traffic.
		r.resyncWire.Add(uint64(2*wire.HeaderSize + wire.SumRequestSize + len(body)))
		for i := range count {
			if string(mine[i*sumSize:(i+1)*sumSize]) != string(theirs.Sum(int(i))) {
				off := int64(first+i) * sumBlock
				n := min(sumBlock, r.size-off)
				r.oos.markQuietly(off, n) // a verify's marks wait for the operator's resync
				marked += n
			}
		}
	}
	return marked, nil
}

// VerifyResult is what an online verify found.
type VerifyResult struct {
	CheckedBytes   int64 `json:"checked_bytes"`
	DifferentBytes int64 `json:"different_bytes"`
}

// Verify compares every block with the peer's while I/O goes on. Blocks
// that differ are marked out of sync, for the next resync (disconnect and
// connect) to repair. A block written during the comparison may be marked
// without need; one that differs is never missed.
func (r *Resource) Verify() (VerifyResult, error) {
	l := r.currentLink()
	if l == nil {
		return VerifyResult{}, fmt.Errorf("%w: verify needs a connected peer", ErrRefused)
	}
	marked, err := r.compareSums(l)
	if err != nil {
		return VerifyResult{}, fmt.Errorf("replication: verify: %w", err)
	}
	if marked > 0 {
		r.log.Warn("verify found blocks that differ from the peer's; marked out of sync", "bytes", marked)
	}
	return VerifyResult{CheckedBytes: r.size, DifferentBytes: marked}, nil
}
