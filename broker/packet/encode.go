package packet

// Encoders append a whole packet (fixed header included) to dst and return
// the extended slice; with enough capacity in dst they allocate nothing. They
// first check what the caller controls (topic names and filters, QoS, packet
// identifiers, reason codes, properties allowed in the packet, fields a 3.1 or
// 3.1.1 packet cannot carry) and return an *Error without appending anything.

func checkVersion(v Version) error {
	switch v {
	case V31, V311, V5:
		return nil
	}
	return &Error{UnsupportedProtocolVersion, "protocol level " + itoa(int(v)) + " is not 3, 4 or 5"}
}

// fixedHeader appends the fixed header of a packet with remaining length rem.
func fixedHeader(dst []byte, b0 byte, rem int) ([]byte, error) {
	if rem > MaxRemainingLength {
		return dst, &Error{PacketTooLarge, "(MQTT 5.0 2.1.4) " + Type(b0>>4).String() + " remaining length " + itoa(rem) + " exceeds 268435455"}
	}
	dst = append(dst, b0)
	return AppendVarInt(dst, rem), nil
}

// propsBlock is the encoded length of the property block for t, length
// prefix included; zero before MQTT 5.0.
func propsBlock(p *Properties, t Type, v Version) (block, size int) {
	if v != V5 {
		return 0, 0
	}
	size = p.Size(t)
	return varIntLen(size) + size, size
}

// Append appends p, whatever its type, for protocol version v. CONNECT uses
// its own Version instead of v.
func Append(dst []byte, p Packet, v Version) ([]byte, error) {
	switch p := p.(type) {
	case *Connect:
		return p.Append(dst)
	case *Connack:
		return p.Append(dst, v)
	case *Publish:
		return p.Append(dst, v)
	case *Ack:
		return p.Append(dst, v)
	case *Subscribe:
		return p.Append(dst, v)
	case *Suback:
		return p.Append(dst, v)
	case *Unsubscribe:
		return p.Append(dst, v)
	case *Unsuback:
		return p.Append(dst, v)
	case *Pingreq:
		return p.Append(dst, v)
	case *Pingresp:
		return p.Append(dst, v)
	case *Disconnect:
		return p.Append(dst, v)
	case *Auth:
		return p.Append(dst, v)
	case nil:
		return dst, protocolErr("cannot encode a nil packet")
	}
	return dst, protocolErr("cannot encode packet type " + p.Type().String())
}

// Connect

func (p *Connect) protocolName() []byte {
	if p.ProtocolName != nil {
		return p.ProtocolName
	}
	if p.Version == V31 {
		return nameMQIsdp
	}
	return nameMQTT
}

func (p *Connect) check() error {
	v := p.Version
	if err := checkVersion(v); err != nil {
		return err
	}
	name := p.protocolName()
	if (v == V31) != (string(name) == "MQIsdp") || (v != V31 && string(name) != "MQTT") {
		return &Error{UnsupportedProtocolVersion, "[MQTT-3.1.2-1] protocol name " + quote(name) + " does not go with protocol level " + itoa(int(v))}
	}
	if p.WillQoS > 2 {
		return malformed("[MQTT-3.1.2-14] (5.0 [MQTT-3.1.2-12]) will QoS " + itoa(int(p.WillQoS)))
	}
	if !p.WillFlag && p.WillQoS != 0 {
		return malformed("[MQTT-3.1.2-13] (5.0 [MQTT-3.1.2-11]) will QoS " + itoa(int(p.WillQoS)) + " without the will flag")
	}
	if !p.WillFlag && p.WillRetain {
		return malformed("[MQTT-3.1.2-15] (5.0 [MQTT-3.1.2-13]) will retain without the will flag")
	}
	if v != V5 && p.PasswordFlag && !p.UsernameFlag {
		return malformed("[MQTT-3.1.2-22] password flag without user name flag")
	}
	if err := checkString(p.ClientID, "client identifier"); err != nil {
		return err
	}
	if v == V311 && len(p.ClientID) == 0 && !p.CleanStart {
		return &Error{ClientIdentifierNotValid, "[MQTT-3.1.3-8] empty client identifier with clean session 0"}
	}
	if v == V31 && len(p.ClientID) == 0 {
		return &Error{ClientIdentifierNotValid, "(MQTT 3.1 CONNECT payload) client identifier must be 1 to 23 characters, got none"}
	}
	if err := p.Props.validate(CONNECT, v); err != nil {
		return err
	}
	if p.WillFlag {
		if err := ValidTopicName(p.WillTopic); err != nil {
			return &Error{TopicNameInvalid, "will topic: " + err.(*Error).Rule}
		}
		if err := p.WillProps.validate(willProps, v); err != nil {
			return err
		}
		if len(p.WillPayload) > 65535 {
			return malformed("(3.1.3.3) will payload of " + itoa(len(p.WillPayload)) + " bytes is longer than 65535")
		}
	}
	if p.UsernameFlag {
		if err := checkString(p.Username, "user name"); err != nil {
			return err
		}
	}
	if p.PasswordFlag && len(p.Password) > 65535 {
		return malformed("(3.1.3.5) password of " + itoa(len(p.Password)) + " bytes is longer than 65535")
	}
	return nil
}

