package broker

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"time"

	"gatewayd/broker/auth"
	"gatewayd/broker/packet"
)

// aclFile is the Authorizer of acl_file: read access covers receiving and
// subscribing, write access publishing. With no file loaded (Reload
// removed it) everything is allowed.
type aclFile struct{ s *Server }

func (a aclFile) CanPublish(ci *ConnectInfo, topic string) bool {
	acl := a.s.acl.Load()
	return acl == nil || acl.Allowed(ci.Username, ci.ClientID, topic, auth.Write)
}

func (a aclFile) CanSubscribe(ci *ConnectInfo, filter string) bool {
	acl := a.s.acl.Load()
	return acl == nil || acl.CanSubscribe(ci.Username, ci.ClientID, filter)
}

func (a aclFile) CanRead(ci *ConnectInfo, topic string) bool {
	acl := a.s.acl.Load()
	return acl == nil || acl.Allowed(ci.Username, ci.ClientID, topic, auth.Read)
}

// authenticate is the built-in Authenticator, used when Options.Auth is nil:
//
//   - a listener with tls.username_from takes the user name from the
//     client's verified certificate; such a client needs no password, but
//     one it sends must be right;
//   - a client without a user name is anonymous: allowed where the listener
//     allows it, otherwise refused as not authorised (v5 0x87, 3.1.1 0x05);
//   - a client with a user name must give its password from password_file
//     (wrong: v5 0x86, 3.1.1 0x04). Without a password file a user name
//     proves nothing, so it is accepted only where anonymous clients are.
//
// Failed logins are logged with the client's address and counted; after a
// few from one address, each answer to it is delayed (auth_throttle).
func (s *Server) authenticate(c *conn, ci *ConnectInfo) packet.ReasonCode {
	l := c.l
	if id := certIdentity(l, ci.TLS); id != "" {
		ci.Username = id
		if !ci.PasswordSet {
			return packet.Success
		}
		return s.checkPassword(c, ci)
	}
	anonymous := l.settings().anonymous
	if ci.Username == "" {
		if anonymous {
			return packet.Success
		}
		s.loginFailed(c, ci, "anonymous clients are not allowed on this listener")
		return packet.NotAuthorized
	}
	if s.passwords.Load() == nil {
		if anonymous {
			return packet.Success
		}
		s.loginFailed(c, ci, "no password_file to check the user name against")
		return packet.NotAuthorized
	}
	return s.checkPassword(c, ci)
}

// checkPassword checks ci's password in password_file, throttled per source
// address. No lock is held while it waits or hashes.
func (s *Server) checkPassword(c *conn, ci *ConnectInfo) packet.ReasonCode {
	pw := s.passwords.Load()
	if pw == nil {
		s.loginFailed(c, ci, "no password_file")
		return packet.BadUserNameOrPassword
	}
	if d := s.throttle.Delay(ci.Remote); d > 0 && !s.pause(d) {
		return packet.ServerShuttingDown
	}
	ctx, cancel := context.WithTimeout(s.ctx, s.cfg.ConnectTimeout)
	ok, err := pw.CheckContext(ctx, ci.Username, ci.Password)
	cancel()
	if err != nil {
		// No free slot for a hash before the connect timeout, or shutdown.
		s.log.Warn("broker: password check not done", "remote", c.remote(), "user", ci.Username, "err", err)
		return packet.ServerBusy
	}
	if !ok {
		s.loginFailed(c, ci, "bad user name or password")
		if d := s.throttle.Fail(ci.Remote); d > 0 && !s.pause(d) {
			return packet.ServerShuttingDown
		}
		return packet.BadUserNameOrPassword
	}
	s.throttle.Success(ci.Remote)
	return packet.Success
}

func (s *Server) loginFailed(c *conn, ci *ConnectInfo, why string) {
	s.stats.authFailures.Add(1)
	s.log.Warn("broker: login failed", "remote", c.remote(), "listener", c.l.name, "client", ci.ClientID,
		"user", ci.Username, "why", why)
}

// pause waits d; false means the broker is shutting down.
func (s *Server) pause(d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-s.stop:
		return false
	}
}

