package main

import (
	"crypto/tls"
	"time"

	"github.com/spf13/pflag"

	"github.com/nbdmirror/nbdmirror/internal/tlsdir"
	"github.com/nbdmirror/nbdmirror/internal/tlspsk"
	"github.com/nbdmirror/nbdmirror/nbdserver"
)

// nbdSecurity is what serve's flags say about the NBD export's TLS and the
// bounds that keep a bad or hostile client from exhausting the daemon.
type nbdSecurity struct {
	tlsMode      string
	tlsCerts     string
	tlsVerify    bool
	tlsPSK       string
	maxInflight  string
	maxConns     int
	handshake    time.Duration
	replyTimeout time.Duration

	mode        nbdserver.TLSMode
	tls         *tls.Config
	psk         tlspsk.Keys
	inflight    int64
	connections int
}

func (s *nbdSecurity) addFlags(fs *pflag.FlagSet) {
	fs.StringVar(&s.tlsMode, "tls", "off", "NBD export TLS (STARTTLS): off, on (clients choose) or require")
	fs.StringVar(&s.tlsCerts, "tls-certificates", "", "directory of ca-cert.pem, server-cert.pem and server-key.pem (as nbdkit and qemu read it)")
	fs.BoolVar(&s.tlsVerify, "tls-verify-peer", false, "NBD clients must present a certificate signed by ca-cert.pem")
	fs.StringVar(&s.tlsPSK, "tls-psk", "", "nbdkit's PSK file (username:hexkey lines, mode 0600): TLS 1.3 with these pre-shared keys instead of certificates")
	fs.StringVar(&s.maxInflight, "max-inflight-bytes", "256M", "READ and WRITE payload the NBD export holds for all clients at once; each connection may hold a quarter (at least 32M)")
	fs.IntVar(&s.maxConns, "max-connections", nbdserver.DefaultMaxConnections, "NBD connections open at once, negotiating or not; 0 is no bound")
	fs.DurationVar(&s.handshake, "handshake-limit", nbdserver.DefaultHandshakeTimeout, "time an NBD client has to negotiate (TLS handshake included) before it is dropped; 0 is no limit")
	fs.DurationVar(&s.replyTimeout, "nbd-reply-timeout", nbdserver.DefaultReplyTimeout, "an NBD client that takes none of its replies for this long is dropped; 0 is no limit")
}

// complete checks the flags and loads the certificates.
func (s *nbdSecurity) complete() error {
	var err error
	if s.mode, err = nbdserver.ParseTLSMode(s.tlsMode); err != nil {
		return usagef("--tls %q: want off, on or require", s.tlsMode)
	}
	switch {
	case s.mode == nbdserver.TLSOff && (s.tlsCerts != "" || s.tlsVerify || s.tlsPSK != ""):
		return usagef("--tls-certificates, --tls-verify-peer and --tls-psk need --tls on or --tls require")
	case s.mode != nbdserver.TLSOff && s.tlsCerts == "" && s.tlsPSK == "":
		return usagef("--tls %s needs --tls-certificates DIR or --tls-psk FILE", s.tlsMode)
	case s.maxConns < 0 || s.handshake < 0 || s.replyTimeout < 0:
		return usagef("--max-connections, --handshake-limit and --nbd-reply-timeout take 0 (no bound) or more")
	}
	if s.inflight, err = parseSize(s.maxInflight); err != nil || s.inflight < 1<<20 {
		return usagef("--max-inflight-bytes %q: want a size of at least 1M", s.maxInflight)
	}
	return s.loadTLS()
}

// loadTLS loads the keys or the certificates. As with nbdkit, --tls-psk
// takes the place of certificates: with it, --tls-certificates and
// --tls-verify-peer are not used (the key authenticates the client).
func (s *nbdSecurity) loadTLS() error {
	var err error
	switch {
	case s.mode == nbdserver.TLSOff:
	case s.tlsPSK != "":
		if s.psk, err = tlspsk.LoadKeys(s.tlsPSK); err != nil {
			return usagef("--tls-psk: %v", err)
		}
	default:
		if s.tls, err = tlsdir.Server(s.tlsCerts, s.tlsVerify); err != nil {
			return usagef("--tls-certificates: %v", err)
		}
	}
	return nil
}

// apply sets the export's options; 0 flags become the server's "no bound".
func (s *nbdSecurity) apply(o *nbdserver.Options) {
	o.TLSMode, o.TLS, o.TLSPSK = s.mode, s.tls, s.psk
	o.MaxInFlightBytes = s.inflight
	o.MaxConnections = orNoBound(s.maxConns)
	o.HandshakeTimeout = time.Duration(orNoBound(int64(s.handshake)))
	o.ReplyTimeout = time.Duration(orNoBound(int64(s.replyTimeout)))
}

// orNoBound maps a flag's 0 (no bound) to the -1 nbdserver.Options means by it.
func orNoBound[T int | int64](v T) T {
	if v == 0 {
		return -1
	}
	return v
}
