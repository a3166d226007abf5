// Package state is the seam between the broker's live, in-memory state and the
// storage that makes it survive a restart, a kill -9 or a pulled plug.
//
// The broker keeps the authoritative state in memory and describes every change
// that must outlive the process as a Batch of operations. It hands the batch to
// a Store and acts on the outcome only in the done callback: a PUBACK or PUBREC
// for a message that must be kept is sent from done, never before. Memory (in
// this package) calls done at once; a durable store calls it after fsync and may
// share one fsync between many batches (group commit).
//
// A Store must never call done before what the batch describes is as durable as
// the store promises, and must never block the caller of Commit on disk I/O.
//
// # Durable
//
// Durable keeps the state under one directory as an append-only log of
// CRC-32C checked records. One writer goroutine takes every batch queued since
// its last fsync, writes them as one record, fdatasyncs once and then calls
// each done (group commit). At start-up the log is replayed; a torn last record
// (a crash or power cut during an append) is cut off; a last log damaged in
// its middle is cut at the damage, reported, and a copy kept aside; a store
// damaged in any other way is moved aside and the broker starts empty rather
// than not at all. A store that cannot be read (an I/O error listing the
// directory or opening or reading a file, which says nothing about the
// contents) is left exactly as it is and OpenDurable fails, so that a restart
// reads it again.
// Compaction writes the live state as a snapshot from another goroutine, after
// the writer has rolled to a new log, and switches to it with rename and a
// directory fsync; the logs it replaces are then deleted. Live data is bounded
// by DurableOptions.MaxBytes (ErrQuotaExceeded).
//
// Why a log and not go.etcd.io/bbolt: SD card wear. Both were measured with the
// same batches and the same group commit (BenchmarkDurableCommit,
// BenchmarkBboltCommit; durable QoS 1 to a persistent session, a 23-byte topic
// and a 64-byte payload, ext4):
//
//	committers                 1        8       64
//	log    bytes written/msg   163      157      155   (1.8-1.9 × topic+payload)
//	       page bytes/msg     4299     1192      284
//	       fsyncs/msg         1.01     0.25    0.032
//	bbolt  bytes written/msg 12362     4121     1129   (13-142 × topic+payload)
//	       page bytes/msg    28844     8256     1649
//	       fsyncs/msg         2.01     0.50    0.063
//
// "bytes written" is what the store hands to write(2); "page bytes" is what
// the kernel dirties and the device must write (whole 4 KiB pages, before the
// file system's journal). bbolt copies every B+tree page it touches and a meta
// page per transaction and fsyncs twice; the log writes each byte once, plus
// the live state again at each compaction (at most once per CompactBytes of log
// beyond the live size). An append of less than a page still costs the device a
// page per fsync, which is why group commit matters on an SD card: with 64
// publishers the device writes about 300 bytes per message instead of 4 KiB.
package state

import "time"

// Message is one application message as kept by the broker and the store.
// Byte slices are owned by the Message (never aliases of a read buffer).
type Message struct {
	ID      uint64 // unique, increasing within one store; 0 until assigned
	Topic   string
	Payload []byte
	QoS     byte
	Retain  bool

	// v5 properties carried with the message.
	PayloadFormat   byte
	HasFormat       bool
	ContentType     string
	ResponseTopic   string
	CorrelationData []byte
	User            []UserProperty
	Expiry          time.Time // zero: never expires (from Message Expiry Interval)

	Origin  string    // client id of the publisher (for no-local)
	Created time.Time // when the broker accepted it
}

// UserProperty is a v5 user property pair.
type UserProperty struct{ Key, Value string }

// Subscription is one subscription of a session with its v5 options.
type Subscription struct {
	Filter            string // as subscribed, including any $share/group/ prefix
	QoS               byte
	NoLocal           bool
	RetainAsPublished bool
	RetainHandling    byte
	ID                uint32 // subscription identifier, 0 if none
}

// Session is the durable part of a persistent session.
type Session struct {
	ClientID       string
	Version        byte      // protocol level of the last connection
	ExpiryInterval uint32    // seconds; 0xFFFFFFFF never expires
	DisconnectedAt time.Time // zero while connected
	Subscriptions  []Subscription
}

// Phase is where an outbound message of a session stands.
type Phase byte

// Outbound phases.
const (
	Queued   Phase = 0 // not yet sent in this session
	Sent     Phase = 1 // PUBLISH sent with PacketID, awaiting PUBACK/PUBREC
	Released Phase = 2 // QoS 2: PUBREC received, PUBREL sent, awaiting PUBCOMP
)

// Outbound is one message in a session's ordered outbound queue.
type Outbound struct {
	Seq        uint64 // position in the session's queue (increasing)
	MessageID  uint64
	QoS        byte // granted QoS for this delivery
	SubIDs     []uint32
	RetainFlag bool // retain flag to deliver with (retain-as-published)
	Phase      Phase
	PacketID   uint16
}

// Will is a will message waiting for its delay to pass.
type Will struct {
	ClientID string
	Message  Message
	Due      time.Time
}

// OpKind says what an Op does.
type OpKind byte

// Operations a Batch may hold.
const (
	OpPutSession     OpKind = iota + 1 // Session
	OpDeleteSession                    // ClientID: the session with its queue and inbound QoS 2 ids
	OpPutMessage                       // Message (stored once, shared by queues and retained)
	OpSetRetained                      // Topic, MessageID
	OpClearRetained                    // Topic
	OpEnqueue                          // ClientID, Outbound
	OpUpdateOutbound                   // ClientID, Outbound (by Seq: Phase, PacketID)
	OpDequeue                          // ClientID, Seq
	OpPutInbound                       // ClientID, PacketID (QoS 2 received, awaiting PUBREL)
	OpDeleteInbound                    // ClientID, PacketID
	OpPutWill                          // Will
	OpDeleteWill                       // ClientID
)

// Op is one change. Only the fields its Kind names are used.
type Op struct {
	Kind      OpKind
	ClientID  string
	Topic     string
	MessageID uint64
	Seq       uint64
	PacketID  uint16
	Session   *Session
	Message   *Message
	Outbound  *Outbound
	Will      *Will
}

// Batch is an ordered list of operations committed together: all or none.
// A message is deleted by the store once neither a queue nor a retained topic
// refers to it.
type Batch struct {
	Ops []Op
}

// Snapshot is everything a store holds, read once at start-up.
type Snapshot struct {
	Sessions []Session
	Messages map[uint64]*Message
	Retained map[string]uint64 // topic -> message id
	Queues   map[string][]Outbound
	Inbound  map[string][]uint16
	Wills    []Will
	NextID   uint64 // first message id not yet used
}

// Store persists batches. Commit must not block on I/O; done is called exactly
// once, possibly on another goroutine, with nil when the batch is durable or the
// error that kept it from being so (the broker then refuses what depended on it).
type Store interface {
	Load() (*Snapshot, error)
	Commit(b *Batch, done func(error))
	// Durable reports whether Commit waits for stable storage.
	Durable() bool
	Close() error
}

// Memory is a Store that keeps nothing: the broker's own memory is the state,
// and it is lost when the process ends. Commit completes at once.
type Memory struct{}

func (Memory) Load() (*Snapshot, error)          { return &Snapshot{NextID: 1}, nil }
func (Memory) Commit(_ *Batch, done func(error)) { done(nil) }
func (Memory) Durable() bool                     { return false }
func (Memory) Close() error                      { return nil }
