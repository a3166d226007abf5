package client

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"net/http"
	"net/url"

	"github.com/coder/websocket"
)

// dial opens the transport named by the URL, or calls Options.Dialer.
func (c *Client) dial(ctx context.Context) (net.Conn, error) {
	if c.opts.Dialer != nil {
		nc, err := c.opts.Dialer(ctx)
		if err != nil {
			return nil, fmt.Errorf("mqtt client: dial: %w", err)
		}
		return nc, nil
	}
	u := c.url
	var nc net.Conn
	var err error
	switch u.Scheme {
	case "mqtt", "tcp":
		var d net.Dialer
		nc, err = d.DialContext(ctx, "tcp", hostPort(u, "1883"))
	case "mqtts", "ssl", "tls":
		d := tls.Dialer{Config: c.tlsConfig(u)}
		nc, err = d.DialContext(ctx, "tcp", hostPort(u, "8883"))
	case "ws", "wss":
		nc, err = c.dialWebSocket(ctx, u)
	}
	if err != nil {
		return nil, fmt.Errorf("mqtt client: dial %s: %w", u.Redacted(), err)
	}
	return nc, nil
}

func hostPort(u *url.URL, port string) string {
	if p := u.Port(); p != "" {
		port = p
	}
	return net.JoinHostPort(u.Hostname(), port)
}

// tlsConfig is Options.TLS with ServerName defaulting to the URL's host.
func (c *Client) tlsConfig(u *url.URL) *tls.Config {
	cfg := c.opts.TLS
	if cfg == nil {
		cfg = &tls.Config{MinVersion: tls.VersionTLS12}
	}
	if cfg.ServerName == "" {
		cfg = cfg.Clone()
		cfg.ServerName = u.Hostname()
	}
	return cfg
}

// dialWebSocket opens an MQTT-over-WebSocket connection: subprotocol "mqtt",
// binary frames (MQTT 5.0 section 6).
func (c *Client) dialWebSocket(ctx context.Context, u *url.URL) (net.Conn, error) {
	target := *u
	if target.Host == target.Hostname() {
		port := "80"
		if u.Scheme == "wss" {
			port = "443"
		}
		target.Host = hostPort(u, port)
	}
	if target.Path == "" {
		target.Path = "/"
	}
	tr := &http.Transport{
		Proxy:             http.ProxyFromEnvironment,
		ForceAttemptHTTP2: false,
		DisableKeepAlives: true,
	}
	if u.Scheme == "wss" {
		tr.TLSClientConfig = c.tlsConfig(u)
	}
	ws, _, err := websocket.Dial(ctx, target.String(), &websocket.DialOptions{
		HTTPClient:   &http.Client{Transport: tr},
		Subprotocols: []string{"mqtt"},
	})
	if err != nil {
		return nil, err
	}
	if ws.Subprotocol() != "mqtt" {
		ws.Close(websocket.StatusProtocolError, "mqtt subprotocol required")
		return nil, fmt.Errorf("server did not agree to the mqtt subprotocol (got %q)", ws.Subprotocol())
	}
	ws.SetReadLimit(-1)
	// The conn lives until it is closed, not as long as ctx (which only
	// bounds the connection attempt).
	return websocket.NetConn(context.Background(), ws, websocket.MessageBinary), nil
}
