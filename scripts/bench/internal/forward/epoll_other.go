//go:build !linux

package forward

import (
	"errors"
	"net"
)

// Epoll is the epoll forwarder, which exists on Linux only.
type Epoll struct{}

// EpollStats are an Epoll's counters.
type EpollStats struct{}

// Stats returns the counters.
func (e *Epoll) Stats() EpollStats { return EpollStats{} }

func (s EpollStats) String() string { return "" }

var errNoEpoll = errors.New("forward: the epoll forwarder needs Linux")

// Serve fails: there is no epoll here.
func (e *Epoll) Serve(ln net.Listener) error { return errNoEpoll }

// ServeEpoll fails: there is no epoll here.
func ServeEpoll(ln net.Listener) error { return errNoEpoll }
