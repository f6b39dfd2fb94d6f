// Package wire owns the bytes on the link between the two nodes of a
// resource, and the handshake's decisions that need no I/O. It reads from an
// io.Reader and appends to a []byte; it knows nothing of sockets, clocks or
// goroutines.
//
// # Frames (layout version 1, frozen: change it only with Version)
//
// Every frame is a 16-byte header and a body; integers are big endian.
//
//	 0      4      5       6          8        12       16
//	+------+------+-------+----------+--------+--------+---------------+
//	| magic| type | flags | reserved | length | crc    | body ...      |
//	| NBMF |  u8  |  u8   |  0 0     |  u32   |  u32   | length bytes  |
//	+------+------+-------+----------+--------+--------+---------------+
//
// crc is the CRC-32C (Castagnoli) of header bytes 0-11 followed by the
// body. length is at most MaxBodySize (33 MiB), 1 KiB in the handshake. A
// frame whose magic, length or crc is wrong is never acted on. Reserved
// bytes are sent as zero and ignored on read. The bodies:
//
//	Hello    1  magic "NBMH" u32, version u16, flags u16, node id u64,
//	            size u64, role u8, disk u8, name length u8, 5 zero bytes,
//	            gen current u64, gen bitmap u64, gen history 4*u64,
//	            last seq u64, nonce [32], resource name (1-64 bytes)
//	Auth     2  proof [32]: HMAC-SHA256, see Proof
//	Refuse   3  reason u16, text (0-512 bytes)
//	Ready    4  empty
//	Ping     8  token u64
//	Pong     9  token u64
//	Bye     10  empty
//	Record  16  seq u64, journal record bytes (opaque here)
//	Barrier 17  seq u64
//	Ack     18  seq u64, kind u8
//	        32-63 reserved for resync frames
//
// # Use
//
// Connect with Handshake under a deadline, then stream frames:
//
//	conn.SetDeadline(time.Now().Add(10 * time.Second))
//	peer, err := wire.Handshake(conn, local, secret, dialed)
//	conn.SetDeadline(time.Time{})
//
//	buf = wire.AppendAck(buf[:0], wire.Ack{Kind: wire.Journaled, Seq: 41})
//	buf, err = wire.AppendRecordHeader(buf, 42, rec) // rec is read, not copied
//	_, err = (&net.Buffers{buf, rec}).WriteTo(conn)  // both frames, one writev
//
//	r := wire.NewReader(bufio.NewReaderSize(conn, 256<<10))
//	for {
//		f, err := r.Next() // f.Body is valid until the next call
//		...
//		switch f.Type {
//		case wire.TypeRecord:
//			seq, rec, err := wire.ParseRecord(f.Body)
//		}
//	}
package wire
