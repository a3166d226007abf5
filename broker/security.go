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
	if ci.Username == "" {
		if l.anonymous {
			return packet.Success
		}
		s.loginFailed(c, ci, "anonymous clients are not allowed on this listener")
		return packet.NotAuthorized
	}
	if s.passwords.Load() == nil {
		if l.anonymous {
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

// Reload applies what can change without a restart, from cfg: the password
// file, the ACL file, and each TLS listener's tls section (certificate, key,
// client CAs, require_client_cert, username_from), matched by position in
// cfg.Listeners; a listener cannot gain or lose TLS without a restart, and
// one that cfg gives no tls section keeps its own. Every file is read before anything is swapped, so an
// error leaves the broker as it was. Connected clients stay connected: a
// new certificate or CA list applies to new handshakes, a new password file
// to new logins, a new ACL to every check from now on, connected clients'
// included. Listener addresses, types, limits and the other settings are
// not changed by Reload; an acl_file where the broker started without one
// needs a restart.
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
	files := make([]*TLSConfig, len(s.lns))
	for i, l := range s.lns {
		if l.tlsFiles.Load() == nil {
			continue
		}
		files[i] = l.tlsFiles.Load()
		if len(cfg.Listeners) > 0 && i < len(cfg.Listeners) && cfg.Listeners[i].TLS != nil {
			f := *cfg.Listeners[i].TLS
			files[i] = &f
		}
	}
	tcs, err := s.loadCertificates(files)
	if err != nil {
		return err
	}
	s.passwords.Store(pw)
	s.acl.Store(acl)
	s.swapCertificates(files, tcs)
	s.log.Info("broker: reloaded", "password_file", cfg.PasswordFile, "acl_file", cfg.ACLFile, "tls_listeners", countTLS(tcs))
	return nil
}

// ReloadCertificates re-reads every TLS listener's certificate, key and
// client CAs from the files they were last read from. Connected clients keep
// their sessions; new handshakes get the new certificate. On error nothing
// changes.
func (s *Server) ReloadCertificates() error {
	s.reloadMu.Lock()
	defer s.reloadMu.Unlock()
	files := make([]*TLSConfig, len(s.lns))
	for i, l := range s.lns {
		files[i] = l.tlsFiles.Load()
	}
	tcs, err := s.loadCertificates(files)
	if err != nil {
		return err
	}
	s.swapCertificates(files, tcs)
	s.log.Info("broker: certificates reloaded", "tls_listeners", countTLS(tcs))
	return nil
}

func (s *Server) loadCertificates(files []*TLSConfig) ([]*tls.Config, error) {
	tcs := make([]*tls.Config, len(files))
	for i, f := range files {
		if f == nil {
			continue
		}
		l := s.lns[i]
		tc, err := loadTLS(f, l.isWS())
		if err != nil {
			return nil, fmt.Errorf("broker: reload: listener %s (%s.tls): %w", l.name, l.key, err)
		}
		tcs[i] = tc
	}
	return tcs, nil
}

func (s *Server) swapCertificates(files []*TLSConfig, tcs []*tls.Config) {
	for i, tc := range tcs {
		if tc != nil {
			s.lns[i].tlsFiles.Store(files[i])
			s.lns[i].tlsCfg.Store(tc)
		}
	}
}

func countTLS(tcs []*tls.Config) int {
	n := 0
	for _, tc := range tcs {
		if tc != nil {
			n++
		}
	}
	return n
}
