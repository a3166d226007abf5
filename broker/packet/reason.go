package packet

// ReasonCode is an MQTT 5.0 reason code. In 3.1/3.1.1 the same type carries
// CONNACK return codes and SUBACK granted QoS / 0x80 failure.
type ReasonCode byte

// MQTT 5.0 reason codes (section 2.4).
const (
	Success                             ReasonCode = 0x00 // also Normal disconnection, Granted QoS 0
	GrantedQoS1                         ReasonCode = 0x01
	GrantedQoS2                         ReasonCode = 0x02
	DisconnectWithWill                  ReasonCode = 0x04
	NoMatchingSubscribers               ReasonCode = 0x10
	NoSubscriptionExisted               ReasonCode = 0x11
	ContinueAuthentication              ReasonCode = 0x18
	ReAuthenticate                      ReasonCode = 0x19
	UnspecifiedError                    ReasonCode = 0x80
	MalformedPacket                     ReasonCode = 0x81
	ProtocolError                       ReasonCode = 0x82
	ImplementationSpecificError         ReasonCode = 0x83
	UnsupportedProtocolVersion          ReasonCode = 0x84
	ClientIdentifierNotValid            ReasonCode = 0x85
	BadUserNameOrPassword               ReasonCode = 0x86
	NotAuthorized                       ReasonCode = 0x87
	ServerUnavailable                   ReasonCode = 0x88
	ServerBusy                          ReasonCode = 0x89
	Banned                              ReasonCode = 0x8A
	ServerShuttingDown                  ReasonCode = 0x8B
	BadAuthenticationMethod             ReasonCode = 0x8C
	KeepAliveTimeout                    ReasonCode = 0x8D
	SessionTakenOver                    ReasonCode = 0x8E
	TopicFilterInvalid                  ReasonCode = 0x8F
	TopicNameInvalid                    ReasonCode = 0x90
	PacketIdentifierInUse               ReasonCode = 0x91
	PacketIdentifierNotFound            ReasonCode = 0x92
	ReceiveMaximumExceeded              ReasonCode = 0x93
	TopicAliasInvalid                   ReasonCode = 0x94
	PacketTooLarge                      ReasonCode = 0x95
	MessageRateTooHigh                  ReasonCode = 0x96
	QuotaExceeded                       ReasonCode = 0x97
	AdministrativeAction                ReasonCode = 0x98
	PayloadFormatInvalid                ReasonCode = 0x99
	RetainNotSupported                  ReasonCode = 0x9A
	QoSNotSupported                     ReasonCode = 0x9B
	UseAnotherServer                    ReasonCode = 0x9C
	ServerMoved                         ReasonCode = 0x9D
	SharedSubscriptionsNotSupported     ReasonCode = 0x9E
	ConnectionRateExceeded              ReasonCode = 0x9F
	MaximumConnectTime                  ReasonCode = 0xA0
	SubscriptionIdentifiersNotSupported ReasonCode = 0xA1
	WildcardSubscriptionsNotSupported   ReasonCode = 0xA2
)

// GrantedQoS0 is the SUBACK reason code granting QoS 0 (the same value as Success).
const GrantedQoS0 = Success

// MQTT 3.1/3.1.1 CONNACK return codes.
const (
	V3Accepted                   ReasonCode = 0x00
	V3RefusedProtocolVersion     ReasonCode = 0x01
	V3RefusedIdentifierRejected  ReasonCode = 0x02
	V3RefusedServerUnavailable   ReasonCode = 0x03
	V3RefusedBadUsernamePassword ReasonCode = 0x04
	V3RefusedNotAuthorized       ReasonCode = 0x05
	V3SubackFailure              ReasonCode = 0x80
)

// ConnackCodeV3 maps a v5 CONNACK reason to the nearest 3.1/3.1.1 return code.
func ConnackCodeV3(r ReasonCode) ReasonCode {
	switch r {
	case Success:
		return V3Accepted
	case UnsupportedProtocolVersion:
		return V3RefusedProtocolVersion
	case ClientIdentifierNotValid:
		return V3RefusedIdentifierRejected
	case BadUserNameOrPassword:
		return V3RefusedBadUsernamePassword
	case NotAuthorized, Banned, BadAuthenticationMethod:
		return V3RefusedNotAuthorized
	default:
		return V3RefusedServerUnavailable
	}
}

// IsError reports whether r is a failure (0x80 or above).
func (r ReasonCode) IsError() bool { return r >= 0x80 }
