package packet

import "math/bits"

// Property value kinds (MQTT 5.0 section 1.5).
const (
	kindNone byte = iota
	kindByte
	kindU16
	kindU32
	kindVarInt
	kindString
	kindBinary
	kindPair
)

// willProps stands for the will properties in CONNECT's payload in the
// tables below; packet type 0 is reserved, so it is free for this use.
const willProps = Reserved

// maxSubscriptionID is the largest subscription identifier (a variable byte
// integer).
const maxSubscriptionID = MaxRemainingLength

func tmask(ts ...Type) uint16 {
	var m uint16
	for _, t := range ts {
		m |= 1 << t
	}
	return m
}

var allTypes = tmask(willProps, CONNECT, CONNACK, PUBLISH, PUBACK, PUBREC, PUBREL, PUBCOMP,
	SUBSCRIBE, SUBACK, UNSUBSCRIBE, UNSUBACK, DISCONNECT, AUTH)

// propInfo is MQTT 5.0 section 2.2.2.2: each property's value kind and the
// packets it may appear in.
var propInfo = [64]struct {
	kind    byte
	allowed uint16
}{
	PropPayloadFormat:           {kindByte, tmask(PUBLISH, willProps)},
	PropMessageExpiry:           {kindU32, tmask(PUBLISH, willProps)},
	PropContentType:             {kindString, tmask(PUBLISH, willProps)},
	PropResponseTopic:           {kindString, tmask(PUBLISH, willProps)},
	PropCorrelationData:         {kindBinary, tmask(PUBLISH, willProps)},
	PropSubscriptionID:          {kindVarInt, tmask(PUBLISH, SUBSCRIBE)},
	PropSessionExpiry:           {kindU32, tmask(CONNECT, CONNACK, DISCONNECT)},
	PropAssignedClientID:        {kindString, tmask(CONNACK)},
	PropServerKeepAlive:         {kindU16, tmask(CONNACK)},
	PropAuthMethod:              {kindString, tmask(CONNECT, CONNACK, AUTH)},
	PropAuthData:                {kindBinary, tmask(CONNECT, CONNACK, AUTH)},
	PropRequestProblemInfo:      {kindByte, tmask(CONNECT)},
	PropWillDelay:               {kindU32, tmask(willProps)},
	PropRequestResponseInfo:     {kindByte, tmask(CONNECT)},
	PropResponseInfo:            {kindString, tmask(CONNACK)},
	PropServerReference:         {kindString, tmask(CONNACK, DISCONNECT)},
	PropReasonString:            {kindString, tmask(CONNACK, PUBACK, PUBREC, PUBREL, PUBCOMP, SUBACK, UNSUBACK, DISCONNECT, AUTH)},
	PropReceiveMaximum:          {kindU16, tmask(CONNECT, CONNACK)},
	PropTopicAliasMaximum:       {kindU16, tmask(CONNECT, CONNACK)},
	PropTopicAlias:              {kindU16, tmask(PUBLISH)},
	PropMaximumQoS:              {kindByte, tmask(CONNACK)},
	PropRetainAvailable:         {kindByte, tmask(CONNACK)},
	PropUser:                    {kindPair, allTypes},
	PropMaximumPacketSize:       {kindU32, tmask(CONNECT, CONNACK)},
	PropWildcardSubAvailable:    {kindByte, tmask(CONNACK)},
	PropSubscriptionIDAvailable: {kindByte, tmask(CONNACK)},
	PropSharedSubAvailable:      {kindByte, tmask(CONNACK)},
}

// allowedMask is the set of property identifiers allowed in packet type t.
func allowedMask(t Type) uint64 {
	var m uint64
	for id := range propInfo {
		if propInfo[id].allowed&(1<<t) != 0 {
			m |= 1 << id
		}
	}
	return m
}

var allowedByType = func() (a [16]uint64) {
	for t := range a {
		a[t] = allowedMask(Type(t))
	}
	return a
}()

// booleanMask holds the byte properties whose only values are 0 and 1 (every
// byte property).
var booleanMask = func() (m uint64) {
	for id := range propInfo {
		if propInfo[id].kind == kindByte {
			m |= 1 << id
		}
	}
	return m
}()

