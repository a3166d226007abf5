// Package packaging holds how gatewayd is released: packaging/release builds
// the static binaries and, with nfpm (nfpm.yaml), the .deb packages; scripts/
// holds their maintainer scripts and gatewayd.yaml the packaged
// configuration. It has no code. Its tests build the amd64 .deb once, look
// inside it, and (as root) install, reinstall, upgrade, remove and purge it
// with the real dpkg into throw-away root directories (dpkg --root
// --force-script-chrootless, the scripts honouring DPKG_ROOT), behind
// overlays that keep the host unchanged.
package packaging