func (p *Connect) remaining() int {
	v := p.Version
	n := 2 + len(p.protocolName()) + 1 + 1 + 2
	pb, _ := propsBlock(&p.Props, CONNECT, v)
	n += pb + 2 + len(p.ClientID)
	if p.WillFlag {
		wb, _ := propsBlock(&p.WillProps, willProps, v)
		n += wb + 2 + len(p.WillTopic) + 2 + len(p.WillPayload)
	}
	if p.UsernameFlag {
		n += 2 + len(p.Username)
	}
	if p.PasswordFlag {
		n += 2 + len(p.Password)
	}
	return n
}

// Size is the length of the encoded packet, fixed header included.
func (p *Connect) Size() int { r := p.remaining(); return HeaderLen(r) + r }

// Append appends the CONNECT packet for protocol level p.Version. A nil
// ProtocolName is written as the level's name ("MQIsdp" for 3.1, "MQTT"
// otherwise). Will fields are written only with WillFlag, the user name only
// with UsernameFlag and the password only with PasswordFlag.
func (p *Connect) Append(dst []byte) ([]byte, error) {
	if err := p.check(); err != nil {
		return dst, err
	}
	v := p.Version
	dst, err := fixedHeader(dst, byte(CONNECT)<<4, p.remaining())
	if err != nil {
		return dst, err
	}
	dst = appendBytes(dst, p.protocolName())
	var flags byte
	if p.CleanStart {
		flags |= 0x02
	}
	if p.WillFlag {
		flags |= 0x04 | p.WillQoS<<3
		if p.WillRetain {
			flags |= 0x20
		}
	}
	if p.PasswordFlag {
		flags |= 0x40
	}
	if p.UsernameFlag {
		flags |= 0x80
	}
	dst = append(dst, byte(v), flags, byte(p.KeepAlive>>8), byte(p.KeepAlive))
	if v == V5 {
		dst = p.Props.appendProps(dst, CONNECT, p.Props.Size(CONNECT))
	}
	dst = appendBytes(dst, p.ClientID)
	if p.WillFlag {
		if v == V5 {
			dst = p.WillProps.appendProps(dst, willProps, p.WillProps.Size(willProps))
		}
		dst = appendBytes(dst, p.WillTopic)
		dst = appendBytes(dst, p.WillPayload)
	}
	if p.UsernameFlag {
		dst = appendBytes(dst, p.Username)
	}
	if p.PasswordFlag {
		dst = appendBytes(dst, p.Password)
	}
	return dst, nil
}

// Connack