// scalarMask holds the identifiers whose presence Properties.Present records.
var scalarMask = func() (m uint64) {
	for id := range propInfo {
		switch propInfo[id].kind {
		case kindByte, kindU16, kindU32:
			m |= 1 << id
		}
	}
	return m
}()

func placeName(t Type) string {
	if t == willProps {
		return "will properties"
	}
	return t.String()
}

// mask is the set of property identifiers present in p.
func (p *Properties) mask() uint64 {
	m := p.Present & scalarMask
	if p.ContentType != nil {
		m |= 1 << PropContentType
	}
	if p.ResponseTopic != nil {
		m |= 1 << PropResponseTopic
	}
	if p.CorrelationData != nil {
		m |= 1 << PropCorrelationData
	}
	if len(p.SubscriptionIDs) > 0 {
		m |= 1 << PropSubscriptionID
	}
	if p.AssignedClientID != nil {
		m |= 1 << PropAssignedClientID
	}
	if p.AuthMethod != nil {
		m |= 1 << PropAuthMethod
	}
	if p.AuthData != nil {
		m |= 1 << PropAuthData
	}
	if p.ResponseInfo != nil {
		m |= 1 << PropResponseInfo
	}
	if p.ServerReference != nil {
		m |= 1 << PropServerReference
	}
	if p.ReasonString != nil {
		m |= 1 << PropReasonString
	}
	if len(p.User) > 0 {
		m |= 1 << PropUser
	}
	return m
}

// Empty reports whether p holds no property at all.
func (p *Properties) Empty() bool { return p.mask() == 0 }

// Size is the encoded length of the property block for packet type t (use
// Reserved for will properties), without its length prefix. Properties not
// allowed in t are not counted; the encoders refuse them.
func (p *Properties) Size(t Type) int {
	m := p.mask() & allowedByType[t&0xf]
	if m == 0 {
		return 0
	}
	n := 0
	for ; m != 0; m &= m - 1 {
		id := bits.TrailingZeros64(m)
		switch propInfo[id].kind {
		case kindByte:
			n += 2
		case kindU16:
			n += 3
		case kindU32:
			n += 5
		case kindString, kindBinary:
			n += 3 + len(*p.bytesField(byte(id)))
		case kindVarInt:
			for _, s := range p.SubscriptionIDs {
				n += 1 + varIntLen(int(s))
			}
		case kindPair:
			for _, u := range p.User {
				n += 5 + len(u.Key) + len(u.Value)
			}
		}
	}
	return n
}

// bytesField returns the string or binary property id.
func (p *Properties) bytesField(id byte) *[]byte {
	switch id {
	case PropContentType:
		return &p.ContentType
	case PropResponseTopic:
		return &p.ResponseTopic
	case PropCorrelationData:
		return &p.CorrelationData
	case PropAssignedClientID:
		return &p.AssignedClientID
	case PropAuthMethod:
		return &p.AuthMethod
	case PropAuthData:
		return &p.AuthData
	case PropResponseInfo:
		return &p.ResponseInfo
	case PropServerReference:
		return &p.ServerReference
	case PropReasonString:
		return &p.ReasonString
	}
	return nil
}

func (p *Properties) byteField(id byte) *byte {
	switch id {
	case PropPayloadFormat:
		return &p.PayloadFormat
	case PropRequestProblemInfo:
		return &p.RequestProblemInfo
	case PropRequestResponseInfo:
		return &p.RequestResponseInfo
	case PropMaximumQoS:
		return &p.MaximumQoS
	case PropRetainAvailable:
		return &p.RetainAvailable
	case PropWildcardSubAvailable:
		return &p.WildcardSubAvailable
	case PropSubscriptionIDAvailable:
		return &p.SubscriptionIDAvailable
	case PropSharedSubAvailable:
		return &p.SharedSubAvailable
	}
	return nil
}

func (p *Properties) u16Field(id byte) *uint16 {
	switch id {
	case PropServerKeepAlive:
		return &p.ServerKeepAlive
	case PropReceiveMaximum:
		return &p.ReceiveMaximum
	case PropTopicAliasMaximum:
		return &p.TopicAliasMaximum
	case PropTopicAlias:
		return &p.TopicAlias
	}
	return nil
}

