package shadow

import (
	"encoding/json"
	"slices"
	"strconv"
)

// The service encodes three or four documents for every update (the
// stored one, accepted, documents, delta); encoding/json spends most of
// that on reflection over the maps' values. appendValue writes the values
// a document holds (what the decoder makes, with UseNumber, and the int64
// timestamps of metadata) directly, byte for byte as encoding/json does:
// map keys sorted, HTML characters escaped. Anything else goes to
// encoding/json. The message types encode through it (appendJSON).

// appender is a message that writes its own JSON.
type appender interface{ appendJSON(b []byte) []byte }

// appendValue appends v's JSON, as json.Marshal would write it.
func appendValue(b []byte, v any) []byte {
	switch v := v.(type) {
	case nil:
		return append(b, "null"...)
	case string:
		return appendString(b, v)
	case json.Number:
		// A number the decoder read; anything else (which encoding/json
		// refuses or rewrites) goes to encoding/json.
		if v == "" || !(v[0] == '-' || v[0] >= '0' && v[0] <= '9') || !json.Valid([]byte(v)) {
			return appendMarshal(b, v)
		}
		return append(b, v...)
	case bool:
		return strconv.AppendBool(b, v)
	case int64:
		return strconv.AppendInt(b, v, 10)
	case int:
		return strconv.AppendInt(b, int64(v), 10)
	case map[string]any:
		return appendObject(b, v)
	case []any:
		if v == nil {
			return append(b, "null"...)
		}
		b = append(b, '[')
		for i, e := range v {
			if i > 0 {
				b = append(b, ',')
			}
			b = appendValue(b, e)
		}
		return append(b, ']')
	case appender:
		return v.appendJSON(b)
	default:
		return appendMarshal(b, v)
	}
}

// appendObject appends a map with its keys sorted, as encoding/json does.
func appendObject(b []byte, m map[string]any) []byte {
	if m == nil {
		return append(b, "null"...)
	}
	var buf [16]string
	keys := buf[:0]
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	b = append(b, '{')
	for i, k := range keys {
		if i > 0 {
			b = append(b, ',')
		}
		b = appendString(b, k)
		b = append(b, ':')
		b = appendValue(b, m[k])
	}
	return append(b, '}')
}

// appendString appends s quoted; a string with anything but printable
// ASCII that needs no escaping is left to encoding/json.
func appendString(b []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c >= 0x7f || c == '"' || c == '\\' || c == '<' || c == '>' || c == '&' {
			return appendMarshal(b, s)
		}
	}
	b = append(b, '"')
	b = append(b, s...)
	return append(b, '"')
}

func appendMarshal(b []byte, v any) []byte {
	j, err := json.Marshal(v)
	if err != nil {
		// Every value here came out of encoding/json or this package;
		// failing to encode it again is a programming error.
		panic("shadow: encode: " + err.Error())
	}
	return append(b, j...)
}

// field appends `"name":` after a comma unless it is the first.
func field(b []byte, first bool, name string) []byte {
	if !first {
		b = append(b, ',')
	}
	b = append(b, '"')
	b = append(b, name...)
	return append(b, '"', ':')
}

func (s State) appendJSON(b []byte) []byte {
	b = append(b, '{')
	first := true
	if len(s.Desired) > 0 {
		b = appendObject(field(b, first, "desired"), s.Desired)
		first = false
	}
	if len(s.Reported) > 0 {
		b = appendObject(field(b, first, "reported"), s.Reported)
	}
	return append(b, '}')
}

func (s acceptedState) appendJSON(b []byte) []byte {
	b = append(b, '{')
	first := true
	if s.Desired != nil {
		b = appendValue(field(b, first, "desired"), s.Desired)
		first = false
	}
	if s.Reported != nil {
		b = appendValue(field(b, first, "reported"), s.Reported)
	}
	return append(b, '}')
}

func (null) appendJSON(b []byte) []byte { return append(b, "null"...) }

func appendToken(b []byte, token string) []byte {
	if token == "" {
		return b
	}
	return appendString(field(b, false, "clientToken"), token)
}

func (m UpdateAccepted) appendJSON(b []byte) []byte {
	b = appendValue(field(append(b, '{'), true, "state"), m.State)
	b = appendValue(field(b, false, "metadata"), m.Metadata)
	b = strconv.AppendInt(field(b, false, "version"), m.Version, 10)
	b = strconv.AppendInt(field(b, false, "timestamp"), m.Timestamp, 10)
	return append(appendToken(b, m.ClientToken), '}')
}

func (d DocumentSnapshot) appendJSON(b []byte) []byte {
	b = d.State.appendJSON(field(append(b, '{'), true, "state"))
	b = d.Metadata.appendJSON(field(b, false, "metadata"))
	b = strconv.AppendInt(field(b, false, "version"), d.Version, 10)
	return append(b, '}')
}

func (d Documents) appendJSON(b []byte) []byte {
	b = field(append(b, '{'), true, "previous")
	if d.Previous == nil {
		b = append(b, "null"...)
	} else {
		b = d.Previous.appendJSON(b)
	}
	b = d.Current.appendJSON(field(b, false, "current"))
	b = strconv.AppendInt(field(b, false, "timestamp"), d.Timestamp, 10)
	return append(appendToken(b, d.ClientToken), '}')
}

func (m DeltaMessage) appendJSON(b []byte) []byte {
	b = strconv.AppendInt(field(append(b, '{'), true, "version"), m.Version, 10)
	b = strconv.AppendInt(field(b, false, "timestamp"), m.Timestamp, 10)
	b = appendObject(field(b, false, "state"), m.State)
	b = appendObject(field(b, false, "metadata"), m.Metadata)
	return append(appendToken(b, m.ClientToken), '}')
}

func (s GetState) appendJSON(b []byte) []byte {
	b = append(b, '{')
	first := true
	for _, f := range [...]struct {
		name string
		m    map[string]any
	}{{"desired", s.Desired}, {"reported", s.Reported}, {"delta", s.Delta}} {
		if len(f.m) > 0 {
			b = appendObject(field(b, first, f.name), f.m)
			first = false
		}
	}
	return append(b, '}')
}

func (m GetAccepted) appendJSON(b []byte) []byte {
	b = m.State.appendJSON(field(append(b, '{'), true, "state"))
	b = m.Metadata.appendJSON(field(b, false, "metadata"))
	b = strconv.AppendInt(field(b, false, "version"), m.Version, 10)
	b = strconv.AppendInt(field(b, false, "timestamp"), m.Timestamp, 10)
	return append(appendToken(b, m.ClientToken), '}')
}

func (m DeleteAccepted) appendJSON(b []byte) []byte {
	b = strconv.AppendInt(field(append(b, '{'), true, "version"), m.Version, 10)
	b = strconv.AppendInt(field(b, false, "timestamp"), m.Timestamp, 10)
	return append(appendToken(b, m.ClientToken), '}')
}

func (s stored) appendJSON(b []byte) []byte {
	b = s.State.appendJSON(field(append(b, '{'), true, "state"))
	b = s.Metadata.appendJSON(field(b, false, "metadata"))
	b = strconv.AppendInt(field(b, false, "version"), s.Version, 10)
	b = strconv.AppendInt(field(b, false, "timestamp"), s.Timestamp, 10)
	if s.Deleted {
		b = append(field(b, false, "deleted"), "true"...)
	}
	return append(b, '}')
}
