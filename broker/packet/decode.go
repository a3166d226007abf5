package packet

// Decoder decodes the packets of one connection. It reuses one struct per
// packet type, so in the steady state decoding allocates nothing; a packet
// returned by Decode is valid until the next Decode call on the same Decoder
// and aliases the body passed to Decode.
//
// The zero Decoder is ready for a server connection: it accepts only CONNECT
// until Version is set, and a decoded CONNECT sets Version. A client sets
// Version to the level it sent in its own CONNECT.
type Decoder struct {
	// Version is the connection's protocol level (V31, V311 or V5); zero
	// before CONNECT.
	Version Version
	// MaxPacketSize, when positive, is the largest whole packet (fixed header
	// included) the connection accepts; larger ones fail with PacketTooLarge.
	// Zero means no limit beyond MaxRemainingLength.
	MaxPacketSize int

	connect     Connect
	connack     Connack
	publish     Publish
	ack         Ack
	subscribe   Subscribe
	suback      Suback
	unsubscribe Unsubscribe
	unsuback    Unsuback
	pingreq     Pingreq
	pingresp    Pingresp
	disconnect  Disconnect
	auth        Auth
}

// CheckSize reports whether a packet with fixed header h, whose encoded fixed
// header is headerLen bytes long, fits MaxPacketSize. A reader calls it
// before reading the body so it never buffers an oversized packet.
func (d *Decoder) CheckSize(h FixedHeader, headerLen int) error {
	if d.MaxPacketSize > 0 && headerLen+h.Remaining > d.MaxPacketSize {
		return &Error{PacketTooLarge, "[MQTT-3.2.2-15] " + h.Type.String() + " of " + itoa(headerLen+h.Remaining) +
			" bytes exceeds the maximum packet size " + itoa(d.MaxPacketSize)}
	}
	return nil
}

// Decode decodes one packet whose fixed header is h and whose body is exactly
// h.Remaining bytes. The returned Packet points into d and into body; it is
// valid until the next Decode call on d or until body changes. Errors are
// *Error.
func (d *Decoder) Decode(h FixedHeader, body []byte) (Packet, error) {
	if err := checkFlags(h.Type, h.Flags); err != nil {
		return nil, err
	}
	if h.Remaining != len(body) {
		return nil, malformed("(MQTT 5.0 2.1.4) remaining length " + itoa(h.Remaining) + " but body is " + itoa(len(body)) + " bytes")
	}
	if h.Remaining > MaxRemainingLength {
		return nil, malformed("(MQTT 5.0 2.1.4) remaining length " + itoa(h.Remaining) + " exceeds 268435455")
	}
	if err := d.CheckSize(h, HeaderLen(h.Remaining)); err != nil {
		return nil, err
	}
	r := reader{b: body}
	if h.Type == CONNECT {
		return d.decodeConnect(&r)
	}
	switch d.Version {
	case V31, V311, V5:
	case 0:
		return nil, protocolErr("[MQTT-3.1.0-1] " + h.Type.String() + " before CONNECT")
	default:
		return nil, protocolErr("decoder protocol level " + itoa(int(d.Version)) + " is not 3, 4 or 5")
	}
	switch h.Type {
	case CONNACK:
		return d.decodeConnack(&r)
	case PUBLISH:
		return d.decodePublish(h.Flags, &r)
	case PUBACK, PUBREC, PUBREL, PUBCOMP:
		return d.decodeAck(h.Type, &r)
	case SUBSCRIBE:
		return d.decodeSubscribe(&r)
	case SUBACK:
		return d.decodeSuback(&r)
	case UNSUBSCRIBE:
		return d.decodeUnsubscribe(&r)
	case UNSUBACK:
		return d.decodeUnsuback(&r)
	case PINGREQ:
		if len(body) != 0 {
			return nil, malformed("(3.12) PINGREQ remaining length " + itoa(len(body)) + ", must be 0")
		}
		return &d.pingreq, nil
	case PINGRESP:
		if len(body) != 0 {
			return nil, malformed("(3.13) PINGRESP remaining length " + itoa(len(body)) + ", must be 0")
		}
		return &d.pingresp, nil
	case DISCONNECT:
		return d.decodeDisconnect(&r)
	case AUTH:
		return d.decodeAuth(&r)
	}
	return nil, malformed("(MQTT 5.0 2.1.2) packet type " + itoa(int(h.Type)) + " is reserved")
}

