package testtools

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

func TestRequired(t *testing.T) {
	for _, c := range []struct {
		env  map[string]string
		want bool
	}{
		{nil, false},
		{map[string]string{"CI": "true"}, true},
		{map[string]string{"CI": "1"}, true},
		{map[string]string{"CI": "false"}, false},
		{map[string]string{"CI": "0"}, false},
		{map[string]string{"NBDMIRROR_REQUIRE_TOOLS": "1"}, true},
		{map[string]string{"CI": "false", "NBDMIRROR_REQUIRE_TOOLS": "1"}, true},
	} {
		if got := Required(func(k string) string { return c.env[k] }); got != c.want {
			t.Errorf("Required(%v) = %v, want %v", c.env, got, c.want)
		}
	}
}

// fakeT records what Need asks of a test.
type fakeT struct {
	testing.TB
	fatal, skip string
}

func (f *fakeT) Helper()                        {}
func (f *fakeT) Name() string                   { return "TestFake" }
func (f *fakeT) Fatalf(format string, a ...any) { f.fatal = fmt.Sprintf(format, a...) }
func (f *fakeT) Skipf(format string, a ...any)  { f.skip = fmt.Sprintf(format, a...) }

func TestNeedFailsOrSkips(t *testing.T) {
	for _, c := range []struct {
		ci       string
		wantFail bool
	}{{"", false}, {"true", true}} {
		t.Setenv("CI", c.ci)
		t.Setenv("NBDMIRROR_REQUIRE_TOOLS", "")
		t.Setenv("PATH", t.TempDir()) // nothing on it
		f := &fakeT{}
		Need(f, "fio")
		got := f.skip
		if c.wantFail {
			got = f.fatal
		}
		if got == "" || !strings.Contains(got, "fio not installed: apt-get install fio") {
			t.Errorf("CI=%q: fatal %q, skip %q", c.ci, f.fatal, f.skip)
		}
		if (f.fatal != "") != c.wantFail || (f.skip != "") == c.wantFail {
			t.Errorf("CI=%q: fatal %q, skip %q: want fail %v", c.ci, f.fatal, f.skip, c.wantFail)
		}
	}
}

// TestNeedToolsScript runs the Makefile's install step (.ci/need-tools) on
// tools that exist and tools that do not, without installing anything: -n
// prints the apt-get line it would run as root, and a non-root caller gets
// the line to run.
func TestNeedToolsScript(t *testing.T) {
	script, err := filepath.Abs("../../.ci/need-tools")
	if err != nil {
		t.Fatal(err)
	}
	sh, err := exec.LookPath("sh") // a tool every machine has
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name    string
		args    []string
		uid     string
		wantErr bool
		want    []string
		notWant []string
	}{
		{"all present", []string{"-n", "sh=dash", sh + "=dash"}, "", false, nil, []string{"apt-get"}},
		{"root installs the missing only", []string{"-n", "sh=dash", "nbdmirror-no-such-tool=fakepkg",
			"/nonexistent/file=fakefile", "nbdmirror-no-such-tool-2=fakepkg"}, "", true,
			[]string{"missing: nbdmirror-no-such-tool /nonexistent/file nbdmirror-no-such-tool-2",
				"would run: apt-get update && apt-get install -y --no-install-recommends fakefile fakepkg\n"},
			[]string{"dash"}},
		{"not root prints the line", []string{"sh=dash", "nbdmirror-no-such-tool=fakepkg"}, "1000", true,
			[]string{"missing: nbdmirror-no-such-tool. As root (Debian), run:",
				"  apt-get install -y --no-install-recommends fakepkg\n"}, []string{"dash"}},
	} {
		cmd := exec.Command(script, c.args...)
		cmd.Env = append(os.Environ(), "NEED_TOOLS_UID="+c.uid)
		out, err := cmd.CombinedOutput()
		if (err != nil) != c.wantErr {
			t.Errorf("%s: err %v, want error %v\n%s", c.name, err, c.wantErr, out)
		}
		for _, w := range c.want {
			if !strings.Contains(string(out), w) {
				t.Errorf("%s: output lacks %q:\n%s", c.name, w, out)
			}
		}
		for _, w := range c.notWant {
			if strings.Contains(string(out), w) {
				t.Errorf("%s: output has %q:\n%s", c.name, w, out)
			}
		}
	}
}
