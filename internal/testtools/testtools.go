// Package testtools lets a test say which system tools it drives (fio,
// nbdinfo, nbdfuse, mkfs.ext4...). A missing tool skips the test under a
// plain `go test`, with one line naming the tool and its Debian package, and
// fails it when the environment asks for the whole suite: CI set (as CI
// services set it) or NBDMIRROR_REQUIRE_TOOLS set (as `make test` sets it,
// after installing what is missing).
//
//	func TestPairUnderFio(t *testing.T) {
//		testtools.Need(t, "fio", "nbdinfo")
//		...
//	}
package testtools

import (
	"fmt"
	"os"
	"os/exec"
	"testing"
)

// packages names the Debian package of each tool the tests drive; `make
// test` installs the same ones (TEST_TOOLS in the Makefile).
var packages = map[string]string{
	"fio":         "fio",
	"nbdinfo":     "libnbd-bin",
	"nbdcopy":     "libnbd-bin",
	"qemu-img":    "qemu-utils",
	"qemu-io":     "qemu-utils",
	"setpriv":     "util-linux",
	"etcd":        "etcd-server",
	"nbdfuse":     "nbdfuse",
	"nbdkit":      "nbdkit",
	"fusermount3": "fuse3",
	"losetup":     "mount",
	"mount":       "mount",
	"umount":      "mount",
	"mkfs.ext4":   "e2fsprogs",
	"e2fsck":      "e2fsprogs",
	"ss":          "iproute2",
	"gnutls-cli":  "gnutls-bin",
}

// Required reports whether a missing tool fails a test instead of skipping
// it: CI or NBDMIRROR_REQUIRE_TOOLS is set to anything but "", "0" or "false".
func Required(getenv func(string) string) bool {
	for _, name := range []string{"CI", "NBDMIRROR_REQUIRE_TOOLS"} {
		switch getenv(name) {
		case "", "0", "false", "FALSE", "False":
		default:
			return true
		}
	}
	return false
}

// Need fails or skips the test (see Required) unless every tool is on PATH.
func Need(t testing.TB, tools ...string) {
	t.Helper()
	for _, tool := range tools {
		if _, err := exec.LookPath(tool); err == nil {
			continue
		}
		msg := missing(tool)
		if Required(os.Getenv) {
			t.Fatalf("%s; under CI or make test a missing tool fails the test", msg)
			return
		}
		if !testing.Verbose() { // go test -v prints the skip line itself
			fmt.Fprintf(os.Stderr, "--- SKIP: %s: %s\n", t.Name(), msg)
		}
		t.Skipf("%s; skipped (make test or CI=1 fails instead)", msg)
		return
	}
}

// missing says which tool is missing and how to install it.
func missing(tool string) string {
	pkg := packages[tool]
	if pkg == "" {
		return tool + " not installed"
	}
	return fmt.Sprintf("%s not installed: apt-get install %s (make test does, as root)", tool, pkg)
}