func (p *Properties) u32Field(id byte) *uint32 {
	switch id {
	case PropMessageExpiry:
		return &p.MessageExpiry
	case PropSessionExpiry:
		return &p.SessionExpiry
	case PropWillDelay:
		return &p.WillDelay
	case PropMaximumPacketSize:
		return &p.MaximumPacketSize
	}
	return nil
}

// appendProps appends the property length and the properties of p allowed
// in t, in identifier order. size is p.Size(t).
func (p *Properties) appendProps(dst []byte, t Type, size int) []byte {
	dst = AppendVarInt(dst, size)
	if size == 0 {
		return dst
	}
	m := p.mask() & allowedByType[t&0xf]
	for ; m != 0; m &= m - 1 {
		id := bits.TrailingZeros64(m)
		bid := byte(id)
		switch propInfo[id].kind {
		case kindByte:
			dst = append(dst, bid, *p.byteField(bid))
		case kindU16:
			v := *p.u16Field(bid)
			dst = append(dst, bid, byte(v>>8), byte(v))
		case kindU32:
			v := *p.u32Field(bid)
			dst = append(dst, bid, byte(v>>24), byte(v>>16), byte(v>>8), byte(v))
		case kindString, kindBinary:
			dst = append(dst, bid)
			dst = appendBytes(dst, *p.bytesField(bid))
		case kindVarInt:
			for _, s := range p.SubscriptionIDs {
				dst = append(dst, bid)
				dst = AppendVarInt(dst, int(s))
			}
		case kindPair:
			for _, u := range p.User {
				dst = append(dst, bid)
				dst = appendBytes(dst, u.Key)
				dst = appendBytes(dst, u.Value)
			}
		}
	}
	return dst
}

// validate checks p before encoding it in packet type t for version v.
func (p *Properties) validate(t Type, v Version) error {
	m := p.mask()
	if m == 0 {
		return nil
	}
	if v != V5 {
		return protocolErr("properties in " + placeName(t) + " need MQTT 5.0, connection is protocol level " + itoa(int(v)))
	}
	if bad := m &^ allowedByType[t&0xf]; bad != 0 {
		id := bits.TrailingZeros64(bad)
		return malformed("(MQTT 5.0 2.2.2.2) property " + hex2(byte(id)) + " is not allowed in " + placeName(t))
	}
	for rest := m; rest != 0; rest &= rest - 1 {
		id := bits.TrailingZeros64(rest)
		switch propInfo[id].kind {
		case kindString:
			if err := checkString(*p.bytesField(byte(id)), "property"); err != nil {
				return malformed(err.(*Error).Rule + " (property " + hex2(byte(id)) + ")")
			}
		case kindBinary:
			if len(*p.bytesField(byte(id))) > 65535 {
				return malformed("(MQTT 5.0 1.5.6) property " + hex2(byte(id)) + " longer than 65535 bytes")
			}
		case kindPair:
			for _, u := range p.User {
				if err := checkString(u.Key, "user property name"); err != nil {
					return err
				}
				if err := checkString(u.Value, "user property value"); err != nil {
					return err
				}
			}
		}
	}
	return p.checkValues(t)
}

// checkValues enforces the value ranges of MQTT 5.0 section 3, shared by the
// decoder and the encoders.
func (p *Properties) checkValues(t Type) error {
	m := p.mask()
	for rest := m & booleanMask; rest != 0; rest &= rest - 1 {
		id := byte(bits.TrailingZeros64(rest))
		if v := *p.byteField(id); v > 1 {
			return protocolErr("property " + hex2(id) + " value " + itoa(int(v)) + " is not 0 or 1")
		}
	}
	if m&(1<<PropReceiveMaximum) != 0 && p.ReceiveMaximum == 0 {
		return protocolErr("(MQTT 5.0 3.1.2.11.3) receive maximum is 0")
	}
	if m&(1<<PropMaximumPacketSize) != 0 && p.MaximumPacketSize == 0 {
		return protocolErr("(MQTT 5.0 3.1.2.11.4) maximum packet size is 0")
	}
	if m&(1<<PropTopicAlias) != 0 && p.TopicAlias == 0 {
		return protocolErr("[MQTT-3.3.2-8] topic alias is 0")
	}
	for _, s := range p.SubscriptionIDs {
		if s == 0 || s > maxSubscriptionID {
			return protocolErr("(MQTT 5.0 3.8.2.1.2) subscription identifier " + itoa(int(s)) + " is not in 1..268435455")
		}
	}
	if t == SUBSCRIBE && len(p.SubscriptionIDs) > 1 {
		return protocolErr("(MQTT 5.0 3.8.2.1.2) SUBSCRIBE carries " + itoa(len(p.SubscriptionIDs)) + " subscription identifiers, at most 1 allowed")
	}
	if p.AuthData != nil && p.AuthMethod == nil {
		return protocolErr("(MQTT 5.0 3.1.2.11.10) authentication data without authentication method")
	}
	if p.ResponseTopic != nil {
		if err := ValidTopicName(p.ResponseTopic); err != nil {
			return protocolErr("[MQTT-3.3.2-14] response topic: " + err.(*Error).Rule)
		}
	}
	return nil
}