// certIdentity is the user name a listener with tls.username_from takes
// from the client's verified certificate, or "".
func certIdentity(l *listener, st *tls.ConnectionState) string {
	files := l.tlsFiles.Load()
	if files == nil || st == nil || len(st.VerifiedChains) == 0 || len(st.PeerCertificates) == 0 {
		return ""
	}
	cert := st.PeerCertificates[0]
	switch files.UsernameFrom {
	case "cn":
		return cert.Subject.CommonName
	case "san":
		if len(cert.DNSNames) > 0 {
			return cert.DNSNames[0]
		}
		if len(cert.EmailAddresses) > 0 {
			return cert.EmailAddresses[0]
		}
	}
	return ""
}

// Reload applies cfg to the running broker: the password file, the ACL
// file and the listeners. Every file is read, and every new socket bound,
// before anything is swapped, so an error (a file that cannot be read, an
// address that cannot be bound) leaves the broker as it was.
//
// Listeners are matched by name, or by type and address when they have no
// name. A listener whose address, type, path or TLS (on or off) changed is
// closed and opened again; one that is no longer configured is closed; a
// new one is opened. Closing a listener disconnects the clients that came
// through it as shutdown does (v5 DISCONNECT 0x8B), with their wills and
// sessions handled as for any connection that ends without the client's
// DISCONNECT. A new listener that takes the port of one being closed is
// bound once that one is closed; the others are bound while every running
// listener still accepts.
//
// A listener whose address, type, path and TLS did not change keeps its
// socket and its clients; these settings of it change in place, for the
// connections and logins that follow: the tls section (certificate, key,
// client CAs, require_client_cert, username_from), allow_anonymous,
// max_connections, max_connections_per_second_per_address and origins.
// A new password file applies to new logins, a new ACL to every check from
// now on, connected clients' included. The broker-wide settings outside
// password_file, acl_file and listeners are not changed by Reload; an
// acl_file where the broker started without one needs a restart.
func (s *Server) Reload(cfg Config) error {
	if err := cfg.Validate(); err != nil {
		return fmt.Errorf("broker: reload: %w", err)
	}
	s.reloadMu.Lock()
	defer s.reloadMu.Unlock()
	var pw *auth.PasswordFile
	if cfg.PasswordFile != "" {
		var err error
		if pw, err = auth.LoadPasswordFile(cfg.PasswordFile); err != nil {
			return fmt.Errorf("broker: reload: password_file: %w", err)
		}
	}
	var acl *auth.ACL
	// With an embedded Authorizer, acl_file is not used.
	if cfg.ACLFile != "" && s.opts.ACL == nil {
		if _, ok := s.authz.(aclFile); !ok {
			return errors.New("broker: reload: acl_file cannot be added to a running broker; restart it")
		}
		var err error
		if acl, err = auth.LoadACLFile(cfg.ACLFile); err != nil {
			return fmt.Errorf("broker: reload: acl_file: %w", err)
		}
	}
	err := s.reloadListeners(&cfg, func() {
		s.passwords.Store(pw)
		s.acl.Store(acl)
	})
	if err != nil {
		return err
	}
	s.log.Info("broker: reloaded", "password_file", cfg.PasswordFile, "acl_file", cfg.ACLFile, "listeners", len(s.lns))
	return nil
}

// ReloadCertificates re-reads every TLS listener's certificate, key and
// client CAs from the files they were last read from. Connected clients keep
// their sessions; new handshakes get the new certificate. On error nothing
// changes.
func (s *Server) ReloadCertificates() error {
	s.reloadMu.Lock()
	defer s.reloadMu.Unlock()
	type update struct {
		l     *listener
		files *TLSConfig
		tc    *tls.Config
	}
	var ups []update
	for _, l := range s.lns {
		files := l.tlsFiles.Load()
		if files == nil {
			continue
		}
		tc, err := loadTLS(files, l.isWS())
		if err != nil {
			return fmt.Errorf("broker: reload: listener %s (%s.tls): %w", l.name, l.settings().key, err)
		}
		ups = append(ups, update{l, files, tc})
	}
	for _, u := range ups {
		u.l.tlsFiles.Store(u.files)
		u.l.tlsCfg.Store(u.tc)
	}
	s.log.Info("broker: certificates reloaded", "tls_listeners", len(ups))
	return nil
}
