package shadowsvc

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/shadowgate/shadowgate/agent/awsapi"
	"github.com/shadowgate/shadowgate/agent/shadow"
	"github.com/shadowgate/shadowgate/store"
)

// DataPlane are the signing names of the iot-data API: the SDKs and the
// CLI sign with "iotdata"; AWS's developer guide names "iotdevicegateway".
var DataPlane = []string{"iotdata", "iotdevicegateway"}

// Limits of the iot-data HTTP operations.
const (
	DefaultPageSize = 25
	MaxPageSize     = 100
	MaxTopicBytes   = 256
	// requestTimeout bounds how long an HTTP request waits for its commit.
	requestTimeout = 30 * time.Second
)

// Routes are the iot-data operations of the service, for an awsapi.Server:
// the HTTP door onto the same engine as the MQTT one. An update or delete
// over HTTP publishes what one over MQTT does (…/accepted, …/documents,
// …/delta) except the answer to the requester itself; as AWS documents,
// errors of a REST request are its HTTP response and no …/rejected message
// is published.
func (s *Service) Routes() []awsapi.Route {
	const shadowPath = "/things/{thingName}/shadow"
	return []awsapi.Route{
		{Services: DataPlane, Method: http.MethodGet, Path: shadowPath, Operation: "GetThingShadow", Handler: s.shadowOp(shadow.OpGet, awsapi.ActionRead)},
		{Services: DataPlane, Method: http.MethodPost, Path: shadowPath, Operation: "UpdateThingShadow", Handler: s.shadowOp(shadow.OpUpdate, awsapi.ActionWrite)},
		{Services: DataPlane, Method: http.MethodDelete, Path: shadowPath, Operation: "DeleteThingShadow", Handler: s.shadowOp(shadow.OpDelete, awsapi.ActionWrite)},
		{Services: DataPlane, Method: http.MethodGet, Path: "/api/things/shadow/ListNamedShadowsForThing/{thingName}", Operation: "ListNamedShadowsForThing", Handler: s.listNamed},
		{Services: DataPlane, Method: http.MethodPost, Path: "/topics/{topic}", Operation: "Publish", Handler: s.publishHTTP},
	}
}

// fromHTTP says which answers of an HTTP request also go to the broker.
func fromHTTP(m shadow.Message) bool {
	return m.Topic.Suffix != shadow.SuffixRejected && m.Topic.Op != shadow.OpGet
}

// validationError is AWS's message for a parameter outside its constraint.
func validationError(value, member, constraint string) *awsapi.Error {
	return awsapi.Errorf(awsapi.InvalidRequest, "1 validation error detected: Value '%s' at '%s' failed to satisfy constraint: %s", value, member, constraint)
}

func checkThing(thing string) *awsapi.Error {
	if err := shadow.ValidateThingName(thing); err != nil {
		if len(thing) > shadow.MaxThingNameLen {
			return validationError(thing, "thingName", fmt.Sprintf("Member must have length less than or equal to %d", shadow.MaxThingNameLen))
		}
		return validationError(thing, "thingName", "Member must satisfy regular expression pattern: [a-zA-Z0-9:_-]+")
	}
	return nil
}

