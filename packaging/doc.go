// Package packaging holds how gatewayd is released: packaging/release builds
// the static binaries and, with nfpm (nfpm.yaml), the .deb packages; scripts/
// holds their maintainer scripts and gatewayd.yaml the packaged
// configuration. It has no code; its tests build a .deb and look inside.
package packaging
