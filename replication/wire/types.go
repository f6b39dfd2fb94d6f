package wire

import "fmt"

// Type is a frame's type, the byte at offset 4 of its header.
type Type uint8

// Frame types. Numbers are part of the protocol: never reuse one.
const (
	// Handshake: 1-7.
	TypeHello  Type = 1 // Hello: who I am, what I hold
	TypeAuth   Type = 2 // 32-byte HMAC-SHA256 proof, see Proof
	TypeRefuse Type = 3 // reason code + text; the sender then closes
	TypeReady  Type = 4 // empty: the dialer accepted the listener's proof

	// Link upkeep: 8-15.
	TypePing Type = 8  // uint64 token, answered by a Pong with the same token
	TypePong Type = 9  // uint64 token
	TypeBye  Type = 10 // empty: orderly close, no more frames follow
	// A Primary's disk went out or came back, see DiskStateMsg.
	TypeDiskState Type = 11

	// Replication: 16-31.
	// 16 was Record; never reuse.
	TypeBarrier Type = 17 // seq: make everything <= seq durable, then ack Synced
	TypeAck     Type = 18 // kind + cumulative seq
	TypeRecords Type = 19 // records back to back, see AppendRecord
	// Roles: 28-31.
	TypeRolePrimary Type = 28 // empty: the sender asks to become Primary, see RoleAnswer
	TypeRoleAnswer  Type = 29 // the peer's answer to RolePrimary
	// Remote reads (to a peer whose Hello carries ServesReads).
	TypeReadRequest Type = 20 // id, offset, length: read the disk, see ReadRequest
	TypeReadReply   Type = 21 // id, status, data: the answer, see ReadReply

	// Resync: 32-63.
	TypeSumRequest  Type = 32 // first block + count: send their checksums, see SumRequest
	TypeSums        Type = 33 // first block + 16 bytes of SHA-256 per block, see Sums
	TypeSyncStart   Type = 34 // how the source syncs, see SyncStart
	TypeBitmapChunk Type = 35 // first word index + bitmap words; flag BitmapEnd: the last chunk
	TypeSyncDone    Type = 36 // uint64: the source's current generation id; the target is UpToDate
	// 64-255 unassigned.
)

var typeNames = map[Type]string{
	TypeHello:       "hello",
	TypeAuth:        "auth",
	TypeRefuse:      "refuse",
	TypeReady:       "ready",
	TypePing:        "ping",
	TypePong:        "pong",
	TypeBye:         "bye",
	TypeDiskState:   "disk-state",
	TypeBarrier:     "barrier",
	TypeAck:         "ack",
	TypeRecords:     "records",
	TypeRolePrimary: "role-primary",
	TypeRoleAnswer:  "role-answer",
	TypeReadRequest: "read-request",
	TypeReadReply:   "read-reply",
	TypeSumRequest:  "sum-request",
	TypeSums:        "sums",
	TypeSyncStart:   "sync-start",
	TypeBitmapChunk: "bitmap-chunk",
	TypeSyncDone:    "sync-done",
}

func (t Type) known() bool {
	_, ok := typeNames[t]
	return ok
}

func (t Type) String() string {
	if s, ok := typeNames[t]; ok {
		return s
	}
	return fmt.Sprintf("type(%d)", uint8(t))
}

// Role is a node's role as announced in its Hello.
type Role uint8

const (
	Secondary Role = 1
	Primary   Role = 2
)

func (r Role) String() string {
	switch r {
	case Secondary:
		return "Secondary"
	case Primary:
		return "Primary"
	}
	return fmt.Sprintf("Role(%d)", uint8(r))
}

// DiskState is the state of a node's backing disk as announced in its Hello.
type DiskState uint8

const (
	UpToDate     DiskState = 1
	Inconsistent DiskState = 2 // resync target that has not finished
	Outdated     DiskState = 3 // known to be stale
	Diskless     DiskState = 4
	// Consistent: behind its peer but crash-consistent, a state the peer
	// really had (the target of a journal-tail sync).
	Consistent DiskState = 5
)

func (d DiskState) String() string {
	switch d {
	case UpToDate:
		return "UpToDate"
	case Inconsistent:
		return "Inconsistent"
	case Outdated:
		return "Outdated"
	case Diskless:
		return "Diskless"
	case Consistent:
		return "Consistent"
	}
	return fmt.Sprintf("DiskState(%d)", uint8(d))
}

// AckKind says how far the acknowledged records have come on the peer.
type AckKind uint8

const (
	Received  AckKind = 1 // read off the link (protocol B)
	Journaled AckKind = 2 // appended to the peer's journal (protocol C), not yet synced
	Synced    AckKind = 3 // durable: a Barrier up to that seq is done
)

func (k AckKind) String() string {
	switch k {
	case Received:
		return "Received"
	case Journaled:
		return "Journaled"
	case Synced:
		return "Synced"
	}
	return fmt.Sprintf("AckKind(%d)", uint8(k))
}
