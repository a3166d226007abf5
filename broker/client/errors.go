package client

import (
	"errors"
	"fmt"

	"gatewayd/broker/packet"
)

// Errors returned by the client.
var (
	// ErrNotConnected: the operation needs a live connection and there is none
	// (and the message could not be queued because AutoReconnect is off).
	ErrNotConnected = errors.New("mqtt client: not connected")
	// ErrConnectionLost: the connection went away before the operation
	// completed.
	ErrConnectionLost = errors.New("mqtt client: connection lost")
	// ErrClosed: Disconnect was called.
	ErrClosed = errors.New("mqtt client: disconnected by the client")
	// ErrAlreadyConnected: Connect was called on a running client.
	ErrAlreadyConnected = errors.New("mqtt client: already connected")
	// ErrPingTimeout: no PINGRESP came back in time; the connection was
	// declared dead.
	ErrPingTimeout = errors.New("mqtt client: no PINGRESP from the server, connection declared dead")
	// ErrQueueFull: Options.MaxPending messages are already waiting.
	ErrQueueFull = errors.New("mqtt client: too many messages waiting to be sent")
)

// ReasonError is a refusal by the server: a CONNACK, PUBACK, PUBREC, SUBACK or
// UNSUBACK with a failure reason code, or a DISCONNECT sent by the server.
// In MQTT 3.1.1 Reason holds the CONNACK return code or the SUBACK failure 0x80.
type ReasonError struct {
	Op           string // "connect", "publish", "subscribe", "unsubscribe", "server disconnect"
	Reason       packet.ReasonCode
	ReasonString string // v5 Reason String property, if the server sent one
	Topic        string // the topic or filter concerned, if any
}

func (e *ReasonError) Error() string {
	s := fmt.Sprintf("mqtt client: %s", e.Op)
	if e.Topic != "" {
		s += fmt.Sprintf(" %q", e.Topic)
	}
	s += fmt.Sprintf(": reason 0x%02x", byte(e.Reason))
	if n := reasonName(e.Reason); n != "" {
		s += " (" + n + ")"
	}
	if e.ReasonString != "" {
		s += ": " + e.ReasonString
	}
	return s
}

func reasonName(r packet.ReasonCode) string {
	switch r {
	case packet.Success:
		return "success"
	case packet.UnspecifiedError:
		return "unspecified error"
	case packet.MalformedPacket:
		return "malformed packet"
	case packet.ProtocolError:
		return "protocol error"
	case packet.ImplementationSpecificError:
		return "implementation specific error"
	case packet.UnsupportedProtocolVersion:
		return "unsupported protocol version"
	case packet.ClientIdentifierNotValid:
		return "client identifier not valid"
	case packet.BadUserNameOrPassword:
		return "bad user name or password"
	case packet.NotAuthorized:
		return "not authorized"
	case packet.ServerUnavailable:
		return "server unavailable"
	case packet.ServerBusy:
		return "server busy"
	case packet.Banned:
		return "banned"
	case packet.ServerShuttingDown:
		return "server shutting down"
	case packet.KeepAliveTimeout:
		return "keep alive timeout"
	case packet.SessionTakenOver:
		return "session taken over"
	case packet.TopicFilterInvalid:
		return "topic filter invalid"
	case packet.TopicNameInvalid:
		return "topic name invalid"
	case packet.PacketIdentifierInUse:
		return "packet identifier in use"
	case packet.ReceiveMaximumExceeded:
		return "receive maximum exceeded"
	case packet.TopicAliasInvalid:
		return "topic alias invalid"
	case packet.PacketTooLarge:
		return "packet too large"
	case packet.QuotaExceeded:
		return "quota exceeded"
	case packet.AdministrativeAction:
		return "administrative action"
	case packet.PayloadFormatInvalid:
		return "payload format invalid"
	case packet.RetainNotSupported:
		return "retain not supported"
	case packet.QoSNotSupported:
		return "QoS not supported"
	case packet.UseAnotherServer:
		return "use another server"
	case packet.ServerMoved:
		return "server moved"
	case packet.SharedSubscriptionsNotSupported:
		return "shared subscriptions not supported"
	case packet.ConnectionRateExceeded:
		return "connection rate exceeded"
	case packet.SubscriptionIdentifiersNotSupported:
		return "subscription identifiers not supported"
	case packet.WildcardSubscriptionsNotSupported:
		return "wildcard subscriptions not supported"
	}
	return ""
}

// v3ConnackError describes a 3.1.1 CONNACK return code.
func v3ConnackError(code packet.ReasonCode) error {
	names := map[packet.ReasonCode]string{
		packet.V3RefusedProtocolVersion:     "unacceptable protocol version",
		packet.V3RefusedIdentifierRejected:  "identifier rejected",
		packet.V3RefusedServerUnavailable:   "server unavailable",
		packet.V3RefusedBadUsernamePassword: "bad user name or password",
		packet.V3RefusedNotAuthorized:       "not authorized",
	}
	return &ReasonError{Op: "connect", Reason: code, ReasonString: names[code]}
}