func trailing(r *reader, t Type) error {
	if r.left() != 0 {
		return malformed("(MQTT 5.0 2.1.4) " + itoa(r.left()) + " bytes after the end of " + t.String() + " (remaining length too long)")
	}
	return nil
}

var (
	nameMQTT   = []byte("MQTT")
	nameMQIsdp = []byte("MQIsdp")
)

func (d *Decoder) decodeConnect(r *reader) (Packet, error) {
	p := &d.connect
	up, wup := p.Props.User[:0], p.WillProps.User[:0]
	sp, wsp := p.Props.SubscriptionIDs[:0], p.WillProps.SubscriptionIDs[:0]
	*p = Connect{}
	p.Props.User, p.WillProps.User = up, wup
	p.Props.SubscriptionIDs, p.WillProps.SubscriptionIDs = sp, wsp

	name, err := r.bin("protocol name")
	if err != nil {
		return nil, err
	}
	level, err := r.byte1("protocol level")
	if err != nil {
		return nil, err
	}
	p.ProtocolName, p.Version = name, Version(level)
	switch string(name) {
	case "MQTT":
		if level != byte(V311) && level != byte(V5) {
			return nil, &Error{UnsupportedProtocolVersion, "[MQTT-3.1.2-2] protocol level " + itoa(int(level)) + " with protocol name MQTT is not 4 or 5"}
		}
	case "MQIsdp":
		if level != byte(V31) {
			return nil, &Error{UnsupportedProtocolVersion, "[MQTT-3.1.2-2] protocol level " + itoa(int(level)) + " with protocol name MQIsdp is not 3"}
		}
	default:
		return nil, &Error{UnsupportedProtocolVersion, "[MQTT-3.1.2-1] protocol name " + quote(name) + " is not MQTT or MQIsdp"}
	}
	// The level is known from here on: set it so that the caller answers any
	// later error with a CONNACK in the client's own version.
	d.Version = p.Version
	v5 := p.Version == V5

	flags, err := r.byte1("connect flags")
	if err != nil {
		return nil, err
	}
	if flags&0x01 != 0 {
		return nil, malformed("[MQTT-3.1.2-3] reserved connect flag bit 0 is 1")
	}
	p.CleanStart = flags&0x02 != 0
	p.WillFlag = flags&0x04 != 0
	p.WillQoS = (flags >> 3) & 0x03
	p.WillRetain = flags&0x20 != 0
	p.PasswordFlag = flags&0x40 != 0
	p.UsernameFlag = flags&0x80 != 0
	if p.WillQoS == 3 {
		return nil, malformed("[MQTT-3.1.2-14] (5.0 [MQTT-3.1.2-12]) will QoS is 3")
	}
	if !p.WillFlag && p.WillQoS != 0 {
		return nil, malformed("[MQTT-3.1.2-13] (5.0 [MQTT-3.1.2-11]) will QoS " + itoa(int(p.WillQoS)) + " without the will flag")
	}
	if !p.WillFlag && p.WillRetain {
		return nil, malformed("[MQTT-3.1.2-15] (5.0 [MQTT-3.1.2-13]) will retain without the will flag")
	}
	if !v5 && p.PasswordFlag && !p.UsernameFlag {
		return nil, malformed("[MQTT-3.1.2-22] password flag without user name flag")
	}
	if p.KeepAlive, err = r.uint16("keep alive"); err != nil {
		return nil, err
	}
	if v5 {
		if err := decodeProps(r, CONNECT, &p.Props); err != nil {
			return nil, err
		}
	}
	if p.ClientID, err = r.str("client identifier"); err != nil {
		return nil, err
	}
	if p.Version == V311 && len(p.ClientID) == 0 && !p.CleanStart {
		return nil, &Error{ClientIdentifierNotValid, "[MQTT-3.1.3-8] empty client identifier with clean session 0"}
	}
	if p.Version == V31 && len(p.ClientID) == 0 {
		return nil, &Error{ClientIdentifierNotValid, "(MQTT 3.1 CONNECT payload) client identifier must be 1 to 23 characters, got none"}
	}
	if p.WillFlag {
		if v5 {
			if err := decodeProps(r, willProps, &p.WillProps); err != nil {
				return nil, err
			}
		}
		if p.WillTopic, err = r.str("will topic"); err != nil {
			return nil, err
		}
		if err := validTopicName(p.WillTopic, false); err != nil {
			return nil, &Error{TopicNameInvalid, "will topic: " + err.(*Error).Rule}
		}
		if p.WillPayload, err = r.bin("will payload"); err != nil {
			return nil, err
		}
		if p.WillProps.Has(PropPayloadFormat) && p.WillProps.PayloadFormat == 1 {
			if err := ValidUTF8(p.WillPayload); err != nil {
				return nil, &Error{PayloadFormatInvalid, "(MQTT 5.0 3.1.3.2.3) will payload format indicator 1 but payload is not UTF-8: " + err.(*Error).Rule}
			}
		}
	}
	if p.UsernameFlag {
		if p.Username, err = r.str("user name"); err != nil {
			return nil, err
		}
	}
	if p.PasswordFlag {
		if p.Password, err = r.bin("password"); err != nil {
			return nil, err
		}
	}
	if err := trailing(r, CONNECT); err != nil {
		return nil, err
	}
	return p, nil
}

