package main

import (
	"net"
	"net/http"
	"net/http/pprof"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// metrics serves Prometheus metrics on --metrics-listen: counters read from
// the resource's status at each scrape, a histogram of write latency, and
// the standard Go runtime and process collectors (go_*, process_*:
// goroutines, memory, open file descriptors). Go's profiles are served
// there too, at /debug/pprof/, only with --pprof: they tell whoever
// reaches the port much about the process, and cost it CPU.
type metrics struct {
	reg     *prometheus.Registry
	latency prometheus.Histogram
	// stages times each stage of a write (replication.Config.ObserveStage),
	// by the stage label; byStage holds the known stages' series, looked
	// up without hashing the label on every write. Read-only once made.
	stages  *prometheus.HistogramVec
	byStage map[string]prometheus.Observer
	srv     *http.Server
}

// writeStages are the stages replication and the journal report.
var writeStages = []string{"journal", "peer", "flush", "journal_write", "journal_sync", "journal_stall",
	"checkpoint", "apply", "apply_wait"}

func newMetrics(name string) *metrics {
	m := &metrics{reg: prometheus.NewRegistry()}
	m.latency = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:        "nbdmirror_write_latency_seconds",
		Help:        "Time from a write's arrival at the resource to its acknowledgement.",
		ConstLabels: prometheus.Labels{"resource": name},
		Buckets:     prometheus.ExponentialBuckets(5e-6, 2, 18),
	})
	m.stages = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name: "nbdmirror_write_stage_seconds",
		Help: "Time spent in each stage of a write: journal (submission to the record written in the journal), " +
			"peer (submission to the peer's ack), flush, and the journal's steps: journal_write (a batch's pwritev), " +
			"journal_sync (an fdatasync), journal_stall (an append waiting for space), checkpoint, apply (a disk write), " +
			"apply_wait (the applier waiting for the journal sync of a batch outside the activity set).",
		ConstLabels: prometheus.Labels{"resource": name},
		Buckets:     prometheus.ExponentialBuckets(1e-6, 2, 24),
	}, []string{"stage"})
	m.byStage = map[string]prometheus.Observer{}
	for _, s := range writeStages {
		m.byStage[s] = m.stages.WithLabelValues(s)
	}
	m.reg.MustRegister(m.latency, m.stages, collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// observe records one write's latency.
func (m *metrics) observe(d time.Duration) { m.latency.Observe(d.Seconds()) }

// observeStage records how long one stage of a write took.
func (m *metrics) observeStage(stage string, d time.Duration) {
	o, ok := m.byStage[stage]
	if !ok {
		o = m.stages.WithLabelValues(stage)
	}
	o.Observe(d.Seconds())
}

// stageObserver is what times the stages of each write: only with
// --metrics-listen, where they show; each costs a clock reading or two.
func (d *daemon) stageObserver() func(string, time.Duration) {
	if d.cfg.metricsListen == "" {
		return nil
	}
	return d.metrics.observeStage
}

// serve registers the status-backed collector and starts the listener.
func (m *metrics) serve(ln net.Listener, d *daemon) {
	m.reg.MustRegister(statusCollector{d})
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{}))
	if d.cfg.pprof {
		mux.HandleFunc("/debug/pprof/", pprof.Index) // profiles, for make profile
		mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	}
	m.srv = &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go m.srv.Serve(ln)
}

func (m *metrics) close() {
	if m.srv != nil {
		m.srv.Close()
	}
}

// statusCollector turns a status snapshot into metrics.
type statusCollector struct{ d *daemon }

