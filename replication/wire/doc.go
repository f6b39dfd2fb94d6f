// Package wire owns the bytes on the link between the two nodes of a
// resource, and the handshake's decisions that need no I/O. It reads from an
// io.Reader and appends to a []byte; it knows nothing of sockets, clocks or
// goroutines.
//
// # Frames (layout version 1, frozen: change it only with Version)
//
// Every frame is a 16-byte header and a body; the header's integers are
// big endian.
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
// bytes are sent as zero and ignored on read. The bodies (be: big endian,
// le: little endian; each as existing peers send it):
//
//	Hello        1  magic "NBMH" u32, version u16, flags u16, node id u64,
//	                size u64, role u8, disk u8, name length u8, 5 zero bytes,
//	                gen current u64, gen bitmap u64, gen history 4*u64,
//	                last seq u64, nonce [32], lost from u64, resource name
//	                (1-64 bytes); be
//	Auth         2  proof [32]: HMAC-SHA256, see Proof
//	Refuse       3  reason u16 be, text (0-512 bytes)
//	Ready        4  empty
//	Ping         8  token u64 be
//	Pong         9  token u64 be
//	Bye         10  empty
//	DiskState   11  disk u8, generation id u64; be: a Primary's disk went
//	                out (Diskless, its new generation) or came back (UpToDate)
//	            16  was Record; never reuse
//	Barrier     17  seq u64 be
//	Ack         18  seq u64 be, kind u8
//	Records     19  records back to back, see RecordHeaderSize; le
//	ReadRequest 20  id u64, offset u64, length u32; be; only to a peer
//	                whose Hello has ServesReads
//	ReadReply   21  id u64, status u8, data (with status 0 only); be
//	RolePrimary 28  empty
//	RoleAnswer  29  yes u8, text (0-200 bytes)
//	SumRequest  32  first block u64, count u32; le
//	Sums        33  first block u64, 16 bytes per block; le
//	SyncStart   34  mode u8, full u8; flag SyncInPlace: the journal tail
//	                holds writes made in place
//	BitmapChunk 35  first word u64, words u64...; le; flag BitmapEnd: the
//	                last frame of an exchange, empty
//	SyncDone    36  generation id u64 be
//
// Each type has an Append function that writes its whole frame (Records:
// AppendRecordsHeader, the records written by AppendRecord after it) and,
// unless its body is empty, a Parse function that checks the body's length
// and values (Pong: ParsePing).
//
// # Use
//
// Connect with Handshake under a deadline, then stream frames:
//
//	conn.SetDeadline(time.Now().Add(10 * time.Second))
//	peer, err := wire.Handshake(conn, local, secret, dialed)
//	conn.SetDeadline(time.Time{})
//
//	recs = wire.AppendRecord(recs[:0], rec, prevSeq)  // rec is journal's
//	buf = wire.AppendAck(buf[:0], wire.Ack{Kind: wire.Journaled, Seq: 41})
//	buf, err = wire.AppendRecordsHeader(buf, [][]byte{recs})
//	_, err = (&net.Buffers{buf, recs}).WriteTo(conn) // both frames, one writev
//
//	r := wire.NewReader(bufio.NewReaderSize(conn, 256<<10))
//	for {
//		f, err := r.Next() // f.Body is valid until the next call
//		...
//		switch f.Type {
//		case wire.TypeRecords:
//			for b := f.Body; len(b) > 0; b = b[n:] {
//				rec, n, err = wire.ParseRecord(b, diskSize, prevSeq)
//				...
//				prevSeq = rec.Seq
//			}
//		}
//	}
package wire
