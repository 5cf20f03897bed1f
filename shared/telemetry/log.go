// Package telemetry sets up what an operator watches: structured logs
// (log/slog, JSON by default).
package telemetry

import (
	"io"
	"log/slog"
)

// NewLogger returns a JSON (or, with format "text", a logfmt-style) logger
// at level, tagged with the program's name.
func NewLogger(w io.Writer, format string, level slog.Level, program string) *slog.Logger {
	opts := &slog.HandlerOptions{Level: level}
	var h slog.Handler
	if format == "text" {
		h = slog.NewTextHandler(w, opts)
	} else {
		h = slog.NewJSONHandler(w, opts)
	}
	return slog.New(h).With("program", program)
}
