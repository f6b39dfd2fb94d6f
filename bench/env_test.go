package main

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

func TestIsDaemonModule(t *testing.T) {
	for _, c := range []struct {
		gomod string
		want  bool
	}{
		{"module github.com/nbdmirror/nbdmirror\n\ngo 1.26.8\n", true},
		{"// c\nmodule \"github.com/nbdmirror/nbdmirror\"\n", true},
		{"module github.com/nbdmirror/nbdmirror/bench\n\ngo 1.26.8\n", false},
		{"go 1.26.8\n", false},
	} {
		if got := isDaemonModule(c.gomod); got != c.want {
			t.Errorf("isDaemonModule(%q) = %v", c.gomod, got)
		}
	}
}

// splitParent is the last commit before the harness moved to its own module:
// its root go.mod still requires the chart library and has no bench/go.mod.
const splitParent = "10567b9"

// TestBuildRevisionBeforeSplit builds the daemon the way --against does, of
// a revision from before bench/go.mod and of HEAD, each from a tree
// extracted below a go.work that would otherwise capture the build.
func TestBuildRevisionBeforeSplit(t *testing.T) {
	root, err := moduleRoot()
	if err != nil {
		t.Fatal(err)
	}
	if exec.Command("git", "-C", root, "cat-file", "-e", splitParent+"^{commit}").Run() != nil {
		t.Skipf("commit %s is not in this clone (shallow?)", splitParent)
	}
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "go.work"), []byte("go 1.26.8\n\nuse ./nowhere\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, rev := range []string{splitParent, "HEAD"} {
		bin, err := buildRevision(context.Background(), root, filepath.Join(dir, "scratch"), rev)
		if err != nil {
			t.Fatal(err)
		}
		out, err := exec.Command(bin, "--help").CombinedOutput()
		if err != nil || len(out) == 0 {
			t.Fatalf("%s --help: %v\n%s", bin, err, out)
		}
	}
}