// Append appends the CONNACK packet. In 3.1 and 3.1.1 Reason must be a return
// code 0..5 (see ConnackCodeV3) and there are no properties.
func (p *Connack) Append(dst []byte, v Version) ([]byte, error) {
	if err := checkVersion(v); err != nil {
		return dst, err
	}
	if v == V5 {
		if !validConnackV5(p.Reason) {
			return dst, protocolErr("[MQTT-3.2.2-8] reason code " + hex2(byte(p.Reason)) + " is not defined for CONNACK")
		}
	} else if p.Reason > 5 {
		return dst, protocolErr("(3.1.1 3.2.2.3) CONNACK return code " + hex2(byte(p.Reason)) + " does not exist in MQTT " + versionName(v) + "; use ConnackCodeV3")
	}
	if p.SessionPresent && p.Reason != Success {
		return dst, protocolErr("[MQTT-3.2.2-4] (5.0 [MQTT-3.2.2-6]) session present with a refused connection")
	}
	if err := p.Props.validate(CONNACK, v); err != nil {
		return dst, err
	}
	pb, ps := propsBlock(&p.Props, CONNACK, v)
	dst, err := fixedHeader(dst, byte(CONNACK)<<4, 2+pb)
	if err != nil {
		return dst, err
	}
	var flags byte
	if p.SessionPresent {
		flags = 1
	}
	dst = append(dst, flags, byte(p.Reason))
	if v == V5 {
		dst = p.Props.appendProps(dst, CONNACK, ps)
	}
	return dst, nil
}

// Publish

func (p *Publish) remaining(v Version) (rem, propSize int) {
	rem = 2 + len(p.Topic) + len(p.Payload)
	if p.QoS > 0 {
		rem += 2
	}
	pb, ps := propsBlock(&p.Props, PUBLISH, v)
	return rem + pb, ps
}

// Size is the length of the encoded packet for v, fixed header included.
func (p *Publish) Size(v Version) int {
	rem, _ := p.remaining(v)
	return HeaderLen(rem) + rem
}

// Append appends the PUBLISH packet. PacketID is written only for QoS 1 and 2.
// In 3.1 and 3.1.1 Props are not written: those versions have no place for
// them, and a broker forwarding an MQTT 5.0 message to an older client drops
// them. A payload format indicator of 1 is not checked against the payload
// here; the decoder checks it on receipt.
func (p *Publish) Append(dst []byte, v Version) ([]byte, error) {
	if err := checkVersion(v); err != nil {
		return dst, err
	}
	if p.QoS > 2 {
		return dst, malformed("[MQTT-3.3.1-4] PUBLISH QoS " + itoa(int(p.QoS)))
	}
	if p.Dup && p.QoS == 0 {
		return dst, protocolErr("[MQTT-3.3.1-2] DUP flag set on a QoS 0 PUBLISH")
	}
	if p.QoS > 0 && p.PacketID == 0 {
		return dst, protocolErr("[MQTT-2.3.1-1] (5.0 [MQTT-2.2.1-3]) QoS " + itoa(int(p.QoS)) + " PUBLISH with packet identifier 0")
	}
	if len(p.Topic) == 0 && v == V5 && p.Props.Has(PropTopicAlias) {
		// The topic alias stands for the topic.
	} else if err := ValidTopicName(p.Topic); err != nil {
		return dst, err
	}
	if v == V5 {
		if err := p.Props.validate(PUBLISH, v); err != nil {
			return dst, err
		}
	}
	rem, ps := p.remaining(v)
	b0 := byte(PUBLISH)<<4 | p.QoS<<1
	if p.Dup {
		b0 |= 0x08
	}
	if p.Retain {
		b0 |= 0x01
	}
	dst, err := fixedHeader(dst, b0, rem)
	if err != nil {
		return dst, err
	}
	dst = appendBytes(dst, p.Topic)
	if p.QoS > 0 {
		dst = append(dst, byte(p.PacketID>>8), byte(p.PacketID))
	}
	if v == V5 {
		dst = p.Props.appendProps(dst, PUBLISH, ps)
	}
	return append(dst, p.Payload...), nil
}

// Ack

func (p *Ack) remaining(v Version) (rem, propSize int) {
	if v != V5 {
		return 2, 0
	}
	ps := p.Props.Size(p.Kind)
	switch {
	case ps > 0:
		return 3 + varIntLen(ps) + ps, ps
	case p.Reason != Success:
		return 3, 0
	}
	return 2, 0
}

// Size is the length of the encoded packet for v, fixed header included.
func (p *Ack) Size(v Version) int {
	rem, _ := p.remaining(v)
	return HeaderLen(rem) + rem
}

