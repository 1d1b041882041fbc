package shadow

import (
	"errors"
	"fmt"
	"strings"
)

// DefaultRoot is the AWS topic root. Brokers that reserve $-topics use
// another, such as "things/"; nothing else changes with it.
const DefaultRoot = "$aws/things/"

// Op is a shadow operation.
type Op string

// Shadow operations.
const (
	OpGet    Op = "get"
	OpUpdate Op = "update"
	OpDelete Op = "delete"
)

// Suffix is the kind of message on an operation's topic. The empty suffix is
// the request itself.
type Suffix string

// Topic suffixes.
const (
	Request         Suffix = ""
	SuffixAccepted  Suffix = "accepted"
	SuffixRejected  Suffix = "rejected"
	SuffixDelta     Suffix = "delta"     // update only
	SuffixDocuments Suffix = "documents" // update only
)

// Topic names one shadow topic. Name is empty for the classic shadow.
type Topic struct {
	Thing  string
	Name   string
	Op     Op
	Suffix Suffix
}

// ErrNotShadowTopic is returned by ParseTopic for a topic outside the scheme.
var ErrNotShadowTopic = errors.New("not a shadow topic")

// Build returns the topic under root.
func (t Topic) Build(root string) string {
	var b strings.Builder
	b.WriteString(root)
	b.WriteString(t.Thing)
	b.WriteString("/shadow/")
	if t.Name != "" {
		b.WriteString("name/")
		b.WriteString(t.Name)
		b.WriteByte('/')
	}
	b.WriteString(string(t.Op))
	if t.Suffix != Request {
		b.WriteByte('/')
		b.WriteString(string(t.Suffix))
	}
	return b.String()
}

// With returns the topic with another suffix.
func (t Topic) With(s Suffix) Topic { t.Suffix = s; return t }

// Filter is the subscription filter for every shadow topic of every thing
// under root ("<root>+/shadow/#").
func Filter(root string) string { return root + "+/shadow/#" }

// ParseTopic reads a topic under root. It rejects unknown operations and
// suffixes, suffixes on the wrong operation, and invalid names.
func ParseTopic(root, topic string) (Topic, error) {
	rest, ok := strings.CutPrefix(topic, root)
	if !ok {
		return Topic{}, fmt.Errorf("%w: %q lacks root %q", ErrNotShadowTopic, topic, root)
	}
	parts := strings.Split(rest, "/")
	if len(parts) < 3 || parts[1] != "shadow" {
		return Topic{}, fmt.Errorf("%w: %q", ErrNotShadowTopic, topic)
	}
	t := Topic{Thing: parts[0]}
	parts = parts[2:]
	if parts[0] == "name" {
		if len(parts) < 3 {
			return Topic{}, fmt.Errorf("%w: %q", ErrNotShadowTopic, topic)
		}
		t.Name = parts[1]
		if err := ValidateShadowName(t.Name); err != nil {
			return Topic{}, err
		}
		parts = parts[2:]
	}
	if err := ValidateThingName(t.Thing); err != nil {
		return Topic{}, err
	}
	switch Op(parts[0]) {
	case OpGet, OpUpdate, OpDelete:
		t.Op = Op(parts[0])
	default:
		return Topic{}, fmt.Errorf("%w: unknown operation %q in %q", ErrNotShadowTopic, parts[0], topic)
	}
	switch len(parts) {
	case 1:
		return t, nil
	case 2:
		switch s := Suffix(parts[1]); s {
		case SuffixAccepted, SuffixRejected:
			t.Suffix = s
			return t, nil
		case SuffixDelta, SuffixDocuments:
			if t.Op == OpUpdate {
				t.Suffix = s
				return t, nil
			}
		}
	}
	return Topic{}, fmt.Errorf("%w: unknown suffix in %q", ErrNotShadowTopic, topic)
}

// ErrBadName is returned for a thing or shadow name AWS would not accept.
var ErrBadName = errors.New("invalid name")

// ValidateThingName checks a thing name: [a-zA-Z0-9:_-], 1 to 128 characters
// (AWS IoT data plane API, UpdateThingShadow, thingName).
func ValidateThingName(s string) error { return validateName("thing", s, MaxThingNameLen, "") }

// ValidateShadowName checks a named shadow's name: [$a-zA-Z0-9:_-], 1 to 64
// characters (UpdateThingShadow, shadowName).
func ValidateShadowName(s string) error { return validateName("shadow", s, MaxShadowNameLen, "$") }

func validateName(kind, s string, max int, extra string) error {
	if s == "" || len(s) > max {
		return fmt.Errorf("%w: %s name %q must be 1 to %d characters", ErrBadName, kind, s, max)
	}
	for _, r := range s {
		ok := r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == ':' || r == '_' || r == '-' || strings.ContainsRune(extra, r)
		if !ok {
			return fmt.Errorf("%w: %s name %q may hold only letters, digits, %s':', '_' and '-'", ErrBadName, kind, s, quoteExtra(extra))
		}
	}
	return nil
}

func quoteExtra(extra string) string {
	var b strings.Builder
	for _, r := range extra {
		b.WriteString("'" + string(r) + "', ")
	}
	return b.String()
}
