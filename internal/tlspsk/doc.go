// Package tlspsk is a TLS 1.3 server for external pre-shared keys only
// (RFC 8446 with the psk_dhe_ke mode: the key authenticates both sides, an
// ephemeral X25519 or P-256 exchange gives forward secrecy; no
// certificates). Go's crypto/tls has no external PSK (golang/go#6379), and
// no maintained Go TLS library has one; this package is the small part of
// TLS 1.3 that nbdkit's --tls-psk needs, so GnuTLS clients (libnbd's
// nbdinfo, nbdcopy, qemu) can reach the NBD export with a shared key.
//
// What it does: one cipher suite (TLS_AES_128_GCM_SHA256, the one every TLS
// 1.3 client offers and the one GnuTLS pairs with a SHA-256 PSK), the
// middlebox compatibility mode, a HelloRetryRequest when the client sent
// no key share of a group it supports, KeyUpdate in both directions,
// close_notify. What it refuses: TLS 1.2 and older, psk_ke without (EC)DHE,
// resumption tickets (it issues none), 0-RTT data.
//
// Usage, with the keys of nbdkit's PSK file (lines of username:hexkey):
//
//	keys, err := tlspsk.LoadKeys("/etc/nbdmirror/keys.psk")
//	tc := tlspsk.Server(conn, &tlspsk.Config{Keys: keys})
//	if err := tc.Handshake(); err != nil { ... } // tc.Identity() names the client
//	tc.Read(...); tc.Write(...)
package tlspsk