// Append appends the PUBACK, PUBREC, PUBREL or PUBCOMP packet named by Kind.
// In MQTT 5.0 the reason code and properties are left out when the reason is
// Success and there are no properties; in 3.1 and 3.1.1 the reason must be
// Success and there must be no properties.
func (p *Ack) Append(dst []byte, v Version) ([]byte, error) {
	if err := checkVersion(v); err != nil {
		return dst, err
	}
	if p.Kind < PUBACK || p.Kind > PUBCOMP {
		return dst, protocolErr("Ack kind " + p.Kind.String() + " is not PUBACK, PUBREC, PUBREL or PUBCOMP")
	}
	if p.PacketID == 0 {
		return dst, protocolErr("[MQTT-2.3.1-1] (5.0 [MQTT-2.2.1-3]) " + p.Kind.String() + " with packet identifier 0")
	}
	if v != V5 && p.Reason != Success {
		return dst, protocolErr(p.Kind.String() + " reason code " + hex2(byte(p.Reason)) + " cannot be sent in MQTT " + versionName(v))
	}
	if !validAckReason(p.Kind, p.Reason) {
		return dst, protocolErr("(MQTT 5.0 3.4.2.1) reason code " + hex2(byte(p.Reason)) + " is not defined for " + p.Kind.String())
	}
	if err := p.Props.validate(p.Kind, v); err != nil {
		return dst, err
	}
	rem, ps := p.remaining(v)
	b0 := byte(p.Kind) << 4
	if p.Kind == PUBREL {
		b0 |= 0x02
	}
	dst = append(dst, b0, byte(rem), byte(p.PacketID>>8), byte(p.PacketID))
	if rem > 2 {
		dst = append(dst, byte(p.Reason))
	}
	if ps > 0 {
		dst = p.Props.appendProps(dst, p.Kind, ps)
	}
	return dst, nil
}

// Subscribe

func (p *Subscribe) check(v Version) error {
	if err := checkVersion(v); err != nil {
		return err
	}
	if p.PacketID == 0 {
		return protocolErr("[MQTT-2.3.1-1] (5.0 [MQTT-2.2.1-3]) SUBSCRIBE with packet identifier 0")
	}
	if len(p.Subscriptions) == 0 {
		return protocolErr("[MQTT-3.8.3-3] (5.0 [MQTT-3.8.3-2]) SUBSCRIBE without a topic filter")
	}
	for i := range p.Subscriptions {
		s := &p.Subscriptions[i]
		if err := ValidTopicFilter(s.Filter); err != nil {
			return err
		}
		if s.QoS > 2 {
			return malformed("[MQTT-3-8.3-4] requested QoS " + itoa(int(s.QoS)) + " for " + quote(s.Filter))
		}
		if v != V5 {
			if s.NoLocal || s.RetainAsPublished || s.RetainHandling != 0 {
				return protocolErr("subscription options no local, retain as published and retain handling need MQTT 5.0, connection is " + versionName(v))
			}
			continue
		}
		if s.RetainHandling > 2 {
			return protocolErr("(MQTT 5.0 3.8.3.1) retain handling " + itoa(int(s.RetainHandling)) + " for " + quote(s.Filter))
		}
		if _, _, shared := ParseShared(s.Filter); shared && s.NoLocal {
			return protocolErr("[MQTT-3.8.3-4] no local on shared subscription " + quote(s.Filter))
		}
	}
	return p.Props.validate(SUBSCRIBE, v)
}

func (p *Subscribe) remaining(v Version) (rem, propSize int) {
	pb, ps := propsBlock(&p.Props, SUBSCRIBE, v)
	rem = 2 + pb
	for i := range p.Subscriptions {
		rem += 3 + len(p.Subscriptions[i].Filter)
	}
	return rem, ps
}

// Size is the length of the encoded packet for v, fixed header included.
func (p *Subscribe) Size(v Version) int {
	rem, _ := p.remaining(v)
	return HeaderLen(rem) + rem
}

// Append appends the SUBSCRIBE packet.
func (p *Subscribe) Append(dst []byte, v Version) ([]byte, error) {
	if err := p.check(v); err != nil {
		return dst, err
	}
	rem, ps := p.remaining(v)
	dst, err := fixedHeader(dst, byte(SUBSCRIBE)<<4|0x02, rem)
	if err != nil {
		return dst, err
	}
	dst = append(dst, byte(p.PacketID>>8), byte(p.PacketID))
	if v == V5 {
		dst = p.Props.appendProps(dst, SUBSCRIBE, ps)
	}
	for i := range p.Subscriptions {
		s := &p.Subscriptions[i]
		dst = appendBytes(dst, s.Filter)
		o := s.QoS | s.RetainHandling<<4
		if s.NoLocal {
			o |= 0x04
		}
		if s.RetainAsPublished {
			o |= 0x08
		}
		dst = append(dst, o)
	}
	return dst, nil
}