func quote(b []byte) string {
	if len(b) > 32 {
		b = b[:32]
	}
	return "\"" + string(b) + "\""
}

func (d *Decoder) decodeConnack(r *reader) (Packet, error) {
	p := &d.connack
	p.Props.Reset()
	flags, err := r.byte1("connect acknowledge flags")
	if err != nil {
		return nil, err
	}
	if flags&0xfe != 0 {
		return nil, malformed("[MQTT-3.2.2-1] CONNACK acknowledge flags bits 7-1 are reserved, got " + hex2(flags))
	}
	p.SessionPresent = flags&1 != 0
	code, err := r.byte1("connect reason code")
	if err != nil {
		return nil, err
	}
	p.Reason = ReasonCode(code)
	if d.Version == V5 {
		if !validConnackV5(p.Reason) {
			return nil, protocolErr("[MQTT-3.2.2-8] CONNACK reason code " + hex2(code) + " is not defined for CONNACK")
		}
		if err := decodeProps(r, CONNACK, &p.Props); err != nil {
			return nil, err
		}
	} else if code > 5 {
		return nil, malformed("(3.1.1 3.2.2.3) CONNACK return code " + itoa(int(code)) + " is reserved")
	}
	if p.SessionPresent && p.Reason != Success {
		return nil, protocolErr("[MQTT-3.2.2-4] (5.0 [MQTT-3.2.2-6]) session present with a refused connection")
	}
	if err := trailing(r, CONNACK); err != nil {
		return nil, err
	}
	return p, nil
}

func validConnackV5(r ReasonCode) bool {
	switch r {
	case Success, UnspecifiedError, MalformedPacket, ProtocolError, ImplementationSpecificError,
		UnsupportedProtocolVersion, ClientIdentifierNotValid, BadUserNameOrPassword, NotAuthorized,
		ServerUnavailable, ServerBusy, Banned, BadAuthenticationMethod, TopicNameInvalid,
		PacketTooLarge, QuotaExceeded, PayloadFormatInvalid, RetainNotSupported, QoSNotSupported,
		UseAnotherServer, ServerMoved, ConnectionRateExceeded:
		return true
	}
	return false
}

