package packet

import "strconv"

// Error is a decoding or encoding failure. Reason is the MQTT 5.0 reason code
// to send to the peer (in a CONNACK, DISCONNECT or acknowledgement); Rule names
// the broken rule, with its conformance statement number where the
// specification gives one, e.g. "[MQTT-3.3.2-2] topic name contains a wildcard".
type Error struct {
	Reason ReasonCode
	Rule   string
}

func (e *Error) Error() string {
	return "mqtt packet: " + e.Rule + " (reason 0x" + strconv.FormatUint(uint64(e.Reason), 16) + ")"
}

func malformed(rule string) error { return &Error{Reason: MalformedPacket, Rule: rule} }

func protocolErr(rule string) error { return &Error{Reason: ProtocolError, Rule: rule} }

func itoa(n int) string { return strconv.Itoa(n) }

func hex2(b byte) string {
	const digits = "0123456789abcdef"
	return "0x" + string([]byte{digits[b>>4], digits[b&0xf]})
}

// String returns the packet type's name as the specifications spell it.
func (t Type) String() string {
	if int(t) < len(typeNames) {
		return typeNames[t]
	}
	return "type " + itoa(int(t))
}

var typeNames = [...]string{
	"Reserved", "CONNECT", "CONNACK", "PUBLISH", "PUBACK", "PUBREC", "PUBREL", "PUBCOMP",
	"SUBSCRIBE", "SUBACK", "UNSUBSCRIBE", "UNSUBACK", "PINGREQ", "PINGRESP", "DISCONNECT", "AUTH",
}
