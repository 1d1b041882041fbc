package shadow

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"unicode/utf8"
)

// Limits of the AWS IoT Device Shadow service that shadowgate enforces too.
// Each is recorded, with its source, in the conformance corpus
// (agent/shadow/shadowtest/corpus).
const (
	// MaxStateBytes bounds desired plus reported of the stored document,
	// each counted as its compact JSON (metadata does not count).
	MaxStateBytes   = 8 * 1024
	MaxPayloadBytes = 128 * 1024 // one request message
	// MaxDepth is the nesting AWS allows in desired or reported: the section
	// object itself is level 1, every object or array inside it one more.
	MaxDepth           = 6
	MaxClientTokenLen  = 64 // bytes
	MaxThingNameLen    = 128
	MaxShadowNameLen   = 64
	MaxInFlightPerConn = 10 // requests in flight on one connection before 429
)

// Error is a rejected request as AWS publishes it on …/rejected. AWS sends
// no timestamp in the rejections it documents and that clients recorded;
// Timestamp is left out when zero.
type Error struct {
	Code        int    `json:"code"`
	Message     string `json:"message"`
	Timestamp   int64  `json:"timestamp,omitempty"`
	ClientToken string `json:"clientToken,omitempty"`
}

func (e *Error) Error() string { return fmt.Sprintf("shadow: %d %s", e.Code, e.Message) }

// JSON is the payload of the …/rejected message.
func (e *Error) JSON() []byte { b, _ := json.Marshal(e); return b }

// The messages AWS uses; tests and clients compare against these.
const (
	MsgInvalidJSON      = "Invalid JSON"
	MsgMissingState     = "Missing required node: state"
	MsgStateNotObject   = "State node must be an object"
	MsgDesiredNotObject = "Desired node must be an object"
	MsgReportedNotObj   = "Reported node must be an object"
	MsgInvalidVersion   = "Invalid version"
	MsgInvalidToken     = "Invalid clientToken"
	MsgVersionConflict  = "Version conflict"
	MsgTooLarge         = "The payload exceeds the maximum size allowed"
	MsgBadEncoding      = "Unsupported documented encoding; supported encoding is UTF-8"
	MsgTooManyRequests  = "Too Many Requests"
	MsgInternal         = "Internal service failure"
)

// MsgTooDeep is the nesting error; AWS's text names the limit.
var MsgTooDeep = fmt.Sprintf("JSON contains too many levels of nesting; maximum is %d", MaxDepth)

// MsgInvalidNode is the error for a key of state other than desired and
// reported; AWS names the key in quotes.
func MsgInvalidNode(key string) string { return "State contains an invalid node: '" + key + "'" }

// MsgNoShadow is the 404 message for a shadow that does not exist; AWS
// quotes the name.
func MsgNoShadow(name string) string { return "No shadow exists with name: '" + name + "'" }

// IsCode reports whether err is a shadow *Error with the given code.
func IsCode(err error, code int) bool {
	var e *Error
	return errors.As(err, &e) && e.Code == code
}

func reject(code int, msg, token string) *Error {
	return &Error{Code: code, Message: msg, ClientToken: token}
}

// UpdateRequest is a parsed, validated …/update payload.
type UpdateRequest struct {
	Desired, Reported map[string]any
	// ClearDesired / ClearReported are set by "desired": null / "reported": null.
	ClearDesired, ClearReported bool
	// ClearState is set by "state": null: both sections go, the shadow stays.
	ClearState  bool
	ClientToken string
	Version     *int64
}

// TouchesDesired reports whether the request writes the desired section.
func (r *UpdateRequest) TouchesDesired() bool {
	return r.Desired != nil || r.ClearDesired || r.ClearState
}

// ParseUpdate validates an update payload the way AWS does and returns the
// request, or an *Error carrying the rejection code and message. Top-level
// fields other than state, clientToken and version are ignored, as AWS
// ignores them.
func ParseUpdate(payload []byte) (*UpdateRequest, error) {
	top, err := decodeObject(payload)
	if err != nil {
		return nil, err
	}
	token, err := clientToken(top)
	if err != nil {
		return nil, err
	}
	req := &UpdateRequest{ClientToken: token}
	if req.Version, err = version(top, token); err != nil {
		return nil, err
	}
	rawState, ok := top["state"]
	if !ok {
		return nil, reject(400, MsgMissingState, token)
	}
	if bytes.Equal(bytes.TrimSpace(rawState), []byte("null")) {
		req.ClearState = true
		return req, nil
	}
	keys, state, err := stateKeys(rawState)
	if err != nil {
		return nil, reject(400, MsgStateNotObject, token)
	}
	for _, k := range keys {
		v := state[k]
		switch k {
		case "desired":
			if v == nil {
				req.ClearDesired = true
				continue
			}
			m, ok := v.(map[string]any)
			if !ok {
				return nil, reject(400, MsgDesiredNotObject, token)
			}
			req.Desired = m
		case "reported":
			if v == nil {
				req.ClearReported = true
				continue
			}
			m, ok := v.(map[string]any)
			if !ok {
				return nil, reject(400, MsgReportedNotObj, token)
			}
			req.Reported = m
		default:
			return nil, reject(400, MsgInvalidNode(k), token)
		}
	}
	for _, sec := range []map[string]any{req.Desired, req.Reported} {
		if depth(sec) > MaxDepth {
			return nil, reject(400, MsgTooDeep, token)
		}
		if nullInArray(sec, false) {
			return nil, reject(400, MsgInvalidJSON, token)
		}
	}
	return req, nil
}