func (s *Service) shadowOp(op shadow.Op, action awsapi.Action) awsapi.Handler {
	return func(ctx context.Context, c *awsapi.Call) (*awsapi.Response, error) {
		thing := c.Params["thingName"]
		if e := checkThing(thing); e != nil {
			return nil, e
		}
		var name string
		if vs, ok := c.Query["name"]; ok {
			name = vs[0]
			if err := shadow.ValidateShadowName(name); err != nil {
				if len(name) > shadow.MaxShadowNameLen {
					return nil, validationError(name, "shadowName", fmt.Sprintf("Member must have length less than or equal to %d", shadow.MaxShadowNameLen))
				}
				return nil, validationError(name, "shadowName", "Member must satisfy regular expression pattern: [a-zA-Z0-9:_-]+")
			}
		}
		if !c.Allows(action, thing) {
			return nil, awsapi.Errorf(awsapi.Forbidden, "%s", awsapi.MsgForbidden)
		}
		var payload []byte
		if op == shadow.OpUpdate {
			payload = c.Body
		}
		t := shadow.Topic{Thing: thing, Name: name, Op: op}
		ctx, cancel := context.WithTimeout(ctx, requestTimeout)
		defer cancel()
		out, err := s.Do(ctx, t, payload, fromHTTP)
		switch {
		case errors.Is(err, ErrOverloaded):
			return nil, awsapi.Errorf(awsapi.Throttling, "%s", awsapi.MsgRateExceeded)
		case err != nil:
			return nil, awsapi.Errorf(awsapi.ServiceUnavailable, "%s", awsapi.MsgUnavailable)
		}
		for _, m := range out {
			if m.Topic.Op != op {
				continue
			}
			switch m.Topic.Suffix {
			case shadow.SuffixAccepted:
				return &awsapi.Response{ContentType: "application/json", Body: m.Payload}, nil
			case shadow.SuffixRejected:
				e, err := shadow.ParseRejected(m.Payload)
				if err != nil {
					return nil, fmt.Errorf("read rejection %s: %w", m.Payload, err)
				}
				return nil, awsapi.ErrorForStatus(e.Code, e.Message)
			}
		}
		return nil, fmt.Errorf("%s %s/%s: no answer among %d messages", op, thing, name, len(out))
	}
}

// listPage is the ListNamedShadowsForThing response.
type listPage struct {
	Results   []string `json:"results"`
	NextToken string   `json:"nextToken,omitempty"`
	Timestamp int64    `json:"timestamp"`
}

func (s *Service) listNamed(_ context.Context, c *awsapi.Call) (*awsapi.Response, error) {
	thing := c.Params["thingName"]
	if e := checkThing(thing); e != nil {
		return nil, e
	}
	size := DefaultPageSize
	if v := c.Query.Get("pageSize"); v != "" {
		n, err := strconv.Atoi(v)
		switch {
		case err != nil:
			return nil, validationError(v, "pageSize", "Member must be an integer")
		case n < 1:
			return nil, validationError(v, "pageSize", "Member must have value greater than or equal to 1")
		case n > MaxPageSize:
			return nil, validationError(v, "pageSize", fmt.Sprintf("Member must have value less than or equal to %d", MaxPageSize))
		}
		size = n
	}
	var after string
	if tok := c.Query.Get("nextToken"); tok != "" {
		b, err := base64.RawURLEncoding.DecodeString(tok)
		if err != nil || shadow.ValidateShadowName(string(b)) != nil {
			return nil, awsapi.Errorf(awsapi.InvalidRequest, "Invalid nextToken: %s", tok)
		}
		after = string(b)
	}
	if !c.Allows(awsapi.ActionRead, thing) {
		return nil, awsapi.Errorf(awsapi.Forbidden, "%s", awsapi.MsgForbidden)
	}
	page := listPage{Results: []string{}, Timestamp: s.now().Unix()}
	more := false
	err := s.store.View(func(tx *store.Tx) error {
		return tx.NamedShadows(thing, after, func(name string, doc []byte) (bool, error) {
			var st struct {
				Deleted bool `json:"deleted"`
			}
			if json.Unmarshal(doc, &st) == nil && st.Deleted {
				return true, nil
			}
			if len(page.Results) == size {
				more = true
				return false, nil
			}
			page.Results = append(page.Results, name)
			return true, nil
		})
	})
	if err != nil {
		return nil, fmt.Errorf("list shadows of %s: %w", thing, err)
	}
	if more {
		page.NextToken = base64.RawURLEncoding.EncodeToString([]byte(page.Results[len(page.Results)-1]))
	}
	return awsapi.JSON(page)
}

// publishOK is the body AWS answers a publish with.
type publishOK struct {
	Message string `json:"message"`
	TraceID string `json:"traceId"`
}

