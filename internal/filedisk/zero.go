package filedisk

import (
	"fmt"

	"golang.org/x/sys/unix"
)

// zeroChunk is the buffer size used when zeros must be written by hand.
const zeroChunk = 1 << 20

var zeros = make([]byte, zeroChunk)

// Trim discards [off, off+length); the range reads as zeros afterwards. Files
// get a punched hole, block devices BLKZEROOUT; where neither works, zeros are
// written.
func (d *Disk) Trim(off, length int64) error {
	return d.Zero(off, length, false)
}

// Zero writes zeros over [off, off+length). With noHole the blocks stay
// allocated (FALLOC_FL_ZERO_RANGE); otherwise a hole may be punched.
func (d *Disk) Zero(off, length int64, noHole bool) error {
	if err := d.check(off, length); err != nil {
		return err
	}
	if length == 0 {
		return nil
	}
	if d.isBlock {
		return d.zeroBlock(off, length)
	}
	if !noHole && !d.noPunch.Load() {
		err := d.fallocate(unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, off, length)
		if err == nil {
			return nil
		}
		if err != unix.EOPNOTSUPP {
			return fmt.Errorf("filedisk: punch hole at %d+%d: %w", off, length, err)
		}
		d.noPunch.Store(true)
	}
	if !d.noZeroRng.Load() {
		err := d.fallocate(unix.FALLOC_FL_ZERO_RANGE|unix.FALLOC_FL_KEEP_SIZE, off, length)
		if err == nil {
			return nil
		}
		if err != unix.EOPNOTSUPP {
			return fmt.Errorf("filedisk: zero range at %d+%d: %w", off, length, err)
		}
		d.noZeroRng.Store(true)
	}
	return d.writeZeros(off, length)
}

func (d *Disk) fallocate(mode uint32, off, length int64) error {
	for {
		err := unix.Fallocate(d.fd, mode, off, length)
		if err != unix.EINTR {
			return err
		}
	}
}

// zeroBlock asks a block device to zero a range (BLKZEROOUT), falling back
// to writing zeros.
func (d *Disk) zeroBlock(off, length int64) error {
	r := [2]uint64{uint64(off), uint64(length)}
	if err := ioctlPtr(d.fd, unix.BLKZEROOUT, &r); err == nil {
		return nil
	}
	return d.writeZeros(off, length)
}

func (d *Disk) writeZeros(off, length int64) error {
	for length > 0 {
		n := min(length, zeroChunk)
		if _, err := d.WriteAt(zeros[:n], off); err != nil {
			return err
		}
		off += n
		length -= n
	}
	return nil
}
