package main

import (
	"fmt"
	"io"
	"runtime/debug"
	"strings"
)

// runVersion prints the module version and the VCS revision the binary was
// built from, as the Go toolchain recorded them in its build info.
func runVersion(args []string, stdout io.Writer) error {
	if len(args) > 0 {
		return usagef("version takes no arguments")
	}
	info, ok := debug.ReadBuildInfo()
	if !ok {
		info = nil
	}
	_, err := io.WriteString(stdout, versionText(info))
	return err
}

// versionText is the text of `nbdmirror version` for a build's info (nil:
// a binary built without module support).
func versionText(info *debug.BuildInfo) string {
	if info == nil {
		return "nbdmirror: no build info in this binary\n"
	}
	version := info.Main.Version
	if version == "" {
		version = "(devel)"
	}
	settings := map[string]string{}
	for _, s := range info.Settings {
		settings[s.Key] = s.Value
	}
	var b strings.Builder
	fmt.Fprintf(&b, "nbdmirror %s %s\n", info.Main.Path, version)
	if rev := settings["vcs.revision"]; rev != "" {
		fmt.Fprintf(&b, "revision %s", rev)
		if t := settings["vcs.time"]; t != "" {
			fmt.Fprintf(&b, " (%s)", t)
		}
		if settings["vcs.modified"] == "true" {
			b.WriteString(" with uncommitted changes")
		}
		b.WriteString("\n")
	} else {
		b.WriteString("revision unknown (not built in a git clone, or built with -buildvcs=false)\n")
	}
	fmt.Fprintf(&b, "built with %s\n", info.GoVersion)
	return b.String()
}