func (s *Service) publishHTTP(ctx context.Context, c *awsapi.Call) (*awsapi.Response, error) {
	topic := c.Params["topic"]
	if e := checkPublishTopic(topic); e != nil {
		return nil, e
	}
	qos := 0
	if v := c.Query.Get("qos"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 || n > 1 {
			return nil, validationError(v, "qos", "Member must have value less than or equal to 1")
		}
		qos = n
	}
	retain := false
	if v := c.Query.Get("retain"); v != "" {
		b, err := strconv.ParseBool(v)
		if err != nil {
			return nil, awsapi.Errorf(awsapi.InvalidRequest, "retain must be true or false, got '%s'", v)
		}
		retain = b
	}
	if strings.HasPrefix(topic, "$") && !ClientMayPublish(topic) {
		// A reserved topic that clients may not publish on, as on AWS.
		return nil, awsapi.Errorf(awsapi.Forbidden, "%s", awsapi.MsgForbidden)
	}
	if !c.AllowsPublish(topic) {
		return nil, awsapi.Errorf(awsapi.Forbidden, "%s", awsapi.MsgForbidden)
	}
	p, err := s.link.PublishAsync(topic, retain, c.Body)
	if err != nil {
		s.log.Warn("HTTP publish: broker unavailable", "topic", topic, "err", err)
		return nil, awsapi.Errorf(awsapi.ServiceUnavailable, "%s", awsapi.MsgUnavailable)
	}
	if qos == 1 {
		// QoS 1: answered once the broker has the message.
		wctx, cancel := context.WithTimeout(ctx, requestTimeout)
		defer cancel()
		if err := p.Wait(wctx); err != nil {
			s.log.Warn("HTTP publish not acknowledged", "topic", topic, "err", err)
			return nil, awsapi.Errorf(awsapi.ServiceUnavailable, "%s", awsapi.MsgUnavailable)
		}
	} else {
		s.p.Track(p)
	}
	return awsapi.JSON(publishOK{Message: "OK", TraceID: c.RequestID})
}

func checkPublishTopic(topic string) *awsapi.Error {
	switch {
	case topic == "":
		return validationError(topic, "topic", "Member must have length greater than or equal to 1")
	case len(topic) > MaxTopicBytes:
		return awsapi.Errorf(awsapi.InvalidRequest, "Topic exceeds the maximum length of %d bytes", MaxTopicBytes)
	case !utf8.ValidString(topic) || strings.ContainsRune(topic, 0):
		return awsapi.Errorf(awsapi.InvalidRequest, "Topic must be UTF-8 without NUL characters")
	case strings.ContainsAny(topic, "+#"):
		return awsapi.Errorf(awsapi.InvalidRequest, "Topic may not contain the wildcards '+' or '#'")
	}
	return nil
}

// ClientMayPublish reports whether a client may publish on a reserved
// ($-prefixed) topic, by AWS's table of reserved topics: the requests of the
// Device Shadow, Jobs, Device Defender, fleet provisioning and device
// location services, and Basic Ingest ($aws/rules/…). Everything else under
// '$' is the services' own (…/accepted, …/delta, $aws/events/…).
func ClientMayPublish(topic string) bool {
	parts := strings.Split(topic, "/")
	if len(parts) < 2 || parts[0] != "$aws" {
		return false
	}
	switch parts[1] {
	case "rules":
		return len(parts) >= 4 && parts[2] != "" // $aws/rules/<rule>/<topic>
	case "certificates":
		// $aws/certificates/create[-from-csr]/<json|cbor>
		return len(parts) == 4 && (parts[2] == "create" || parts[2] == "create-from-csr") && isFormat(parts[3])
	case "provisioning-templates":
		// $aws/provisioning-templates/<template>/provision/<json|cbor>
		return len(parts) == 5 && parts[3] == "provision" && isFormat(parts[4])
	case "device_location":
		return len(parts) == 4 && parts[3] == "get_position_estimate"
	case "things":
	default:
		return false
	}
	if len(parts) < 4 || parts[2] == "" {
		return false
	}
	rest := parts[3:]
	switch rest[0] {
	case "shadow":
		rest = rest[1:]
		if len(rest) == 3 && rest[0] == "name" && rest[1] != "" {
			rest = rest[2:]
		}
		return len(rest) == 1 && (rest[0] == "get" || rest[0] == "update" || rest[0] == "delete")
	case "jobs":
		rest = rest[1:]
		switch len(rest) {
		case 1:
			return rest[0] == "get" || rest[0] == "start-next"
		case 2:
			return rest[0] != "" && (rest[1] == "get" || rest[1] == "update")
		}
	case "defender":
		return len(rest) == 3 && rest[1] == "metrics" && isFormat(rest[2])
	}
	return false
}

func isFormat(s string) bool { return s == "json" || s == "cbor" }