// decodeProps reads a property block (length and properties) for packet type
// t into p, which the caller has reset.
func decodeProps(r *reader, t Type, p *Properties) error {
	size, n, err := decodeVarInt(r.b[r.i:])
	if err != nil {
		return malformed("(MQTT 5.0 2.2.2.1) property length in " + placeName(t) + ": " + err.(*Error).Rule)
	}
	if n == 0 {
		return malformed("(MQTT 5.0 2.2.2.1) property length in " + placeName(t) + " overruns the packet")
	}
	r.i += n
	if size > len(r.b)-r.i {
		return malformed("(MQTT 5.0 2.2.2.1) property length " + itoa(size) + " in " + placeName(t) + " overruns the packet")
	}
	pr := reader{b: r.b[:r.i+size], i: r.i}
	r.i += size
	var seen uint64
	for pr.i < len(pr.b) {
		id := pr.b[pr.i]
		pr.i++
		if id >= 64 || propInfo[id].kind == kindNone {
			return malformed("(MQTT 5.0 2.2.2.2) unknown property identifier " + hex2(id) + " in " + placeName(t))
		}
		if propInfo[id].allowed&(1<<t) == 0 {
			return malformed("(MQTT 5.0 2.2.2.2) property " + hex2(id) + " is not allowed in " + placeName(t))
		}
		bit := uint64(1) << id
		if seen&bit != 0 && id != PropUser && !(id == PropSubscriptionID && t == PUBLISH) {
			return protocolErr("(MQTT 5.0 2.2.2.2) property " + hex2(id) + " appears more than once in " + placeName(t))
		}
		seen |= bit
		const what = "property value"
		switch propInfo[id].kind {
		case kindByte:
			v, err := pr.byte1(what)
			if err != nil {
				return err
			}
			*p.byteField(id) = v
			p.Present |= bit
		case kindU16:
			v, err := pr.uint16(what)
			if err != nil {
				return err
			}
			*p.u16Field(id) = v
			p.Present |= bit
		case kindU32:
			v, err := pr.uint32(what)
			if err != nil {
				return err
			}
			*p.u32Field(id) = v
			p.Present |= bit
		case kindVarInt:
			v, n, err := decodeVarInt(pr.b[pr.i:])
			if err != nil {
				return err
			}
			if n == 0 {
				return malformed("(MQTT 5.0 2.2.2.2) subscription identifier overruns the property block")
			}
			pr.i += n
			p.SubscriptionIDs = append(p.SubscriptionIDs, uint32(v))
		case kindString:
			s, err := pr.str(what)
			if err != nil {
				return err
			}
			*p.bytesField(id) = s
		case kindBinary:
			s, err := pr.bin(what)
			if err != nil {
				return err
			}
			*p.bytesField(id) = s
		case kindPair:
			k, err := pr.str("user property name")
			if err != nil {
				return err
			}
			v, err := pr.str("user property value")
			if err != nil {
				return err
			}
			p.User = append(p.User, UserProperty{Key: k, Value: v})
		}
	}
	return p.checkValues(t)
}

func checkString(s []byte, what string) error {
	if len(s) > 65535 {
		return malformed("(MQTT 5.0 1.5.4) " + what + " of " + itoa(len(s)) + " bytes is longer than 65535")
	}
	if err := ValidUTF8(s); err != nil {
		return malformed(what + ": " + err.(*Error).Rule)
	}
	return nil
}

func appendBytes(dst, s []byte) []byte {
	dst = append(dst, byte(len(s)>>8), byte(len(s)))
	return append(dst, s...)
}
