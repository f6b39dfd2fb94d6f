package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
)

// imageBlock is the write size used to create every image.
const imageBlock = 1 << 20

// createImage writes path full once, size bytes in 1 MiB writes of the same
// fixed pseudo-random block, then fsyncs it: every system's images get the
// same content and the same page-cache history. size must be a multiple of
// imageBlock.
func createImage(path string, size int64) error {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o644)
	if err != nil {
		return fmt.Errorf("bench: %w", err)
	}
	block := make([]byte, imageBlock)
	rng := rand.New(rand.NewPCG(1, 2))
	for i := 0; i < len(block); i += 8 {
		v := rng.Uint64()
		for j := range 8 {
			block[i+j] = byte(v >> (8 * j))
		}
	}
	for off := int64(0); off < size; off += imageBlock {
		if _, err := f.Write(block); err != nil {
			f.Close()
			return fmt.Errorf("bench: write %s: %w", path, err)
		}
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("bench: fsync %s: %w", path, err)
	}
	return f.Close()
}

// dropCaches writes back dirty pages and empties the page cache, so each
// system's turn starts cold. It fails when not permitted (not root, or a
// read-only /proc/sys in a container).
func dropCaches() error {
	syscall.Sync()
	if err := os.WriteFile("/proc/sys/vm/drop_caches", []byte("3\n"), 0); err != nil {
		return fmt.Errorf("drop_caches not permitted, page caches stay warm between turns: %w", err)
	}
	return nil
}

// warmImages reads every image once, so that a turn starts with the whole
// image in the page cache (clean) instead of none of it.
func warmImages(paths []string) error {
	buf := make([]byte, imageBlock)
	for _, p := range paths {
		f, err := os.Open(p)
		if err != nil {
			return fmt.Errorf("bench: %w", err)
		}
		_, err = io.CopyBuffer(io.Discard, struct{ io.Reader }{f}, buf)
		f.Close()
		if err != nil {
			return fmt.Errorf("bench: read %s: %w", p, err)
		}
	}
	return nil
}

// fsType names the file system type holding dir.
func fsType(dir string) string {
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		return "unknown"
	}
	switch st.Type {
	case 0xEF53:
		return "ext4"
	case 0x01021994:
		return "tmpfs"
	case 0x58465342:
		return "xfs"
	case 0x9123683E:
		return "btrfs"
	}
	return fmt.Sprintf("fs 0x%x", st.Type)
}

// scratchDir makes the directory for images, sockets and logs: inside dir
// when given, else in the system temp dir unless that is a tmpfs (images
// must sit on a disk-backed file system), in which case under fallback.
func scratchDir(dir, fallback string) (string, error) {
	if dir == "" {
		dir = os.TempDir()
		if fsType(dir) == "tmpfs" {
			dir = fallback
		}
	}
	d, err := os.MkdirTemp(dir, "nbdmirror-bench-")
	if err != nil {
		return "", fmt.Errorf("bench: scratch dir: %w", err)
	}
	return d, nil
}

// moduleRoot finds the directory of the daemon's go.mod (not the bench's
// own, bench/go.mod), from the working directory up.
func moduleRoot() (string, error) {
	start, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for dir := start; ; {
		b, err := os.ReadFile(filepath.Join(dir, "go.mod"))
		if err == nil && isDaemonModule(string(b)) {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", fmt.Errorf("bench: run from inside the nbdmirror repository "+
				"(no go.mod of github.com/nbdmirror/nbdmirror at or above %s)", start)
		}
		dir = parent
	}
}

// isDaemonModule reports whether a go.mod is the daemon's module.
func isDaemonModule(gomod string) bool {
	for _, line := range strings.Split(gomod, "\n") {
		if f := strings.Fields(line); len(f) == 2 && f[0] == "module" {
			return strings.Trim(f[1], `"`) == "github.com/nbdmirror/nbdmirror"
		}
	}
	return false
}

// goBuild is `go build -o bin ./cmd/nbdmirror` in the module at dir, on
// that module's go.mod alone: GOWORK=off, so that neither a go.work of the
// user's nor one above a tree extracted under bench/ decides the versions.
func goBuild(ctx context.Context, dir, bin string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, "go", "build", "-o", bin, "./cmd/nbdmirror")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "GOWORK=off")
	return cmd
}