func (d *Decoder) decodePublish(flags byte, r *reader) (Packet, error) {
	p := &d.publish
	p.Props.Reset()
	p.Dup = flags&0x08 != 0
	p.QoS = (flags >> 1) & 0x03
	p.Retain = flags&0x01 != 0
	p.PacketID = 0
	if p.Dup && p.QoS == 0 {
		return nil, protocolErr("[MQTT-3.3.1-2] DUP flag set on a QoS 0 PUBLISH")
	}
	var err error
	if p.Topic, err = r.str("topic name"); err != nil {
		return nil, err
	}
	if p.QoS > 0 {
		if p.PacketID, err = r.uint16("packet identifier"); err != nil {
			return nil, err
		}
		if p.PacketID == 0 {
			return nil, protocolErr("[MQTT-2.3.1-1] (5.0 [MQTT-2.2.1-3]) QoS " + itoa(int(p.QoS)) + " PUBLISH with packet identifier 0")
		}
	}
	if d.Version == V5 {
		if err := decodeProps(r, PUBLISH, &p.Props); err != nil {
			return nil, err
		}
	}
	if len(p.Topic) == 0 && d.Version == V5 {
		// An empty topic name with a topic alias refers to an earlier topic;
		// without one it is a protocol error in 5.0, not an invalid name.
		if !p.Props.Has(PropTopicAlias) {
			return nil, protocolErr("(MQTT 5.0 3.3.2.1) [MQTT-4.7.3-1] empty topic name without a topic alias")
		}
	} else if err := validTopicName(p.Topic, false); err != nil {
		return nil, err
	}
	p.Payload = r.rest()
	if p.Props.Has(PropPayloadFormat) && p.Props.PayloadFormat == 1 {
		if err := ValidUTF8(p.Payload); err != nil {
			return nil, &Error{PayloadFormatInvalid, "(MQTT 5.0 3.3.2.3.2) payload format indicator 1 but payload is not UTF-8: " + err.(*Error).Rule}
		}
	}
	return p, nil
}

func (d *Decoder) decodeAck(t Type, r *reader) (Packet, error) {
	p := &d.ack
	p.Props.Reset()
	p.Kind, p.Reason = t, Success
	var err error
	if p.PacketID, err = r.uint16("packet identifier"); err != nil {
		return nil, err
	}
	if p.PacketID == 0 {
		return nil, protocolErr("[MQTT-2.3.1-1] (5.0 [MQTT-2.2.1-3]) " + t.String() + " with packet identifier 0")
	}
	if d.Version != V5 {
		if err := trailing(r, t); err != nil {
			return nil, err
		}
		return p, nil
	}
	if r.left() > 0 {
		code, _ := r.byte1("reason code")
		p.Reason = ReasonCode(code)
		if !validAckReason(t, p.Reason) {
			return nil, protocolErr("(MQTT 5.0 3.4.2.1) reason code " + hex2(code) + " is not defined for " + t.String())
		}
	}
	if r.left() > 0 {
		if err := decodeProps(r, t, &p.Props); err != nil {
			return nil, err
		}
	}
	if err := trailing(r, t); err != nil {
		return nil, err
	}
	return p, nil
}

func validAckReason(t Type, r ReasonCode) bool {
	if t == PUBREL || t == PUBCOMP {
		return r == Success || r == PacketIdentifierNotFound
	}
	switch r {
	case Success, NoMatchingSubscribers, UnspecifiedError, ImplementationSpecificError, NotAuthorized,
		TopicNameInvalid, PacketIdentifierInUse, QuotaExceeded, PayloadFormatInvalid:
		return true
	}
	return false
}

// packetIDAndProps reads the variable header that SUBSCRIBE, SUBACK,
// UNSUBSCRIBE and UNSUBACK share: a non-zero packet identifier and, in MQTT
// 5.0, the properties.
func (d *Decoder) packetIDAndProps(r *reader, t Type, id *uint16, props *Properties) error {
	var err error
	if *id, err = r.uint16("packet identifier"); err != nil {
		return err
	}
	if *id == 0 {
		return protocolErr("[MQTT-2.3.1-1] (5.0 [MQTT-2.2.1-3]) " + t.String() + " with packet identifier 0")
	}
	if d.Version == V5 {
		return decodeProps(r, t, props)
	}
	return nil
}