// TokenRequest is a parsed …/get or …/delete payload: an optional
// clientToken (and, for delete, an optional version).
type TokenRequest struct {
	ClientToken string
	Version     *int64
}

// ParseTokenRequest validates a get payload. An empty payload is allowed,
// as AWS allows it.
func ParseTokenRequest(payload []byte) (*TokenRequest, error) {
	if len(bytes.TrimSpace(payload)) == 0 {
		return &TokenRequest{}, nil
	}
	top, err := decodeObject(payload)
	if err != nil {
		return nil, err
	}
	token, err := clientToken(top)
	if err != nil {
		return nil, err
	}
	r := &TokenRequest{ClientToken: token}
	if r.Version, err = version(top, token); err != nil {
		return nil, err
	}
	return r, nil
}

// ParseDeleteRequest reads a delete payload. AWS documents that the content
// of a delete request is ignored; only a valid clientToken is kept, to be
// echoed. It never fails.
func ParseDeleteRequest(payload []byte) *TokenRequest {
	r, err := ParseTokenRequest(payload)
	if err != nil {
		return &TokenRequest{}
	}
	r.Version = nil
	return r
}

// decodeObject reads a JSON object keeping each value raw, so that callers
// can tell an explicit null from a missing key and read keys in order.
func decodeObject(payload []byte) (map[string]json.RawMessage, error) {
	if len(payload) > MaxPayloadBytes {
		return nil, reject(413, MsgTooLarge, "")
	}
	if !utf8.Valid(payload) {
		return nil, reject(415, MsgBadEncoding, "")
	}
	var top map[string]json.RawMessage
	if err := unmarshal(payload, &top); err != nil || top == nil {
		return nil, reject(400, MsgInvalidJSON, "")
	}
	return top, nil
}

func clientToken(top map[string]json.RawMessage) (string, error) {
	raw, ok := top["clientToken"]
	if !ok {
		return "", nil
	}
	var s string
	if err := json.Unmarshal(raw, &s); err != nil || len(s) > MaxClientTokenLen {
		return "", reject(400, MsgInvalidToken, "")
	}
	return s, nil
}

func version(top map[string]json.RawMessage, token string) (*int64, error) {
	raw, ok := top["version"]
	if !ok {
		return nil, nil
	}
	var v any
	if err := unmarshal(raw, &v); err != nil {
		return nil, reject(400, MsgInvalidVersion, token)
	}
	n, isNum := v.(json.Number)
	ver, err := n.Int64()
	if !isNum || err != nil || ver < 0 {
		return nil, reject(400, MsgInvalidVersion, token)
	}
	return &ver, nil
}

// stateKeys is objectKeys for an update's state. Only a state that will be
// rejected needs its keys in document order (the first offending one is
// named); one that only holds desired and reported objects or nulls is
// answered the same in any order, so it is decoded once, not walked again.
func stateKeys(raw json.RawMessage) ([]string, map[string]any, error) {
	var m map[string]any
	if err := unmarshal(raw, &m); err != nil || m == nil {
		return nil, nil, errors.New("not an object")
	}
	keys := make([]string, 0, 2)
	for k, v := range m {
		if k != "desired" && k != "reported" {
			return objectKeys(raw)
		}
		if _, ok := v.(map[string]any); !ok && v != nil {
			return objectKeys(raw)
		}
		keys = append(keys, k)
	}
	return keys, m, nil
}

// objectKeys decodes a JSON object and returns its keys in document order
// (so that an error names the first offending key, as a reader would).
func objectKeys(raw json.RawMessage) ([]string, map[string]any, error) {
	var m map[string]any
	if err := unmarshal(raw, &m); err != nil || m == nil {
		return nil, nil, errors.New("not an object")
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	if _, err := dec.Token(); err != nil { // {
		return nil, nil, err
	}
	var keys []string
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return nil, nil, err
		}
		k, _ := tok.(string)
		keys = append(keys, k)
		var skip json.RawMessage
		if err := dec.Decode(&skip); err != nil {
			return nil, nil, err
		}
	}
	return keys, m, nil
}

// nullInArray reports whether v holds a null inside an array, which AWS
// documents as invalid ("Arrays can't have null values").
func nullInArray(v any, inArray bool) bool {
	switch v := v.(type) {
	case nil:
		return inArray
	case map[string]any:
		for _, x := range v {
			if x != nil && nullInArray(x, false) {
				return true
			}
		}
	case []any:
		for _, x := range v {
			if nullInArray(x, true) {
				return true
			}
		}
	}
	return false
}

// unmarshal decodes JSON keeping numbers exact (json.Number) and rejecting
// trailing data.
func unmarshal(data []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	if err := dec.Decode(v); err != nil {
		return err
	}
	if _, err := dec.Token(); err != io.EOF {
		return errors.New("trailing data after JSON value")
	}
	return nil
}
