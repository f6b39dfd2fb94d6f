package main

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"time"

	"golang.org/x/sys/unix"
)

// DeviceResult is what the device under the images' file system takes: a
// sequential stream of 1 MiB writes that bypass the page cache (O_DIRECT),
// then an fdatasync. A server that must get every byte it is sent to the
// device (a journal bounded in size, synced at checkpoints) cannot stream
// faster for long; one that leaves writes in the page cache can.
type DeviceResult struct {
	Bytes      int64     `json:"bytes"`
	Seconds    []float64 `json:"seconds"`
	MedianMiBs float64   `json:"median_mib_per_sec"`
}

// measureDevice writes size bytes to a file in dir reps times.
func measureDevice(dir string, size int64, reps int) (*DeviceResult, error) {
	path := filepath.Join(dir, "device-probe")
	defer os.Remove(path)
	buf, err := unix.Mmap(-1, 0, 1<<20, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_ANON|unix.MAP_PRIVATE)
	if err != nil { // page-aligned, as O_DIRECT needs
		return nil, err
	}
	defer unix.Munmap(buf)
	for i := range buf {
		buf[i] = byte(i*7 + i>>12) // not zeros: nothing below may skip them
	}
	r := &DeviceResult{Bytes: size}
	for range reps {
		s, err := writeDirect(path, buf, size)
		if err != nil {
			return nil, fmt.Errorf("bench: device probe in %s: %w", dir, err)
		}
		r.Seconds = append(r.Seconds, s)
	}
	secs := slices.Clone(r.Seconds)
	slices.Sort(secs)
	r.MedianMiBs = float64(size) / (1 << 20) / secs[len(secs)/2]
	return r, nil
}

func writeDirect(path string, buf []byte, size int64) (float64, error) {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC|unix.O_DIRECT, 0o600)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	start := time.Now()
	for off := int64(0); off < size; off += int64(len(buf)) {
		if _, err := f.WriteAt(buf, off); err != nil {
			return 0, err
		}
	}
	if err := unix.Fdatasync(int(f.Fd())); err != nil {
		return 0, err
	}
	return time.Since(start).Seconds(), nil
}

func writeDeviceLine(w io.Writer, d *DeviceResult) {
	if d == nil {
		return
	}
	fmt.Fprintf(w, "\nThe device under the images (%s written in 1 MiB O_DIRECT writes, then fdatasync, "+
		"median of %d): %.0f MiB/s.\n", fmtSize(d.Bytes), len(d.Seconds), d.MedianMiBs)
}
