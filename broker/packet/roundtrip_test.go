package packet

import (
	"bytes"
	"strings"
	"testing"

	"pgregory.net/rapid"
)

var versions = []Version{V31, V311, V5}

func genUTF8(max int) *rapid.Generator[string] {
	return rapid.Custom(func(t *rapid.T) string {
		return rapid.StringOfN(rapid.RuneFrom([]rune{'a', 'b', 'z', '0', '9', ' ', '-', 'é', '€', '水', '🙂', 0x7F, 0xFEFF}), 0, max, -1).Draw(t, "s")
	})
}

func genLevel() *rapid.Generator[string] {
	return rapid.StringOfN(rapid.RuneFrom([]rune{'a', 'b', 'z', '0', '_', '$', 'é', '水'}), 0, 5, -1)
}

func genTopic() *rapid.Generator[[]byte] {
	return rapid.Custom(func(t *rapid.T) []byte {
		levels := rapid.SliceOfN(genLevel(), 1, 4).Draw(t, "levels")
		s := strings.Join(levels, "/")
		if s == "" {
			s = "t"
		}
		return []byte(s)
	})
}

func genFilter() *rapid.Generator[[]byte] {
	return rapid.Custom(func(t *rapid.T) []byte {
		n := rapid.IntRange(1, 4).Draw(t, "n")
		var levels []string
		for i := 0; i < n; i++ {
			if rapid.IntRange(0, 3).Draw(t, "plus") == 0 {
				levels = append(levels, "+")
			} else {
				levels = append(levels, genLevel().Draw(t, "level"))
			}
		}
		if rapid.Bool().Draw(t, "hash") {
			levels = append(levels, "#")
		}
		s := strings.Join(levels, "/")
		if s == "" {
			s = "f"
		}
		if rapid.IntRange(0, 4).Draw(t, "shared") == 0 {
			s = "$share/" + rapid.StringMatching(`[a-z0-9]{1,4}`).Draw(t, "group") + "/" + s
		}
		return []byte(s)
	})
}

func genBytes(max int) *rapid.Generator[[]byte] {
	return rapid.SliceOfN(rapid.Byte(), 0, max)
}

func genPacketID() *rapid.Generator[uint16] { return rapid.Uint16Range(1, 65535) }

// genProps draws properties allowed in packet type t (Reserved for will
// properties), each one present or not; nothing before MQTT 5.0.
func genProps(t *rapid.T, pt Type, v Version) Properties {
	var p Properties
	if v != V5 {
		return p
	}
	for id := 0; id < 64; id++ {
		info := propInfo[id]
		if info.allowed&(1<<pt) == 0 || !rapid.Bool().Draw(t, "has") {
			continue
		}
		bid := byte(id)
		switch info.kind {
		case kindByte:
			*p.byteField(bid) = rapid.ByteRange(0, 1).Draw(t, "b")
			p.Set(bid)
		case kindU16:
			*p.u16Field(bid) = rapid.Uint16Range(1, 65535).Draw(t, "u16")
			p.Set(bid)
		case kindU32:
			*p.u32Field(bid) = rapid.Uint32Range(1, 1<<32-1).Draw(t, "u32")
			p.Set(bid)
		case kindString:
			if bid == PropResponseTopic {
				p.ResponseTopic = genTopic().Draw(t, "rt")
			} else {
				*p.bytesField(bid) = []byte(genUTF8(8).Draw(t, "str"))
			}
		case kindBinary:
			*p.bytesField(bid) = append([]byte{}, genBytes(8).Draw(t, "bin")...)
		case kindVarInt:
			n := 1
			if pt == PUBLISH {
				n = rapid.IntRange(1, 3).Draw(t, "nsub")
			}
			for i := 0; i < n; i++ {
				p.SubscriptionIDs = append(p.SubscriptionIDs, rapid.Uint32Range(1, maxSubscriptionID).Draw(t, "subid"))
			}
		case kindPair:
			n := rapid.IntRange(1, 3).Draw(t, "nuser")
			for i := 0; i < n; i++ {
				p.User = append(p.User, UserProperty{[]byte(genUTF8(6).Draw(t, "k")), []byte(genUTF8(6).Draw(t, "v"))})
			}
		}
	}
	if p.AuthData != nil && p.AuthMethod == nil {
		p.AuthMethod = []byte("m")
	}
	return p
}

