// Package systemd holds gatewayd's systemd files: the service unit
// (gatewayd.service), its system user (gatewayd.sysusers) and its directories
// (gatewayd.tmpfiles). It has no code; its tests check the files with
// systemd's own tools.
package systemd
