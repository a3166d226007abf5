package packet

import (
	"bytes"
	"testing"

	paho5 "github.com/eclipse/paho.golang/packets"
	paho3 "github.com/eclipse/paho.mqtt.golang/packets"
)

// Interoperability with the Eclipse Paho Go codecs, which the clients our
// users run are built on: what Paho writes we decode, what we write Paho
// reads back with the same fields.

func u8(v byte) *byte      { return &v }
func u16(v uint16) *uint16 { return &v }
func u32(v uint32) *uint32 { return &v }

func paho5Bytes(t *testing.T, cp *paho5.ControlPacket) []byte {
	t.Helper()
	var buf bytes.Buffer
	if _, err := cp.WriteTo(&buf); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func TestPaho5ConnectDecodes(t *testing.T) {
	cp := paho5.NewControlPacket(paho5.CONNECT)
	c := cp.Content.(*paho5.Connect)
	c.CleanStart, c.KeepAlive, c.ClientID = true, 30, "gw-01"
	c.Properties = &paho5.Properties{SessionExpiryInterval: u32(3600), ReceiveMaximum: u16(20),
		User: []paho5.User{{Key: "site", Value: "7"}}}
	c.WillFlag, c.WillQOS, c.WillRetain, c.WillTopic, c.WillMessage = true, 1, true, "gw/gw-01/status", []byte("offline")
	// Paho v0.23.0 packs will properties with the CONNECT property set, so it
	// drops the PUBLISH-only ones (payload format, message expiry, content
	// type): only the will delay reaches the wire.
	c.WillProperties = &paho5.Properties{WillDelayInterval: u32(5), PayloadFormat: u8(1)}
	c.UsernameFlag, c.Username, c.PasswordFlag, c.Password = true, "gw", true, []byte("pw")

	got, err := decodeAll(&Decoder{}, paho5Bytes(t, cp))
	if err != nil {
		t.Fatal(err)
	}
	samePacket(t, got, &Connect{ProtocolName: []byte("MQTT"), Version: V5, CleanStart: true, KeepAlive: 30,
		Props: Properties{Present: 1<<PropSessionExpiry | 1<<PropReceiveMaximum, SessionExpiry: 3600, ReceiveMaximum: 20,
			User: []UserProperty{{[]byte("site"), []byte("7")}}},
		ClientID: []byte("gw-01"), WillFlag: true, WillQoS: 1, WillRetain: true,
		WillProps: Properties{Present: 1 << PropWillDelay, WillDelay: 5},
		WillTopic: []byte("gw/gw-01/status"), WillPayload: []byte("offline"),
		UsernameFlag: true, Username: []byte("gw"), PasswordFlag: true, Password: []byte("pw")})
}

func TestPaho5PublishSubscribeDecode(t *testing.T) {
	pub := &paho5.Publish{QoS: 2, PacketID: 9, Retain: true, Topic: "site/7/t", Payload: []byte("21.5"),
		Properties: &paho5.Properties{MessageExpiry: u32(60), ContentType: "text/plain", TopicAlias: u16(3),
			CorrelationData: []byte{1}, ResponseTopic: "r/1"}}
	got, err := decodeAll(&Decoder{Version: V5}, paho5Bytes(t, pub.ToControlPacket()))
	if err != nil {
		t.Fatal(err)
	}
	samePacket(t, got, &Publish{QoS: 2, PacketID: 9, Retain: true, Topic: []byte("site/7/t"), Payload: []byte("21.5"),
		Props: Properties{Present: 1<<PropMessageExpiry | 1<<PropTopicAlias, MessageExpiry: 60, ContentType: []byte("text/plain"),
			TopicAlias: 3, CorrelationData: []byte{1}, ResponseTopic: []byte("r/1")}})

	cp := paho5.NewControlPacket(paho5.SUBSCRIBE)
	s := cp.Content.(*paho5.Subscribe)
	s.PacketID = 4
	s.Properties = &paho5.Properties{SubscriptionIdentifier: func() *int { i := 99; return &i }()}
	s.Subscriptions = []paho5.SubOptions{
		{Topic: "site/+/t", QoS: 1, NoLocal: true, RetainAsPublished: true, RetainHandling: 2},
		{Topic: "$share/g/jobs/#", QoS: 2},
	}
	got, err = decodeAll(&Decoder{Version: V5}, paho5Bytes(t, cp))
	if err != nil {
		t.Fatal(err)
	}
	samePacket(t, got, &Subscribe{PacketID: 4, Props: Properties{SubscriptionIDs: []uint32{99}}, Subscriptions: []Subscription{
		{Filter: []byte("site/+/t"), QoS: 1, NoLocal: true, RetainAsPublished: true, RetainHandling: 2},
		{Filter: []byte("$share/g/jobs/#"), QoS: 2},
	}})
}

func paho5Read(t *testing.T, b []byte) *paho5.ControlPacket {
	t.Helper()
	cp, err := paho5.ReadPacket(bytes.NewReader(b))
	if err != nil {
		t.Fatalf("paho ReadPacket(% x): %v", b, err)
	}
	return cp
}

func TestPaho5ReadsOurPackets(t *testing.T) {
	ca := &Connack{SessionPresent: true, Props: Properties{Present: 1<<PropMaximumQoS | 1<<PropTopicAliasMaximum | 1<<PropRetainAvailable,
		MaximumQoS: 1, TopicAliasMaximum: 10, RetainAvailable: 1, AssignedClientID: []byte("auto-1")}}
	b, _ := ca.Append(nil, V5)
	pc := paho5Read(t, b).Content.(*paho5.Connack)
	if !pc.SessionPresent || pc.ReasonCode != 0 || *pc.Properties.MaximumQOS != 1 || *pc.Properties.TopicAliasMaximum != 10 ||
		pc.Properties.AssignedClientID != "auto-1" || *pc.Properties.RetainAvailable != 1 {
		t.Errorf("paho read CONNACK as %v", pc)
	}

	p := &Publish{QoS: 1, PacketID: 300, Topic: []byte("a/b"), Payload: []byte("x"),
		Props: Properties{SubscriptionIDs: []uint32{1, 200000}, User: []UserProperty{{[]byte("k"), []byte("v")}}}}
	b, _ = p.Append(nil, V5)
	pp := paho5Read(t, b).Content.(*paho5.Publish)
	if pp.QoS != 1 || pp.PacketID != 300 || pp.Topic != "a/b" || string(pp.Payload) != "x" ||
		len(pp.Properties.User) != 1 || pp.Properties.User[0].Key != "k" || pp.Properties.SubscriptionIdentifier == nil {
		t.Errorf("paho read PUBLISH as %v", pp)
	}

	sa := &Suback{PacketID: 4, Reasons: []ReasonCode{GrantedQoS1, NotAuthorized}, Props: Properties{ReasonString: []byte("no")}}
	b, _ = sa.Append(nil, V5)
	ps := paho5Read(t, b).Content.(*paho5.Suback)
	if ps.PacketID != 4 || !bytes.Equal(ps.Reasons, []byte{1, 0x87}) || ps.Properties.ReasonString != "no" {
		t.Errorf("paho read SUBACK as %v", ps)
	}

	ack := &Ack{Kind: PUBACK, PacketID: 300, Reason: NoMatchingSubscribers}
	b, _ = ack.Append(nil, V5)
	pa := paho5Read(t, b).Content.(*paho5.Puback)
	if pa.PacketID != 300 || pa.ReasonCode != 0x10 {
		t.Errorf("paho read PUBACK as %v", pa)
	}

	d := &Disconnect{Reason: ServerShuttingDown, Props: Properties{ServerReference: []byte("gw-2")}}
	b, _ = d.Append(nil, V5)
	pd := paho5Read(t, b).Content.(*paho5.Disconnect)
	if pd.ReasonCode != 0x8B || pd.Properties.ServerReference != "gw-2" {
		t.Errorf("paho read DISCONNECT as %v", pd)
	}
}

func paho3Bytes(t *testing.T, cp paho3.ControlPacket) []byte {
	t.Helper()
	var buf bytes.Buffer
	if err := cp.Write(&buf); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func TestPaho3PacketsDecode(t *testing.T) {
	c := paho3.NewControlPacket(paho3.Connect).(*paho3.ConnectPacket)
	c.ProtocolName, c.ProtocolVersion = "MQTT", 4
	c.CleanSession, c.Keepalive, c.ClientIdentifier = true, 60, "sensor-1"
	c.WillFlag, c.WillQos, c.WillTopic, c.WillMessage = true, 2, "s/1/lwt", []byte("gone")
	c.UsernameFlag, c.Username, c.PasswordFlag, c.Password = true, "u", true, []byte("p")
	got, err := decodeAll(&Decoder{}, paho3Bytes(t, c))
	if err != nil {
		t.Fatal(err)
	}
	samePacket(t, got, &Connect{ProtocolName: []byte("MQTT"), Version: V311, CleanStart: true, KeepAlive: 60,
		ClientID: []byte("sensor-1"), WillFlag: true, WillQoS: 2, WillTopic: []byte("s/1/lwt"), WillPayload: []byte("gone"),
		UsernameFlag: true, Username: []byte("u"), PasswordFlag: true, Password: []byte("p")})

	c.ProtocolName, c.ProtocolVersion = "MQIsdp", 3
	got, err = decodeAll(&Decoder{}, paho3Bytes(t, c))
	if err != nil {
		t.Fatal(err)
	}
	if con := got.(*Connect); con.Version != V31 || string(con.ClientID) != "sensor-1" {
		t.Errorf("3.1 CONNECT decoded as %#v", con)
	}

	p := paho3.NewControlPacket(paho3.Publish).(*paho3.PublishPacket)
	p.Qos, p.MessageID, p.TopicName, p.Payload, p.Retain = 1, 77, "s/1/t", []byte("20"), true
	got, err = decodeAll(&Decoder{Version: V311}, paho3Bytes(t, p))
	if err != nil {
		t.Fatal(err)
	}
	samePacket(t, got, &Publish{QoS: 1, PacketID: 77, Retain: true, Topic: []byte("s/1/t"), Payload: []byte("20")})

	s := paho3.NewControlPacket(paho3.Subscribe).(*paho3.SubscribePacket)
	s.MessageID, s.Topics, s.Qoss = 5, []string{"s/+/t", "cmd/#"}, []byte{1, 2}
	got, err = decodeAll(&Decoder{Version: V311}, paho3Bytes(t, s))
	if err != nil {
		t.Fatal(err)
	}
	samePacket(t, got, &Subscribe{PacketID: 5, Subscriptions: []Subscription{{Filter: []byte("s/+/t"), QoS: 1}, {Filter: []byte("cmd/#"), QoS: 2}}})

	for _, kind := range []byte{paho3.Puback, paho3.Pubrec, paho3.Pubrel, paho3.Pubcomp, paho3.Unsubscribe, paho3.Pingreq, paho3.Disconnect} {
		cp := paho3.NewControlPacket(kind)
		switch x := cp.(type) {
		case *paho3.PubackPacket:
			x.MessageID = 1
		case *paho3.PubrecPacket:
			x.MessageID = 2
		case *paho3.PubrelPacket:
			x.MessageID = 3
		case *paho3.PubcompPacket:
			x.MessageID = 4
		case *paho3.UnsubscribePacket:
			x.MessageID, x.Topics = 5, []string{"a/b"}
		}
		if _, err := decodeAll(&Decoder{Version: V311}, paho3Bytes(t, cp)); err != nil {
			t.Errorf("paho %T: %v", cp, err)
		}
	}
}

func TestPaho3ReadsOurPackets(t *testing.T) {
	read := func(b []byte) paho3.ControlPacket {
		t.Helper()
		cp, err := paho3.ReadPacket(bytes.NewReader(b))
		if err != nil {
			t.Fatalf("paho ReadPacket(% x): %v", b, err)
		}
		return cp
	}
	b, _ := (&Connack{Reason: V3RefusedBadUsernamePassword}).Append(nil, V311)
	if ca := read(b).(*paho3.ConnackPacket); ca.ReturnCode != 4 || ca.SessionPresent {
		t.Errorf("paho read CONNACK as %v", ca)
	}
	b, _ = (&Publish{QoS: 2, Dup: true, PacketID: 8, Topic: []byte("a/b"), Payload: []byte("on")}).Append(nil, V311)
	if p := read(b).(*paho3.PublishPacket); p.Qos != 2 || !p.Dup || p.MessageID != 8 || p.TopicName != "a/b" || string(p.Payload) != "on" {
		t.Errorf("paho read PUBLISH as %v", p)
	}
	b, _ = (&Suback{PacketID: 5, Reasons: []ReasonCode{GrantedQoS1, V3SubackFailure}}).Append(nil, V311)
	if s := read(b).(*paho3.SubackPacket); s.MessageID != 5 || !bytes.Equal(s.ReturnCodes, []byte{1, 0x80}) {
		t.Errorf("paho read SUBACK as %v", s)
	}
	b, _ = (&Ack{Kind: PUBREL, PacketID: 8}).Append(nil, V311)
	if r := read(b).(*paho3.PubrelPacket); r.MessageID != 8 || r.Qos != 1 {
		t.Errorf("paho read PUBREL as %v", r)
	}
	b, _ = (&Unsuback{PacketID: 6}).Append(nil, V311)
	if u := read(b).(*paho3.UnsubackPacket); u.MessageID != 6 {
		t.Errorf("paho read UNSUBACK as %v", u)
	}
}

// Paho v0.23.0 writes AUTH with fixed-header flags 0001. MQTT 5.0
// [MQTT-3.15.1-1] reserves those bits as 0000 and makes anything else a
// malformed packet, so the decoder refuses it; the refusal names the rule so
// an operator can tell why such a client is disconnected.
func TestPaho5AuthFlagsAreMalformed(t *testing.T) {
	cp := paho5.NewControlPacket(paho5.AUTH)
	a := cp.Content.(*paho5.Auth)
	a.ReasonCode = 0x18
	a.Properties = &paho5.Properties{AuthMethod: "SCRAM-SHA-1"}
	b := paho5Bytes(t, cp)
	if b[0] != 0xF1 {
		t.Skipf("this Paho writes AUTH as %#x now; nothing to check", b[0])
	}
	_, err := decodeAll(&Decoder{Version: V5}, b)
	wantErr(t, err, MalformedPacket, "AUTH fixed header flags must be 0000, got 0001")
}