// Suback

// Append appends the SUBACK packet. In 3.1 and 3.1.1 the reasons are the
// granted QoS 0, 1 or 2, or the failure 0x80.
func (p *Suback) Append(dst []byte, v Version) ([]byte, error) {
	if err := checkVersion(v); err != nil {
		return dst, err
	}
	if p.PacketID == 0 {
		return dst, protocolErr("[MQTT-2.3.1-1] (5.0 [MQTT-2.2.1-3]) SUBACK with packet identifier 0")
	}
	if len(p.Reasons) == 0 {
		return dst, protocolErr("(3.9.3) SUBACK without a return code")
	}
	for _, r := range p.Reasons {
		if !validSubackReason(r, v) {
			return dst, protocolErr("[MQTT-3.9.3-2] SUBACK reason code " + hex2(byte(r)) + " is not allowed in MQTT " + versionName(v))
		}
	}
	if err := p.Props.validate(SUBACK, v); err != nil {
		return dst, err
	}
	pb, ps := propsBlock(&p.Props, SUBACK, v)
	dst, err := fixedHeader(dst, byte(SUBACK)<<4, 2+pb+len(p.Reasons))
	if err != nil {
		return dst, err
	}
	dst = append(dst, byte(p.PacketID>>8), byte(p.PacketID))
	if v == V5 {
		dst = p.Props.appendProps(dst, SUBACK, ps)
	}
	for _, r := range p.Reasons {
		dst = append(dst, byte(r))
	}
	return dst, nil
}

// Unsubscribe

// Append appends the UNSUBSCRIBE packet.
func (p *Unsubscribe) Append(dst []byte, v Version) ([]byte, error) {
	if err := checkVersion(v); err != nil {
		return dst, err
	}
	if p.PacketID == 0 {
		return dst, protocolErr("[MQTT-2.3.1-1] (5.0 [MQTT-2.2.1-3]) UNSUBSCRIBE with packet identifier 0")
	}
	if len(p.Filters) == 0 {
		return dst, protocolErr("[MQTT-3.10.3-2] UNSUBSCRIBE without a topic filter")
	}
	rem := 2
	for _, f := range p.Filters {
		if err := ValidTopicFilter(f); err != nil {
			return dst, err
		}
		rem += 2 + len(f)
	}
	if err := p.Props.validate(UNSUBSCRIBE, v); err != nil {
		return dst, err
	}
	pb, ps := propsBlock(&p.Props, UNSUBSCRIBE, v)
	dst, err := fixedHeader(dst, byte(UNSUBSCRIBE)<<4|0x02, rem+pb)
	if err != nil {
		return dst, err
	}
	dst = append(dst, byte(p.PacketID>>8), byte(p.PacketID))
	if v == V5 {
		dst = p.Props.appendProps(dst, UNSUBSCRIBE, ps)
	}
	for _, f := range p.Filters {
		dst = appendBytes(dst, f)
	}
	return dst, nil
}

// Unsuback

