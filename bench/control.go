package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"time"
)

// control speaks to a daemon's control socket (HTTP over a Unix socket,
// as `nbdmirror status` and `connect` do) from within the harness. A
// resync's progress is read many times a second while both cores work
// for it; a process started per read would take CPU from what it measures.
type control struct {
	sock string
	http *http.Client
}

func newControl(sock string) *control {
	return &control{sock: sock, http: &http.Client{
		Timeout: time.Minute,
		Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", sock)
		}},
	}}
}

// do sends method route and decodes the JSON answer into v (if not nil).
func (c *control) do(method, route string, v any) error {
	req, err := http.NewRequest(method, "http://nbdmirror"+route, nil)
	if err != nil {
		return err
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return fmt.Errorf("%s %s on %s: %w", method, route, c.sock, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return fmt.Errorf("%s %s on %s: %w", method, route, c.sock, err)
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s %s on %s: %s: %s", method, route, c.sock, resp.Status, strings.TrimSpace(string(body)))
	}
	if v == nil {
		return nil
	}
	return json.Unmarshal(body, v)
}

func (c *control) close() { c.http.CloseIdleConnections() }