func (d *Decoder) decodeSubscribe(r *reader) (Packet, error) {
	p := &d.subscribe
	p.Props.Reset()
	p.Subscriptions = p.Subscriptions[:0]
	v5 := d.Version == V5
	if err := d.packetIDAndProps(r, SUBSCRIBE, &p.PacketID, &p.Props); err != nil {
		return nil, err
	}
	if r.left() == 0 {
		return nil, protocolErr("[MQTT-3.8.3-3] (5.0 [MQTT-3.8.3-2]) SUBSCRIBE without a topic filter")
	}
	for r.left() > 0 {
		f, err := r.str("topic filter")
		if err != nil {
			return nil, err
		}
		o, err := r.byte1("subscription options")
		if err != nil {
			return nil, err
		}
		if err := validTopicFilter(f, false); err != nil {
			return nil, err
		}
		s := Subscription{Filter: f, QoS: o & 0x03}
		if s.QoS == 3 {
			// 3.1.1 makes this a malformed packet, 5.0 a protocol error.
			if v5 {
				return nil, protocolErr("(MQTT 5.0 3.8.3.1) maximum QoS 3 for " + quote(f))
			}
			return nil, malformed("[MQTT-3-8.3-4] requested QoS 3 for " + quote(f))
		}
		if v5 {
			if o&0xc0 != 0 {
				return nil, malformed("[MQTT-3.8.3-5] reserved subscription option bits 6-7 set: " + hex2(o))
			}
			s.NoLocal = o&0x04 != 0
			s.RetainAsPublished = o&0x08 != 0
			s.RetainHandling = (o >> 4) & 0x03
			if s.RetainHandling == 3 {
				return nil, protocolErr("(MQTT 5.0 3.8.3.1) retain handling 3 for " + quote(f))
			}
			if _, _, shared := ParseShared(f); shared && s.NoLocal {
				return nil, protocolErr("[MQTT-3.8.3-4] no local on shared subscription " + quote(f))
			}
		} else if o&0xfc != 0 {
			return nil, malformed("[MQTT-3-8.3-4] reserved subscription option bits 2-7 set: " + hex2(o))
		}
		p.Subscriptions = append(p.Subscriptions, s)
	}
	return p, nil
}

func (d *Decoder) decodeSuback(r *reader) (Packet, error) {
	p := &d.suback
	p.Props.Reset()
	p.Reasons = p.Reasons[:0]
	if err := d.packetIDAndProps(r, SUBACK, &p.PacketID, &p.Props); err != nil {
		return nil, err
	}
	if r.left() == 0 {
		return nil, protocolErr("(3.9.3) SUBACK without a return code")
	}
	for r.left() > 0 {
		c, _ := r.byte1("reason code")
		if !validSubackReason(ReasonCode(c), d.Version) {
			return nil, protocolErr("[MQTT-3.9.3-2] SUBACK reason code " + hex2(c) + " is not allowed")
		}
		p.Reasons = append(p.Reasons, ReasonCode(c))
	}
	return p, nil
}

func validSubackReason(r ReasonCode, v Version) bool {
	switch r {
	case GrantedQoS0, GrantedQoS1, GrantedQoS2, UnspecifiedError:
		return true
	case ImplementationSpecificError, NotAuthorized, TopicFilterInvalid, PacketIdentifierInUse,
		QuotaExceeded, SharedSubscriptionsNotSupported, SubscriptionIdentifiersNotSupported,
		WildcardSubscriptionsNotSupported:
		return v == V5
	}
	return false
}

