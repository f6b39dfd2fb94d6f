package main

import (
	"fmt"
	"io"
	"os"
	"os/signal"
	"time"

	"github.com/schollz/progressbar/v3"
)

// drawBar says whether a resync's progress shows as a bar: from the time
// its gap is known until the resync is over, so that one resync draws one
// bar, from 0 to 100% (the last bytes acknowledged before the end is).
func drawBar(st Status, drawing bool) bool {
	r := st.Peer.Resync
	syncing := st.Peer.Replication == "SyncSource" || st.Peer.Replication == "SyncTarget"
	return syncing && r.TotalBytes > 0 && (r.DoneBytes < r.TotalBytes || drawing)
}

// watchStatus prints the status every interval until interrupted; while a
// resync runs it draws a progress bar with its rate and ETA.
func watchStatus(c *controlClient, stdout io.Writer, interval time.Duration) error {
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, os.Interrupt)
	defer signal.Stop(stop)
	var bar *progressbar.ProgressBar
	last := ""
	for {
		var st Status
		if err := c.get("/status", &st); err != nil {
			return err
		}
		r := st.Peer.Resync
		switch {
		case drawBar(st, bar != nil):
			if bar == nil {
				fmt.Fprintf(stdout, "%s %s: resync %s of %s\n", st.Name, st.Peer.Replication, humanBytes(r.TotalBytes-r.DoneBytes), humanBytes(r.TotalBytes))
				bar = progressbar.NewOptions64(r.TotalBytes, progressbar.OptionSetWriter(stdout),
					progressbar.OptionShowBytes(true), progressbar.OptionSetDescription("resync"),
					progressbar.OptionSetPredictTime(true), progressbar.OptionShowElapsedTimeOnFinish(),
					progressbar.OptionFullWidth())
			}
			bar.ChangeMax64(r.TotalBytes)
			bar.Set64(r.DoneBytes)
		default:
			if bar != nil {
				bar.Finish()
				fmt.Fprintln(stdout)
				bar = nil
			}
			line := fmt.Sprintf("%s role:%s disk:%s peer:%s/%s/%s out-of-sync:%s", st.Name, st.Role, st.Disk,
				st.Peer.Connection, st.Peer.Replication, st.Peer.Disk, humanBytes(int64(st.Stats.OutOfSyncBytes)))
			if line != last {
				fmt.Fprintf(stdout, "%s %s\n", time.Now().Format("15:04:05"), line)
				last = line
			}
		}
		select {
		case <-stop:
			return nil
		case <-time.After(interval):
		}
	}
}
