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
const (
	MaxStateBytes      = 8 * 1024   // desired + reported, serialised, without metadata
	MaxPayloadBytes    = 128 * 1024 // one request message
	MaxDepth           = 8          // nesting levels inside desired or reported
	MaxClientTokenLen  = 64         // bytes
	MaxThingNameLen    = 128
	MaxShadowNameLen   = 64
	MaxInFlightPerConn = 10 // requests in flight on one connection before 429
)

// Error is a rejected request as AWS publishes it on …/rejected.
type Error struct {
	Code        int    `json:"code"`
	Message     string `json:"message"`
	Timestamp   int64  `json:"timestamp"`
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
	MsgInvalidNode      = "State contains an invalid node"
	MsgVersionConflict  = "Version conflict"
	MsgTooLarge         = "The payload exceeds the maximum size allowed"
	MsgBadEncoding      = "Unsupported documented encoding; supported encoding is UTF-8"
	MsgTooManyRequests  = "Too Many Requests"
	MsgInternal         = "Internal service failure"
)

// MsgTooDeep is the nesting error; AWS's text names the limit.
var MsgTooDeep = fmt.Sprintf("JSON contains too many levels of nesting; maximum is %d", MaxDepth)

// MsgNoShadow is the 404 message for a shadow that does not exist.
func MsgNoShadow(name string) string { return "No shadow exists with name: " + name }

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
	ClientToken                 string
	Version                     *int64
}

// TouchesDesired reports whether the request writes the desired section.
func (r *UpdateRequest) TouchesDesired() bool { return r.Desired != nil || r.ClearDesired }

// ParseUpdate validates an update payload the way AWS does and returns the
// request, or an *Error carrying the rejection code and message.
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
	if v, ok := top["version"]; ok {
		n, isNum := v.(json.Number)
		ver, perr := n.Int64()
		if !isNum || perr != nil || ver < 0 {
			return nil, reject(400, MsgInvalidVersion, token)
		}
		req.Version = &ver
	}
	rawState, ok := top["state"]
	if !ok {
		return nil, reject(400, MsgMissingState, token)
	}
	state, ok := rawState.(map[string]any)
	if !ok {
		return nil, reject(400, MsgStateNotObject, token)
	}
	for k, v := range state {
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
			return nil, reject(400, MsgInvalidNode, token)
		}
	}
	if depth(req.Desired) > MaxDepth || depth(req.Reported) > MaxDepth {
		return nil, reject(400, MsgTooDeep, token)
	}
	return req, nil
}

// TokenRequest is a parsed …/get or …/delete payload: an optional
// clientToken (and, for delete, an optional version).
type TokenRequest struct {
	ClientToken string
	Version     *int64
}

// ParseTokenRequest validates a get or delete payload. An empty payload is
// allowed, as AWS allows it.
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
	if v, ok := top["version"]; ok {
		n, isNum := v.(json.Number)
		ver, perr := n.Int64()
		if !isNum || perr != nil || ver < 0 {
			return nil, reject(400, MsgInvalidVersion, token)
		}
		r.Version = &ver
	}
	return r, nil
}

func decodeObject(payload []byte) (map[string]any, error) {
	if len(payload) > MaxPayloadBytes {
		return nil, reject(413, MsgTooLarge, "")
	}
	if !utf8.Valid(payload) {
		return nil, reject(415, MsgBadEncoding, "")
	}
	var top map[string]any
	if err := unmarshal(payload, &top); err != nil || top == nil {
		return nil, reject(400, MsgInvalidJSON, "")
	}
	return top, nil
}

func clientToken(top map[string]any) (string, error) {
	v, ok := top["clientToken"]
	if !ok {
		return "", nil
	}
	s, isStr := v.(string)
	if !isStr || len(s) > MaxClientTokenLen {
		return "", reject(400, MsgInvalidToken, "")
	}
	return s, nil
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
