package broker

import (
	"context"
	"crypto/tls"
	"net"

	"gatewayd/broker/packet"
)

// ConnectInfo describes a client connection to an Authenticator and an
// Authorizer. It is filled from CONNECT and stays the same for the life of the
// connection, except Password, which is dropped once Authenticate returns.
type ConnectInfo struct {
	ClientID    string
	Username    string
	Password    []byte
	PasswordSet bool
	Remote      net.Addr
	Listener    string
	Version     packet.Version
	TLS         *tls.ConnectionState
}

// Authenticator decides whether a client may connect. It returns
// packet.Success, or the v5 reason to refuse with (a 3.1/3.1.1 client gets the
// nearest return code, see packet.ConnackCodeV3). It may set ci.Username, for
// example from a client certificate. It runs on the client's own connection
// goroutine, so a slow check delays only that client.
type Authenticator interface {
	Authenticate(ctx context.Context, ci *ConnectInfo) packet.ReasonCode
}

// Authorizer decides what a connected client may do. CanPublish is checked on
// every PUBLISH, CanSubscribe on every filter of SUBSCRIBE, and CanRead again on
// delivery, so a subscription to a wide filter does not leak topics the client
// may not read. Implementations must be fast and safe for concurrent use: they
// run on the publishing client's goroutine.
type Authorizer interface {
	CanPublish(ci *ConnectInfo, topic string) bool
	CanSubscribe(ci *ConnectInfo, filter string) bool
	CanRead(ci *ConnectInfo, topic string) bool
}
