package journal

// appendNow is AppendLater that wakes the writer: what a lone caller would
// otherwise do with WriteQueued(false).
func (j *Journal) appendNow(r Record, fua bool, done func(seq uint64, err error)) uint64 {
	return j.append(r, fua, nil, done, true)
}

// write appends r and waits for its completion.
func (j *Journal) write(r Record, fua bool) (uint64, error) {
	type result struct {
		seq uint64
		err error
	}
	ch := make(chan result, 1)
	j.appendNow(r, fua, func(seq uint64, err error) { ch <- result{seq, err} })
	res := <-ch
	return res.seq, res.err
}

// appendFrame appends the record's frame (header, payload, padding) to dst:
// the bytes the segment holds.
func appendFrame(dst []byte, r *Record) []byte {
	var h [headerSize]byte
	r.putHeader(&h)
	dst = append(dst, h[:]...)
	dst = append(dst, r.Payload...)
	return append(dst, zeroPad[:align(len(r.Payload))-len(r.Payload)]...)
}
