// Command nbdmirror runs and controls a replicated block device exported over NBD.
//
//	nbdmirror serve --disk /var/lib/nbdmirror/r0.img --size 10G --primary
//	nbdmirror status [--json] [--control /run/nbdmirror/r0.sock]
//
// serve is the daemon; the other subcommands talk to it over its Unix control
// socket.
package main

import (
	"errors"
	"fmt"
	"io"
	"os"
)

// exitUsage is the exit code for bad flags or files.
const exitUsage = 2

// usageError marks errors that are the caller's input, not the daemon's failure.
type usageError struct{ err error }

func (e usageError) Error() string { return e.err.Error() }
func (e usageError) Unwrap() error { return e.err }

func usagef(format string, a ...any) error { return usageError{fmt.Errorf(format, a...)} }

var commands = map[string]func(args []string, stdout io.Writer) error{
	"serve":      runServe,
	"status":     runStatus,
	"role":       runRole,
	"connect":    runLinkCommand("connect"),
	"disconnect": runLinkCommand("disconnect"),
	"resolve":    runResolve,
	"verify":     runVerify,
	"attach":     runAttach,
	"detach":     runDetach,
	"disk":       runDisk,
	"version":    runVersion,
}

const usage = `usage: nbdmirror COMMAND [flags]

commands:
  serve       run the daemon for one resource
  status      show a running daemon's state (--json for scripts)
  role        primary|secondary [--force]: promote or demote the node
  connect     connect to the peer again after a disconnect
  disconnect  drop the link to the peer and stay StandAlone
  resolve     --discard-my-data: after a split brain, take the peer's data
  verify      compare every block with the peer's; mark the ones that differ
  attach      --nbd ADDR [--export NAME] /dev/nbdN: connect a kernel NBD device
  detach      /dev/nbdN: disconnect it
  disk        detach | attach [--disk PATH]: take the disk out (Diskless), or put one in (resync)
  version     the module version and git revision of this binary (also --version)

Run 'nbdmirror COMMAND --help' for a command's flags.
`

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		fmt.Fprint(stderr, usage)
		if len(args) == 0 {
			return exitUsage
		}
		return 0
	}
	name := args[0]
	if name == "--version" || name == "-version" {
		name = "version"
	}
	cmd, ok := commands[name]
	if !ok {
		fmt.Fprintf(stderr, "nbdmirror: unknown command %q\n%s", name, usage)
		return exitUsage
	}
	err := cmd(args[1:], stdout)
	switch {
	case err == nil:
		return 0
	case errors.Is(err, errHelp):
		return 0
	case errors.As(err, new(usageError)):
		fmt.Fprintf(stderr, "nbdmirror %s: %v\n", name, err)
		return exitUsage
	default:
		fmt.Fprintf(stderr, "nbdmirror %s: %v\n", name, err)
		return 1
	}
}