func (d *Decoder) decodeUnsubscribe(r *reader) (Packet, error) {
	p := &d.unsubscribe
	p.Props.Reset()
	p.Filters = p.Filters[:0]
	if err := d.packetIDAndProps(r, UNSUBSCRIBE, &p.PacketID, &p.Props); err != nil {
		return nil, err
	}
	if r.left() == 0 {
		return nil, protocolErr("[MQTT-3.10.3-2] UNSUBSCRIBE without a topic filter")
	}
	for r.left() > 0 {
		f, err := r.str("topic filter")
		if err != nil {
			return nil, err
		}
		if err := validTopicFilter(f, false); err != nil {
			return nil, err
		}
		p.Filters = append(p.Filters, f)
	}
	return p, nil
}

func (d *Decoder) decodeUnsuback(r *reader) (Packet, error) {
	p := &d.unsuback
	p.Props.Reset()
	p.Reasons = p.Reasons[:0]
	if err := d.packetIDAndProps(r, UNSUBACK, &p.PacketID, &p.Props); err != nil {
		return nil, err
	}
	if d.Version != V5 {
		if err := trailing(r, UNSUBACK); err != nil {
			return nil, err
		}
		return p, nil
	}
	if r.left() == 0 {
		return nil, protocolErr("(MQTT 5.0 3.11.3) UNSUBACK without a reason code")
	}
	for r.left() > 0 {
		c, _ := r.byte1("reason code")
		switch ReasonCode(c) {
		case Success, NoSubscriptionExisted, UnspecifiedError, ImplementationSpecificError,
			NotAuthorized, TopicFilterInvalid, PacketIdentifierInUse:
		default:
			return nil, protocolErr("[MQTT-3.11.3-2] UNSUBACK reason code " + hex2(c) + " is not allowed")
		}
		p.Reasons = append(p.Reasons, ReasonCode(c))
	}
	return p, nil
}

func (d *Decoder) decodeDisconnect(r *reader) (Packet, error) {
	p := &d.disconnect
	p.Props.Reset()
	p.Reason = Success
	if d.Version != V5 {
		if err := trailing(r, DISCONNECT); err != nil {
			return nil, err
		}
		return p, nil
	}
	if r.left() > 0 {
		c, _ := r.byte1("reason code")
		p.Reason = ReasonCode(c)
		if !validDisconnectReason(p.Reason) {
			return nil, protocolErr("[MQTT-3.14.2-1] DISCONNECT reason code " + hex2(c) + " is not defined")
		}
	}
	if r.left() > 0 {
		if err := decodeProps(r, DISCONNECT, &p.Props); err != nil {
			return nil, err
		}
	}
	if err := trailing(r, DISCONNECT); err != nil {
		return nil, err
	}
	return p, nil
}

func validDisconnectReason(r ReasonCode) bool {
	switch r {
	case Success, DisconnectWithWill:
		return true
	case ClientIdentifierNotValid, BadUserNameOrPassword, ServerUnavailable, Banned,
		BadAuthenticationMethod, PacketIdentifierInUse, PacketIdentifierNotFound,
		UnsupportedProtocolVersion:
		return false
	}
	return r >= UnspecifiedError && r <= WildcardSubscriptionsNotSupported
}

func (d *Decoder) decodeAuth(r *reader) (Packet, error) {
	if d.Version != V5 {
		return nil, protocolErr("(MQTT 5.0 3.15) AUTH on an MQTT " + versionName(d.Version) + " connection")
	}
	p := &d.auth
	p.Props.Reset()
	p.Reason = Success
	if r.left() > 0 {
		c, _ := r.byte1("reason code")
		p.Reason = ReasonCode(c)
		switch p.Reason {
		case Success, ContinueAuthentication, ReAuthenticate:
		default:
			return nil, protocolErr("[MQTT-3.15.2-1] AUTH reason code " + hex2(c) + " is not 0x00, 0x18 or 0x19")
		}
	}
	if r.left() > 0 {
		if err := decodeProps(r, AUTH, &p.Props); err != nil {
			return nil, err
		}
	}
	if err := trailing(r, AUTH); err != nil {
		return nil, err
	}
	return p, nil
}

func versionName(v Version) string {
	switch v {
	case V31:
		return "3.1"
	case V311:
		return "3.1.1"
	case V5:
		return "5.0"
	}
	return "level " + itoa(int(v))
}
