package main

import (
	"context"
	"io"
	"log/slog"
	"os"
	"strings"
	"sync"
)

func parseLevel(s string) (slog.Level, bool) {
	switch strings.ToLower(s) {
	case "debug":
		return slog.LevelDebug, true
	case "info":
		return slog.LevelInfo, true
	case "warn":
		return slog.LevelWarn, true
	case "error":
		return slog.LevelError, true
	}
	return 0, false
}

// newLogger returns the logger for c writing to w, at the level held by level
// (set from c.Level here; a reload may change it later). When w is the journal's
// stream (systemd sets JOURNAL_STREAM to the device and inode of the stream it
// connected), records carry no time (the journal adds its own) and start with
// a syslog priority prefix (<3> error, <4> warn, <6> info, <7> debug), which
// journald strips and keeps as the entry's level.
func newLogger(c LogConfig, level *slog.LevelVar, w *os.File) *slog.Logger {
	l, _ := parseLevel(c.Level)
	level.Set(l)
	journal := isJournal(os.Getenv("JOURNAL_STREAM"), w)
	opts := &slog.HandlerOptions{Level: level}
	if journal {
		opts.ReplaceAttr = func(groups []string, a slog.Attr) slog.Attr {
			if len(groups) == 0 && a.Key == slog.TimeKey {
				return slog.Attr{}
			}
			return a
		}
	}
	var out io.Writer = w
	var jw *priorityWriter
	if journal {
		jw = &priorityWriter{w: w}
		out = jw
	}
	var h slog.Handler
	if c.Format == "json" {
		h = slog.NewJSONHandler(out, opts)
	} else {
		h = slog.NewTextHandler(out, opts)
	}
	if journal {
		h = journalHandler{Handler: h, w: jw}
	}
	return slog.New(h)
}

// priority is the syslog priority journald reads from a "<N>" line prefix.
func priority(l slog.Level) string {
	switch {
	case l >= slog.LevelError:
		return "<3>"
	case l >= slog.LevelWarn:
		return "<4>"
	case l >= slog.LevelInfo:
		return "<6>"
	default:
		return "<7>"
	}
}

// priorityWriter puts the priority of the record being written in front of
// the line. slog's handlers write each record with one Write call, made while
// journalHandler holds mu.
type priorityWriter struct {
	mu   sync.Mutex
	w    io.Writer
	prio string
	buf  []byte
}

func (p *priorityWriter) Write(b []byte) (int, error) {
	p.buf = append(append(p.buf[:0], p.prio...), b...)
	if _, err := p.w.Write(p.buf); err != nil {
		return 0, err
	}
	return len(b), nil
}

// journalHandler sets the priority for each record before the wrapped handler
// writes it.
type journalHandler struct {
	slog.Handler
	w *priorityWriter
}

func (h journalHandler) Handle(ctx context.Context, r slog.Record) error {
	h.w.mu.Lock()
	defer h.w.mu.Unlock()
	h.w.prio = priority(r.Level)
	return h.Handler.Handle(ctx, r)
}

func (h journalHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return journalHandler{Handler: h.Handler.WithAttrs(as), w: h.w}
}

func (h journalHandler) WithGroup(name string) slog.Handler {
	return journalHandler{Handler: h.Handler.WithGroup(name), w: h.w}
}
