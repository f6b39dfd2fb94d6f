package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"runtime/debug"
	"strings"
	"testing"
	"time"
)

func TestVersionText(t *testing.T) {
	mod := debug.Module{Path: "github.com/nbdmirror/nbdmirror", Version: "v0.0.0-20261206085000-10567b9aaaaa"}
	for _, c := range []struct {
		name string
		info *debug.BuildInfo
		want string
	}{
		{"no build info", nil, "nbdmirror: no build info in this binary\n"},
		{"stamped", &debug.BuildInfo{GoVersion: "go1.26.8", Main: mod, Settings: []debug.BuildSetting{
			{Key: "vcs", Value: "git"}, {Key: "vcs.revision", Value: "10567b9aaaaa"},
			{Key: "vcs.time", Value: "2026-12-06T08:50:00Z"}, {Key: "vcs.modified", Value: "false"}}},
			"nbdmirror github.com/nbdmirror/nbdmirror v0.0.0-20261206085000-10567b9aaaaa\n" +
				"revision 10567b9aaaaa (2026-12-06T08:50:00Z)\nbuilt with go1.26.8\n"},
		{"modified", &debug.BuildInfo{GoVersion: "go1.26.8", Main: mod, Settings: []debug.BuildSetting{
			{Key: "vcs.revision", Value: "10567b9aaaaa"}, {Key: "vcs.modified", Value: "true"}}},
			"nbdmirror github.com/nbdmirror/nbdmirror v0.0.0-20261206085000-10567b9aaaaa\n" +
				"revision 10567b9aaaaa with uncommitted changes\nbuilt with go1.26.8\n"},
		{"not stamped", &debug.BuildInfo{GoVersion: "go1.26.8", Main: debug.Module{Path: mod.Path}},
			"nbdmirror github.com/nbdmirror/nbdmirror (devel)\n" +
				"revision unknown (not built in a git clone, or built with -buildvcs=false)\nbuilt with go1.26.8\n"},
	} {
		if got := versionText(c.info); got != c.want {
			t.Errorf("%s:\ngot  %q\nwant %q", c.name, got, c.want)
		}
	}
}

// TestVersion runs the built binary: `version` and `--version` print the
// module and, in a git checkout, the revision of HEAD (TestMain builds with
// -buildvcs=auto).
func TestVersion(t *testing.T) {
	plain := runCmd(t, 10*time.Second, binary, "version")
	flag := runCmd(t, 10*time.Second, binary, "--version")
	if plain != flag {
		t.Fatalf("version and --version differ:\n%s\n%s", plain, flag)
	}
	if !strings.HasPrefix(plain, "nbdmirror github.com/nbdmirror/nbdmirror ") {
		t.Fatalf("version: %q", plain)
	}
	// Go stamps a build in a checkout whose .git is a directory; a linked
	// worktree's .git is a file, which it does not follow.
	top, err := exec.Command("git", "rev-parse", "--show-toplevel").Output()
	if fi, statErr := os.Stat(filepath.Join(strings.TrimSpace(string(top)), ".git")); err != nil ||
		statErr != nil || !fi.IsDir() {
		if !strings.Contains(plain, "revision unknown") {
			t.Fatalf("not a git checkout, yet: %q", plain)
		}
		t.Logf("not a checkout with a .git directory: %q", plain)
		return
	}
	head, err := exec.Command("git", "rev-parse", "HEAD").Output()
	if err != nil {
		t.Fatal(err)
	}
	if want := "\nrevision " + strings.TrimSpace(string(head)); !strings.Contains(plain, want) {
		t.Fatalf("version: %q lacks %q", plain, want)
	}
}
