// Package shadowtest is the shadow protocol's conformance corpus and the one
// runner that plays it against every implementation: the engine in process
// (EngineDoor), shadowsvc over MQTT on a real broker and the daemon's
// embedded service (package mqttdoor), and any later door (an HTTP API)
// that implements Door.
//
// The corpus is data, in corpus/*.json: each entry is a named sequence of
// requests with the exact responses AWS IoT Device Shadow gives, and names
// the AWS documentation page or AWS test it comes from.
package shadowtest

import (
	"bytes"
	"embed"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"path"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"github.com/shadowgate/shadowgate/agent/shadow"
)

//go:embed corpus/*.json
var corpusFS embed.FS

// Entry is one exchange of the corpus, run on a thing of its own.
type Entry struct {
	Name string `json:"name"`
	// Source names the AWS documentation pages, AWS tests or recorded AWS
	// answers the entry comes from.
	Source []string `json:"source"`
	// Note says where the documentation is silent or ambiguous and what the
	// entry follows then.
	Note string `json:"note,omitempty"`
	// Thing, when set, is the thing name to use (limits on names); by
	// default the runner makes one per entry.
	Thing string `json:"thing,omitempty"`
	// Shadow is the named shadow, empty for the classic shadow.
	Shadow string `json:"shadow,omitempty"`
	Steps  []Step `json:"steps"`
	File   string `json:"-"` // corpus file, for messages
}

// Step is one request and every response it must cause.
type Step struct {
	Op shadow.Op `json:"op"`
	// The request payload is one of: Payload (a JSON value), PayloadText
	// (raw text: invalid JSON, the empty payload) or PayloadHex (bytes that
	// are not UTF-8). Strings "$repeat(s,n)" in Payload expand to s n times.
	Payload     json.RawMessage `json:"payload,omitempty"`
	PayloadText *string         `json:"payload_text,omitempty"`
	PayloadHex  string          `json:"payload_hex,omitempty"`
	// Expect maps a response topic suffix (accepted, rejected, delta,
	// documents) to its body. No other response may come. In bodies, every
	// numeric "timestamp" matches any number, "${thing}" and "${shadow}"
	// are the names used, "${any}" matches any value.
	Expect map[shadow.Suffix]json.RawMessage `json:"expect"`
}

// Entries returns the corpus, in file and entry order. The corpus is part
// of the binary; an unreadable entry is a programming error.
func Entries() []Entry {
	files, err := corpusFS.ReadDir("corpus")
	if err != nil {
		panic(err)
	}
	var out []Entry
	names := map[string]string{}
	for _, f := range files {
		p := path.Join("corpus", f.Name())
		b, err := corpusFS.ReadFile(p)
		if err != nil {
			panic(err)
		}
		var entries []Entry
		dec := json.NewDecoder(bytes.NewReader(b))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&entries); err != nil {
			panic(fmt.Sprintf("shadowtest: %s: %v", p, err))
		}
		for _, e := range entries {
			e.File = p
			if err := e.check(); err != nil {
				panic(fmt.Sprintf("shadowtest: %s: entry %q: %v", p, e.Name, err))
			}
			if other, dup := names[e.Name]; dup {
				panic(fmt.Sprintf("shadowtest: entry %q in %s and %s", e.Name, other, p))
			}
			names[e.Name] = p
			out = append(out, e)
		}
	}
	return out
}

func (e *Entry) check() error {
	if e.Name == "" || len(e.Source) == 0 || len(e.Steps) == 0 {
		return fmt.Errorf("name, source and steps are required")
	}
	for i, st := range e.Steps {
		if !slices.Contains([]shadow.Op{shadow.OpGet, shadow.OpUpdate, shadow.OpDelete}, st.Op) {
			return fmt.Errorf("step %d: op %q", i, st.Op)
		}
		n := 0
		for _, set := range []bool{st.Payload != nil, st.PayloadText != nil, st.PayloadHex != ""} {
			if set {
				n++
			}
		}
		if n > 1 {
			return fmt.Errorf("step %d: more than one payload form", i)
		}
		if _, err := st.Bytes(); err != nil {
			return fmt.Errorf("step %d: %w", i, err)
		}
		if st.Expect == nil {
			return fmt.Errorf("step %d: no expect (write {} for no response)", i)
		}
		for sfx, body := range st.Expect {
			switch {
			case sfx == shadow.SuffixAccepted || sfx == shadow.SuffixRejected:
			case (sfx == shadow.SuffixDelta || sfx == shadow.SuffixDocuments) && st.Op == shadow.OpUpdate:
			default:
				return fmt.Errorf("step %d: no %s/%s topic", i, st.Op, sfx)
			}
			if !json.Valid(body) {
				return fmt.Errorf("step %d: expected %s is not JSON", i, sfx)
			}
		}
	}
	return nil
}

// Bytes is the request payload to send.
func (s Step) Bytes() ([]byte, error) {
	switch {
	case s.PayloadText != nil:
		return []byte(*s.PayloadText), nil
	case s.PayloadHex != "":
		return hex.DecodeString(s.PayloadHex)
	case s.Payload == nil:
		return nil, nil
	}
	v, err := decode(s.Payload)
	if err != nil {
		return nil, err
	}
	return encode(expand(v))
}

var repeatRE = regexp.MustCompile(`^\$repeat\((.*),([0-9]+)\)$`)

// expand replaces "$repeat(s,n)" strings, keys included.
func expand(v any) any {
	switch v := v.(type) {
	case string:
		if m := repeatRE.FindStringSubmatch(v); m != nil {
			n, _ := strconv.Atoi(m[2])
			return strings.Repeat(m[1], n)
		}
		return v
	case map[string]any:
		out := make(map[string]any, len(v))
		for k, x := range v {
			out[expand(k).(string)] = expand(x)
		}
		return out
	case []any:
		out := make([]any, len(v))
		for i, x := range v {
			out[i] = expand(x)
		}
		return out
	}
	return v
}

func decode(b []byte) (any, error) {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, err
	}
	return v, nil
}

// encode writes JSON without HTML escaping, as a client would send it.
func encode(v any) ([]byte, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	return bytes.TrimRight(buf.Bytes(), "\n"), nil
}
