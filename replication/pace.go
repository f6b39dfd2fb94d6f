package replication

import "time"

// pacer keeps a resync under a rate in bytes per second; zero means as fast
// as the link allows.
type pacer struct {
	rate  int64
	start time.Time
	sent  int64
}

func newPacer(rate int64) *pacer { return &pacer{rate: rate, start: time.Now()} }

// wait accounts n bytes and sleeps until they fit the rate, or stop closes.
func (p *pacer) wait(n int64, stop <-chan struct{}) {
	if p.rate <= 0 {
		return
	}
	p.sent += n
	due := p.start.Add(time.Duration(float64(p.sent) / float64(p.rate) * float64(time.Second)))
	if d := time.Until(due); d > 0 {
		select {
		case <-time.After(d):
		case <-stop:
		}
	}
}
