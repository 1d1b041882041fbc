package broker

import (
	"context"
	"log/slog"
)

// levelFloor passes only records at or above min to h.
type levelFloor struct {
	h   slog.Handler
	min slog.Level
}

func (l levelFloor) Enabled(ctx context.Context, lv slog.Level) bool {
	return lv >= l.min && l.h.Enabled(ctx, lv)
}
func (l levelFloor) Handle(ctx context.Context, r slog.Record) error { return l.h.Handle(ctx, r) }
func (l levelFloor) WithAttrs(a []slog.Attr) slog.Handler {
	return levelFloor{l.h.WithAttrs(a), l.min}
}
func (l levelFloor) WithGroup(g string) slog.Handler { return levelFloor{l.h.WithGroup(g), l.min} }