func genConnect(t *rapid.T) Packet {
	v := rapid.SampledFrom(versions).Draw(t, "version")
	p := &Connect{Version: v, CleanStart: rapid.Bool().Draw(t, "clean"), KeepAlive: rapid.Uint16().Draw(t, "keepalive")}
	p.ProtocolName = []byte("MQTT")
	if v == V31 {
		p.ProtocolName = []byte("MQIsdp")
	}
	p.ClientID = []byte(genUTF8(23).Draw(t, "clientid"))
	if len(p.ClientID) == 0 && (v == V31 || (v == V311 && !p.CleanStart)) {
		p.ClientID = []byte("c")
	}
	p.Props = genProps(t, CONNECT, v)
	if p.WillFlag = rapid.Bool().Draw(t, "will"); p.WillFlag {
		p.WillQoS = rapid.ByteRange(0, 2).Draw(t, "willqos")
		p.WillRetain = rapid.Bool().Draw(t, "willretain")
		p.WillProps = genProps(t, willProps, v)
		p.WillTopic = genTopic().Draw(t, "willtopic")
		if p.WillProps.Has(PropPayloadFormat) && p.WillProps.PayloadFormat == 1 {
			p.WillPayload = []byte(genUTF8(16).Draw(t, "willpayload"))
		} else {
			p.WillPayload = genBytes(16).Draw(t, "willpayload")
		}
	}
	if p.UsernameFlag = rapid.Bool().Draw(t, "user"); p.UsernameFlag {
		p.Username = []byte(genUTF8(8).Draw(t, "username"))
	}
	if p.PasswordFlag = rapid.Bool().Draw(t, "pass") && (v == V5 || p.UsernameFlag); p.PasswordFlag {
		p.Password = genBytes(8).Draw(t, "password")
	}
	return p
}

var connackV5 = []ReasonCode{Success, UnspecifiedError, MalformedPacket, ProtocolError, ImplementationSpecificError,
	UnsupportedProtocolVersion, ClientIdentifierNotValid, BadUserNameOrPassword, NotAuthorized, ServerUnavailable,
	ServerBusy, Banned, BadAuthenticationMethod, TopicNameInvalid, PacketTooLarge, QuotaExceeded,
	PayloadFormatInvalid, RetainNotSupported, QoSNotSupported, UseAnotherServer, ServerMoved, ConnectionRateExceeded}

func genConnack(t *rapid.T, v Version) Packet {
	p := &Connack{}
	if v == V5 {
		p.Reason = rapid.SampledFrom(connackV5).Draw(t, "reason")
	} else {
		p.Reason = ReasonCode(rapid.ByteRange(0, 5).Draw(t, "code"))
	}
	p.SessionPresent = p.Reason == Success && rapid.Bool().Draw(t, "sp")
	p.Props = genProps(t, CONNACK, v)
	return p
}

func genPublish(t *rapid.T, v Version) Packet {
	p := &Publish{QoS: rapid.ByteRange(0, 2).Draw(t, "qos"), Retain: rapid.Bool().Draw(t, "retain")}
	if p.QoS > 0 {
		p.Dup = rapid.Bool().Draw(t, "dup")
		p.PacketID = genPacketID().Draw(t, "id")
	}
	p.Props = genProps(t, PUBLISH, v)
	p.Topic = genTopic().Draw(t, "topic")
	if p.Props.Has(PropTopicAlias) && rapid.Bool().Draw(t, "aliasonly") {
		p.Topic = []byte{}
	}
	if p.Props.Has(PropPayloadFormat) && p.Props.PayloadFormat == 1 {
		p.Payload = []byte(genUTF8(64).Draw(t, "payload"))
	} else {
		p.Payload = genBytes(64).Draw(t, "payload")
	}
	return p
}

func genAck(t *rapid.T, v Version) Packet {
	p := &Ack{Kind: rapid.SampledFrom([]Type{PUBACK, PUBREC, PUBREL, PUBCOMP}).Draw(t, "kind"), PacketID: genPacketID().Draw(t, "id")}
	if v == V5 {
		if p.Kind == PUBREL || p.Kind == PUBCOMP {
			p.Reason = rapid.SampledFrom([]ReasonCode{Success, PacketIdentifierNotFound}).Draw(t, "reason")
		} else {
			p.Reason = rapid.SampledFrom([]ReasonCode{Success, NoMatchingSubscribers, UnspecifiedError,
				ImplementationSpecificError, NotAuthorized, TopicNameInvalid, PacketIdentifierInUse,
				QuotaExceeded, PayloadFormatInvalid}).Draw(t, "reason")
		}
	}
	p.Props = genProps(t, p.Kind, v)
	return p
}

func genSubscribe(t *rapid.T, v Version) Packet {
	p := &Subscribe{PacketID: genPacketID().Draw(t, "id"), Props: genProps(t, SUBSCRIBE, v)}
	n := rapid.IntRange(1, 4).Draw(t, "n")
	for i := 0; i < n; i++ {
		s := Subscription{Filter: genFilter().Draw(t, "filter"), QoS: rapid.ByteRange(0, 2).Draw(t, "qos")}
		if v == V5 {
			_, _, shared := ParseShared(s.Filter)
			s.NoLocal = !shared && rapid.Bool().Draw(t, "nolocal")
			s.RetainAsPublished = rapid.Bool().Draw(t, "rap")
			s.RetainHandling = rapid.ByteRange(0, 2).Draw(t, "rh")
		}
		p.Subscriptions = append(p.Subscriptions, s)
	}
	return p
}

