package tlspsk

import "testing"

// TestNegotiate: the server's decision on a ClientHello, one field changed
// at a time from one it takes.
func TestNegotiate(t *testing.T) {
	good := func() *clientHello {
		return &clientHello{
			versions: []uint16{versionTLS13, versionTLS12}, suites: []uint16{0x1302, suiteAES128GCMSHA256},
			nullCompression: true, pskModes: []byte{0, modePSKDHE},
			identities: []pskIdentity{{identity: []byte("mallory")}, {identity: []byte("bob")}},
			shares:     []keyShare{{group: 24}, {group: groupP256}}, groups: []uint16{24, groupP256, groupX25519},
		}
	}
	for _, tc := range []struct {
		name    string
		change  func(*clientHello)
		retried bool
		alert   uint8
		want    choice
	}{
		{"takes the first known identity and usable share", func(*clientHello) {}, false, 0, choice{identity: 1, share: keyShare{group: groupP256}}},
		{"no usable share: retry, X25519 first", func(c *clientHello) { c.shares = c.shares[:1] }, false, 0, choice{identity: 1, retry: groupX25519}},
		{"no usable share after a retry", func(c *clientHello) { c.shares = c.shares[:1] }, true, alertHandshakeFailure, choice{}},
		{"no usable group", func(c *clientHello) { c.shares, c.groups = c.shares[:1], []uint16{24} }, false, alertHandshakeFailure, choice{}},
		{"TLS 1.2 only", func(c *clientHello) { c.versions = []uint16{versionTLS12} }, false, alertProtocolVersion, choice{}},
		{"compression", func(c *clientHello) { c.nullCompression = false }, false, alertIllegalParameter, choice{}},
		{"no AES-128-GCM", func(c *clientHello) { c.suites = []uint16{0x1302} }, false, alertHandshakeFailure, choice{}},
		{"no PSK", func(c *clientHello) { c.identities = nil }, false, alertMissingExtension, choice{}},
		{"psk_ke only", func(c *clientHello) { c.pskModes = []byte{0} }, false, alertHandshakeFailure, choice{}},
		{"0-RTT", func(c *clientHello) { c.earlyData = true }, false, alertIllegalParameter, choice{}},
		{"unknown identities", func(c *clientHello) { c.identities = c.identities[:1] }, false, alertUnknownPSKIdentity, choice{}},
	} {
		ch := good()
		tc.change(ch)
		got, err := negotiate(ch, testKeys, tc.retried)
		switch {
		case tc.alert == 0 && (err != nil || got.identity != tc.want.identity || got.retry != tc.want.retry || got.share.group != tc.want.share.group):
			t.Errorf("%s: got %+v, %v; want %+v", tc.name, got, err, tc.want)
		case tc.alert != 0 && (err == nil || err.alert != tc.alert):
			t.Errorf("%s: got %+v, %v; want alert %d", tc.name, got, err, tc.alert)
		}
	}
}
