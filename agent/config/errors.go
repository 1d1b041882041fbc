package config

import (
	"errors"
	"fmt"
	"sort"
	"strings"
)

// ErrInvalid is wrapped by every configuration error, so callers can tell a
// bad file from a failure to read one.
var ErrInvalid = errors.New("invalid configuration")

// Problem is one thing wrong in a configuration file, with where it is.
type Problem struct {
	File string
	Line int    // 0 when the problem has no single place (e.g. a missing key)
	Path string // key path, e.g. actuators.porch_light.pin
	Msg  string
}

func (p *Problem) Error() string {
	var b strings.Builder
	b.WriteString(p.File)
	if p.Line > 0 {
		fmt.Fprintf(&b, ":%d", p.Line)
	}
	b.WriteString(": ")
	if p.Path != "" {
		b.WriteString(p.Path)
		b.WriteString(": ")
	}
	b.WriteString(p.Msg)
	return b.String()
}

// Problems is every problem found in one file, in line order. It is the
// error Load returns for an invalid file.
type Problems []*Problem

func (ps Problems) Error() string {
	lines := make([]string, len(ps))
	for i, p := range ps {
		lines[i] = p.Error()
	}
	return strings.Join(lines, "\n")
}

// Unwrap lets errors.Is(err, ErrInvalid) hold.
func (ps Problems) Unwrap() error { return ErrInvalid }

func (ps Problems) sorted() Problems {
	sort.SliceStable(ps, func(i, j int) bool {
		if ps[i].Line != ps[j].Line {
			return ps[i].Line < ps[j].Line
		}
		return ps[i].Path < ps[j].Path
	})
	return ps
}

// Reporter collects problems for one file. Drivers get one to report
// problems in their options with the right file, line and path.
type Reporter struct {
	file  string
	lines map[string]int
	list  Problems
}

// Addf records a problem at line for the key path.
func (r *Reporter) Addf(line int, path, format string, args ...any) {
	r.list = append(r.list, &Problem{File: r.file, Line: line, Path: path, Msg: fmt.Sprintf(format, args...)})
}

// At records a problem for a key path, placed at the line where the path (or
// the nearest key above it that exists) was written.
func (r *Reporter) At(path, format string, args ...any) {
	for _, p := range r.list {
		if p.Path == path {
			return
		}
	}
	r.Addf(r.Line(path), path, format, args...)
}

// Line returns the line a key path was written on, or that of its nearest
// parent in the file, or 0.
func (r *Reporter) Line(path string) int {
	for p := path; p != ""; {
		if l, ok := r.lines[p]; ok {
			return l
		}
		i := strings.LastIndexByte(p, '.')
		if i < 0 {
			break
		}
		p = p[:i]
	}
	return 0
}

// Err returns the collected problems as an error, or nil.
func (r *Reporter) Err() error {
	if len(r.list) == 0 {
		return nil
	}
	return r.list.sorted()
}

// suggest returns the known key closest to an unknown one, or "".
func suggest(key string, known []string) string {
	best, bestD := "", 3
	for _, k := range known {
		if d := editDistance(key, k); d < bestD {
			best, bestD = k, d
		}
	}
	return best
}

func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}