var (
	descWrites    = metricDesc("writes_total", "Writes, trims and zeroes acknowledged.")
	descBytes     = metricDesc("bytes_written_total", "Bytes written, trimmed or zeroed.")
	descReplRaw   = metricDesc("replication_raw_bytes_total", "Disk bytes carried to the peer.")
	descReplWire  = metricDesc("replication_wire_bytes_total", "Bytes sent on the peer link.")
	descResync    = metricDesc("resync_wire_bytes_total", "Bytes of resync traffic sent.")
	descOOS       = metricDesc("out_of_sync_bytes", "Bytes of the disk the peer may not hold.")
	descLagRec    = metricDesc("replication_lag_records", "Records sent to the peer and not yet acknowledged.")
	descLagBytes  = metricDesc("replication_lag_bytes", "Bytes of the records not yet acknowledged by the peer.")
	descReadRem   = metricDesc("reads_remote_total", "Reads served by the peer's disk (--read-balancing).")
	descConnected = metricDesc("peer_connected", "1 when the peer link is up.")
	descPrimary   = metricDesc("primary", "1 when this node is Primary.")
	descHolder    = metricDesc("coordinator_holder", "1 when this node holds the election in etcd (--etcd).")
	descLeaseTTL  = metricDesc("coordinator_lease_ttl_seconds", "TTL of the etcd lease (--lease-ttl).")
	descLeaseLeft = metricDesc("coordinator_lease_remaining_seconds", "Time left before the holder stops completing writes.")
	descPeerOut   = metricDesc("coordinator_peer_outdated", "1 when this node recorded its peer outdated in etcd.")
	descSuspended = metricDesc("coordinator_suspended", "1 when the holder's writes are suspended.")
	descNBD       = prometheus.NewDesc("nbdmirror_nbd_requests_total", "NBD requests completed, by command.",
		[]string{"resource", "command"}, nil)
	descDiskErrors = prometheus.NewDesc("nbdmirror_disk_errors_total",
		"I/O errors of the disk, journal or metadata, by operation (read, write, flush, replicate, journal, meta).",
		[]string{"resource", "op"}, nil)
	descDiskless = metricDesc("diskless", "1 when the disk is out (Failed or Diskless).")
)

func metricDesc(name, help string) *prometheus.Desc {
	return prometheus.NewDesc("nbdmirror_"+name, help, []string{"resource"}, nil)
}

func (c statusCollector) Describe(ch chan<- *prometheus.Desc) {
	prometheus.DescribeByCollect(c, ch)
}

func (c statusCollector) Collect(ch chan<- prometheus.Metric) {
	st := c.d.status()
	counter := func(d *prometheus.Desc, v uint64) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), st.Name)
	}
	gauge := func(d *prometheus.Desc, v float64) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, st.Name)
	}
	counter(descWrites, st.Stats.Writes)
	counter(descBytes, st.Stats.BytesWritten)
	counter(descReplRaw, st.Stats.ReplBytesRaw)
	counter(descReplWire, st.Stats.ReplBytesWire)
	counter(descResync, st.Stats.ResyncBytesWire)
	counter(descReadRem, st.Stats.ReadRemote)
	gauge(descOOS, float64(st.Stats.OutOfSyncBytes))
	gauge(descLagRec, float64(st.Stats.ReplLagRecords))
	gauge(descLagBytes, float64(st.Stats.ReplLagBytes))
	gauge(descConnected, boolFloat(st.Peer.Connection == "Connected"))
	gauge(descPrimary, boolFloat(st.Role == "Primary"))
	if co := st.Coordinator; co != nil {
		gauge(descHolder, boolFloat(co.Holder != "" && co.Holder == co.ID))
		gauge(descLeaseTTL, co.LeaseTTL)
		gauge(descLeaseLeft, co.LeaseRemaining)
		gauge(descPeerOut, boolFloat(co.PeerOutdated))
		gauge(descSuspended, boolFloat(co.Suspended))
	}
	gauge(descDiskless, boolFloat(st.Disk == "Failed" || st.Disk == "Diskless"))
	for _, e := range c.d.res.DiskErrors() {
		ch <- prometheus.MustNewConstMetric(descDiskErrors, prometheus.CounterValue, float64(e.Count), st.Name, e.Operation)
	}
	for cmd, v := range map[string]uint64{"read": st.NBD.Reads, "write": st.NBD.Writes, "fua_write": st.NBD.FUAWrites,
		"flush": st.NBD.Flushes, "trim": st.NBD.Trims, "zero": st.NBD.Zeroes} {
		ch <- prometheus.MustNewConstMetric(descNBD, prometheus.CounterValue, float64(v), st.Name, cmd)
	}
}

func boolFloat(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
