package main

import (
	"net"
	"os"
)

// sdNotify sends state (e.g. "READY=1") to the service manager when it
// asked for it through $NOTIFY_SOCKET (systemd's Type=notify); without
// that variable it does nothing. A leading '@' names an abstract socket.
// The protocol is one datagram; no library is needed for it.
func sdNotify(state string) error {
	path := os.Getenv("NOTIFY_SOCKET")
	if path == "" {
		return nil
	}
	if path[0] == '@' {
		path = "\x00" + path[1:]
	}
	c, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		return err
	}
	defer c.Close()
	_, err = c.Write([]byte(state))
	return err
}
