package filedisk

import (
	"unsafe"

	"golang.org/x/sys/unix"
)

func blockDeviceSize(fd int) (int64, error) {
	var size uint64
	if err := ioctlPtr(fd, unix.BLKGETSIZE64, &size); err != nil {
		return 0, err
	}
	return int64(size), nil
}

func ioctlPtr[T any](fd int, req uint, arg *T) error {
	_, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), uintptr(req), uintptr(unsafe.Pointer(arg)))
	if errno != 0 {
		return errno
	}
	return nil
}
