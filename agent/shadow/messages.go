package shadow

import "fmt"

// UpdateAccepted is the …/update/accepted payload: the request's state with a
// timestamp for every leaf it touched. State is null, and Metadata only a
// timestamp, for "state": null.
type UpdateAccepted struct {
	State       any    `json:"state"`
	Metadata    any    `json:"metadata"`
	Version     int64  `json:"version"`
	Timestamp   int64  `json:"timestamp"`
	ClientToken string `json:"clientToken,omitempty"`
}

// acceptedState echoes a section, including an explicit "desired": null.
type acceptedState struct {
	Desired  any `json:"desired,omitempty"`
	Reported any `json:"reported,omitempty"`
}

// null marshals as JSON null inside an omitempty field.
type null struct{}

func (null) MarshalJSON() ([]byte, error) { return []byte("null"), nil }

// DocumentSnapshot is one side of a …/update/documents message.
type DocumentSnapshot struct {
	State    State `json:"state"`
	Metadata State `json:"metadata"`
	Version  int64 `json:"version"`
}

// Documents is the …/update/documents payload. Previous is null when the
// update created the shadow.
type Documents struct {
	Previous    *DocumentSnapshot `json:"previous"`
	Current     DocumentSnapshot  `json:"current"`
	Timestamp   int64             `json:"timestamp"`
	ClientToken string            `json:"clientToken,omitempty"`
}

// DeltaMessage is the …/update/delta payload.
type DeltaMessage struct {
	Version     int64          `json:"version"`
	Timestamp   int64          `json:"timestamp"`
	State       map[string]any `json:"state"`
	Metadata    map[string]any `json:"metadata"`
	ClientToken string         `json:"clientToken,omitempty"`
}

// GetState is the state of a …/get/accepted payload.
type GetState struct {
	Desired  map[string]any `json:"desired,omitempty"`
	Reported map[string]any `json:"reported,omitempty"`
	Delta    map[string]any `json:"delta,omitempty"`
}

// GetAccepted is the …/get/accepted payload.
type GetAccepted struct {
	State       GetState `json:"state"`
	Metadata    State    `json:"metadata"`
	Version     int64    `json:"version"`
	Timestamp   int64    `json:"timestamp"`
	ClientToken string   `json:"clientToken,omitempty"`
}

// DeleteAccepted is the …/delete/accepted payload.
type DeleteAccepted struct {
	Version     int64  `json:"version"`
	Timestamp   int64  `json:"timestamp"`
	ClientToken string `json:"clientToken,omitempty"`
}

// Responses as a device reads them. Each parser rejects payloads that are
// not the message it names, so a stray publish cannot pass for one.

// ParseDelta reads a …/update/delta payload.
func ParseDelta(b []byte) (*DeltaMessage, error) {
	var m DeltaMessage
	if err := unmarshal(b, &m); err != nil {
		return nil, fmt.Errorf("delta message: %w", err)
	}
	if m.Version <= 0 || m.State == nil {
		return nil, fmt.Errorf("delta message: missing version or state")
	}
	return &m, nil
}

// ParseGetAccepted reads a …/get/accepted payload.
func ParseGetAccepted(b []byte) (*GetAccepted, error) {
	var m GetAccepted
	if err := unmarshal(b, &m); err != nil {
		return nil, fmt.Errorf("get/accepted message: %w", err)
	}
	if m.Version <= 0 {
		return nil, fmt.Errorf("get/accepted message: missing version")
	}
	return &m, nil
}

// AcceptedHeader is what a device needs from …/update/accepted.
type AcceptedHeader struct {
	Version     int64  `json:"version"`
	Timestamp   int64  `json:"timestamp"`
	ClientToken string `json:"clientToken"`
}

// ParseAccepted reads the version and token of an …/update/accepted or
// …/delete/accepted payload.
func ParseAccepted(b []byte) (*AcceptedHeader, error) {
	var m AcceptedHeader
	if err := unmarshal(b, &m); err != nil {
		return nil, fmt.Errorf("accepted message: %w", err)
	}
	if m.Version <= 0 {
		return nil, fmt.Errorf("accepted message: missing version")
	}
	return &m, nil
}

// ParseRejected reads a …/rejected payload.
func ParseRejected(b []byte) (*Error, error) {
	var e Error
	if err := unmarshal(b, &e); err != nil {
		return nil, fmt.Errorf("rejected message: %w", err)
	}
	if e.Code == 0 {
		return nil, fmt.Errorf("rejected message: missing code")
	}
	return &e, nil
}