// buildRevision builds ./cmd/nbdmirror as of the git revision rev (a tree
// extracted with git archive) into dir/bin-REV and returns the binary.
func buildRevision(ctx context.Context, root, dir, rev string) (string, error) {
	src := filepath.Join(dir, "src-"+rev)
	if err := os.MkdirAll(src, 0o755); err != nil {
		return "", fmt.Errorf("bench: %w", err)
	}
	archive := exec.CommandContext(ctx, "sh", "-c", `git -C "$1" archive "$2" | tar -x -C "$3"`, "sh", root, rev, src)
	if out, err := archive.CombinedOutput(); err != nil {
		return "", fmt.Errorf("bench: cannot extract revision %s: %v\n%s", rev, err, out)
	}
	bin := filepath.Join(dir, "bin-"+rev, "nbdmirror")
	if out, err := goBuild(ctx, src, bin).CombinedOutput(); err != nil {
		return "", fmt.Errorf("bench: cannot build nbdmirror at %s: %v\n%s", rev, err, out)
	}
	return bin, nil
}

// buildNbdmirror builds ./cmd/nbdmirror into dir/bin and returns the binary.
func buildNbdmirror(ctx context.Context, root, dir string) (string, error) {
	bin := filepath.Join(dir, "bin", "nbdmirror")
	if out, err := goBuild(ctx, root, bin).CombinedOutput(); err != nil {
		return "", fmt.Errorf("bench: cannot build nbdmirror (go build ./cmd/nbdmirror: %v)\n%s"+
			"to bench the other systems meanwhile: bin/bench --systems nbdkit,qemu-nbd",
			err, out)
	}
	return bin, nil
}

// Machine describes where the run happened.
type Machine struct {
	CPUs        int    `json:"cpus"`
	MemoryBytes int64  `json:"memory_bytes"`
	Kernel      string `json:"kernel"`
	Fio         string `json:"fio"`
	Nbdkit      string `json:"nbdkit"`
	Qemu        string `json:"qemu,omitempty"`
	Go          string `json:"go"`
	Commit      string `json:"commit"`
	LoadStart   string `json:"loadavg_start"` // 1, 5 and 15 minute load averages
	LoadEnd     string `json:"loadavg_end"`
}

func machineInfo(root string, qemu bool) Machine {
	m := Machine{
		CPUs:        runtime.NumCPU(),
		MemoryBytes: memTotal(),
		Kernel:      strings.TrimSpace(readString("/proc/sys/kernel/osrelease")),
		Fio:         firstLine(root, "fio", "--version"),
		Nbdkit:      firstLine(root, "nbdkit", "--version"),
		Go:          firstLine(root, "go", "version"),
		Commit:      firstLine(root, "git", "rev-parse", "--short=12", "HEAD"),
	}
	if qemu {
		m.Qemu = firstLine(root, "qemu-storage-daemon", "--version")
	}
	if firstLine(root, "git", "status", "--porcelain") != "" {
		m.Commit += " (work tree has changes)"
	}
	return m
}

// loadAvg returns the 1, 5 and 15 minute load averages of /proc/loadavg.
func loadAvg() string {
	f := strings.Fields(readString("/proc/loadavg"))
	if len(f) < 3 {
		return ""
	}
	return strings.Join(f[:3], " ")
}

// firstLine runs a command in dir and returns the first line it printed.
func firstLine(dir string, argv ...string) string {
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Dir = dir
	out, err := cmd.Output()
	if err != nil {
		return ""
	}
	line, _, _ := strings.Cut(string(out), "\n")
	return strings.TrimSpace(line)
}

func readString(path string) string {
	b, _ := os.ReadFile(path)
	return string(b)
}

func memTotal() int64 {
	f, err := os.Open("/proc/meminfo")
	if err != nil {
		return 0
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	for s.Scan() {
		if f := strings.Fields(s.Text()); len(f) >= 2 && f[0] == "MemTotal:" {
			kb, _ := strconv.ParseInt(f[1], 10, 64)
			return kb << 10
		}
	}
	return 0
}