func genSuback(t *rapid.T, v Version) Packet {
	codes := []ReasonCode{GrantedQoS0, GrantedQoS1, GrantedQoS2, UnspecifiedError}
	if v == V5 {
		codes = append(codes, ImplementationSpecificError, NotAuthorized, TopicFilterInvalid, PacketIdentifierInUse,
			QuotaExceeded, SharedSubscriptionsNotSupported, SubscriptionIdentifiersNotSupported, WildcardSubscriptionsNotSupported)
	}
	return &Suback{PacketID: genPacketID().Draw(t, "id"), Props: genProps(t, SUBACK, v),
		Reasons: rapid.SliceOfN(rapid.SampledFrom(codes), 1, 5).Draw(t, "reasons")}
}

func genUnsubscribe(t *rapid.T, v Version) Packet {
	return &Unsubscribe{PacketID: genPacketID().Draw(t, "id"), Props: genProps(t, UNSUBSCRIBE, v),
		Filters: rapid.SliceOfN(genFilter(), 1, 4).Draw(t, "filters")}
}

func genUnsuback(t *rapid.T, v Version) Packet {
	p := &Unsuback{PacketID: genPacketID().Draw(t, "id"), Props: genProps(t, UNSUBACK, v)}
	if v == V5 {
		p.Reasons = rapid.SliceOfN(rapid.SampledFrom([]ReasonCode{Success, NoSubscriptionExisted, UnspecifiedError,
			ImplementationSpecificError, NotAuthorized, TopicFilterInvalid, PacketIdentifierInUse}), 1, 5).Draw(t, "reasons")
	}
	return p
}

func genDisconnect(t *rapid.T, v Version) Packet {
	p := &Disconnect{Props: genProps(t, DISCONNECT, v)}
	if v == V5 {
		p.Reason = rapid.SampledFrom([]ReasonCode{Success, DisconnectWithWill, UnspecifiedError, MalformedPacket,
			ProtocolError, NotAuthorized, ServerBusy, ServerShuttingDown, KeepAliveTimeout, SessionTakenOver,
			TopicAliasInvalid, PacketTooLarge, UseAnotherServer, WildcardSubscriptionsNotSupported}).Draw(t, "reason")
	}
	return p
}

func genAuth(t *rapid.T) Packet {
	return &Auth{Reason: rapid.SampledFrom([]ReasonCode{Success, ContinueAuthentication, ReAuthenticate}).Draw(t, "reason"),
		Props: genProps(t, AUTH, V5)}
}

// genPacket draws a valid packet of any type for a version (CONNECT carries
// its own).
func genPacket(t *rapid.T) (Packet, Version) {
	v := rapid.SampledFrom(versions).Draw(t, "v")
	types := []Type{CONNECT, CONNACK, PUBLISH, PUBACK, SUBSCRIBE, SUBACK, UNSUBSCRIBE, UNSUBACK, PINGREQ, PINGRESP, DISCONNECT}
	if v == V5 {
		types = append(types, AUTH)
	}
	switch rapid.SampledFrom(types).Draw(t, "type") {
	case CONNECT:
		p := genConnect(t)
		return p, p.(*Connect).Version
	case CONNACK:
		return genConnack(t, v), v
	case PUBLISH:
		return genPublish(t, v), v
	case PUBACK:
		return genAck(t, v), v
	case SUBSCRIBE:
		return genSubscribe(t, v), v
	case SUBACK:
		return genSuback(t, v), v
	case UNSUBSCRIBE:
		return genUnsubscribe(t, v), v
	case UNSUBACK:
		return genUnsuback(t, v), v
	case PINGREQ:
		return &Pingreq{}, v
	case PINGRESP:
		return &Pingresp{}, v
	case DISCONNECT:
		return genDisconnect(t, v), v
	default:
		return genAuth(t), v
	}
}

// Every valid packet of every type and version encodes, decodes to the same
// packet, and re-encodes to the same bytes.
func TestRoundTrip(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		p, v := genPacket(t)
		b, err := Append(nil, p, v)
		if err != nil {
			t.Fatalf("Append(%#v, %d): %v", p, v, err)
		}
		if s, ok := p.(interface{ Size(Version) int }); ok && s.Size(v) != len(b) {
			t.Fatalf("Size = %d, encoded %d bytes", s.Size(v), len(b))
		}
		if c, ok := p.(*Connect); ok && c.Size() != len(b) {
			t.Fatalf("Connect.Size = %d, encoded %d bytes", c.Size(), len(b))
		}
		d := &Decoder{Version: v}
		got, err := decodeAll(d, b)
		if err != nil {
			t.Fatalf("Decode(% x) of %#v: %v", b, p, err)
		}
		samePacket(t, got, p)
		again, err := Append(nil, got, v)
		if err != nil || !bytes.Equal(again, b) {
			t.Fatalf("re-encode = % x, %v; want % x", again, err, b)
		}
	})
}