// Append appends the UNSUBACK packet. In MQTT 5.0 it needs one reason per
// filter; in 3.1 and 3.1.1 Reasons are not written (those versions have none).
func (p *Unsuback) Append(dst []byte, v Version) ([]byte, error) {
	if err := checkVersion(v); err != nil {
		return dst, err
	}
	if p.PacketID == 0 {
		return dst, protocolErr("[MQTT-2.3.1-1] (5.0 [MQTT-2.2.1-3]) UNSUBACK with packet identifier 0")
	}
	if err := p.Props.validate(UNSUBACK, v); err != nil {
		return dst, err
	}
	if v != V5 {
		return fixedHeaderID(dst, byte(UNSUBACK)<<4, p.PacketID), nil
	}
	if len(p.Reasons) == 0 {
		return dst, protocolErr("(MQTT 5.0 3.11.3) UNSUBACK without a reason code")
	}
	for _, r := range p.Reasons {
		switch r {
		case Success, NoSubscriptionExisted, UnspecifiedError, ImplementationSpecificError,
			NotAuthorized, TopicFilterInvalid, PacketIdentifierInUse:
		default:
			return dst, protocolErr("[MQTT-3.11.3-2] UNSUBACK reason code " + hex2(byte(r)) + " is not allowed")
		}
	}
	pb, ps := propsBlock(&p.Props, UNSUBACK, v)
	dst, err := fixedHeader(dst, byte(UNSUBACK)<<4, 2+pb+len(p.Reasons))
	if err != nil {
		return dst, err
	}
	dst = append(dst, byte(p.PacketID>>8), byte(p.PacketID))
	dst = p.Props.appendProps(dst, UNSUBACK, ps)
	for _, r := range p.Reasons {
		dst = append(dst, byte(r))
	}
	return dst, nil
}

func fixedHeaderID(dst []byte, b0 byte, id uint16) []byte {
	return append(dst, b0, 2, byte(id>>8), byte(id))
}

// Append appends the PINGREQ packet.
func (p *Pingreq) Append(dst []byte, v Version) ([]byte, error) {
	if err := checkVersion(v); err != nil {
		return dst, err
	}
	return append(dst, byte(PINGREQ)<<4, 0), nil
}

// Append appends the PINGRESP packet.
func (p *Pingresp) Append(dst []byte, v Version) ([]byte, error) {
	if err := checkVersion(v); err != nil {
		return dst, err
	}
	return append(dst, byte(PINGRESP)<<4, 0), nil
}

// appendReasonProps appends a DISCONNECT or AUTH body: nothing for Success
// without properties, the reason alone without properties, or both.
func appendReasonProps(dst []byte, t Type, reason ReasonCode, props *Properties) ([]byte, error) {
	ps := props.Size(t)
	rem := 0
	switch {
	case ps > 0:
		rem = 1 + varIntLen(ps) + ps
	case reason != Success:
		rem = 1
	}
	dst, err := fixedHeader(dst, byte(t)<<4, rem)
	if err != nil {
		return dst, err
	}
	if rem > 0 {
		dst = append(dst, byte(reason))
	}
	if ps > 0 {
		dst = props.appendProps(dst, t, ps)
	}
	return dst, nil
}

// Append appends the DISCONNECT packet. In 3.1 and 3.1.1 the reason must be
// Success (normal disconnection) and there must be no properties.
func (p *Disconnect) Append(dst []byte, v Version) ([]byte, error) {
	if err := checkVersion(v); err != nil {
		return dst, err
	}
	if v != V5 {
		if p.Reason != Success {
			return dst, protocolErr("DISCONNECT reason code " + hex2(byte(p.Reason)) + " cannot be sent in MQTT " + versionName(v))
		}
		if err := p.Props.validate(DISCONNECT, v); err != nil {
			return dst, err
		}
		return append(dst, byte(DISCONNECT)<<4, 0), nil
	}
	if !validDisconnectReason(p.Reason) {
		return dst, protocolErr("[MQTT-3.14.2-1] DISCONNECT reason code " + hex2(byte(p.Reason)) + " is not defined")
	}
	if err := p.Props.validate(DISCONNECT, v); err != nil {
		return dst, err
	}
	return appendReasonProps(dst, DISCONNECT, p.Reason, &p.Props)
}

// Append appends the AUTH packet, which exists only in MQTT 5.0.
func (p *Auth) Append(dst []byte, v Version) ([]byte, error) {
	if err := checkVersion(v); err != nil {
		return dst, err
	}
	if v != V5 {
		return dst, protocolErr("(MQTT 5.0 3.15) AUTH cannot be sent in MQTT " + versionName(v))
	}
	switch p.Reason {
	case Success, ContinueAuthentication, ReAuthenticate:
	default:
		return dst, protocolErr("[MQTT-3.15.2-1] AUTH reason code " + hex2(byte(p.Reason)) + " is not 0x00, 0x18 or 0x19")
	}
	if err := p.Props.validate(AUTH, v); err != nil {
		return dst, err
	}
	return appendReasonProps(dst, AUTH, p.Reason, &p.Props)
}
