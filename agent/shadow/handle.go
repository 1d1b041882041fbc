package shadow

import (
	"errors"
	"time"
)

// Message is one payload to publish on a topic.
type Message struct {
	Topic   Topic
	Payload []byte
}

// Handle serves one request (a topic with the empty suffix) against sh, the
// current document of that thing and shadow name, as the AWS service would.
// It returns the messages to publish and whether sh changed and must be
// saved. Responses to a topic that is not a request are none.
func Handle(sh *Shadow, t Topic, payload []byte, now time.Time) (out []Message, changed bool) {
	if t.Suffix != Request {
		return nil, false
	}
	shadowName := t.Name
	if shadowName == "" {
		shadowName = t.Thing
	}
	rejected := func(err error) []Message {
		var e *Error
		if !errors.As(err, &e) {
			e = reject(500, MsgInternal, "")
		}
		return []Message{{t.With(SuffixRejected), e.JSON()}}
	}
	switch t.Op {
	case OpUpdate:
		req, err := ParseUpdate(payload)
		if err != nil {
			return rejected(err), false
		}
		res, err := sh.Update(req, now)
		if err != nil {
			return rejected(err), false
		}
		out = []Message{{t.With(SuffixAccepted), res.Accepted()}, {t.With(SuffixDocuments), res.Documents()}}
		if delta := res.Delta(); delta != nil {
			out = append(out, Message{t.With(SuffixDelta), delta})
		}
		return out, true
	case OpGet:
		req, err := ParseTokenRequest(payload)
		if err != nil {
			return rejected(err), false
		}
		b, err := sh.Get(shadowName, req.ClientToken, now)
		if err != nil {
			return rejected(err), false
		}
		return []Message{{t.With(SuffixAccepted), b}}, false
	case OpDelete:
		b, err := sh.Delete(shadowName, ParseDeleteRequest(payload), now)
		if err != nil {
			return rejected(err), false
		}
		return []Message{{t.With(SuffixAccepted), b}}, true
	}
	return nil, false
}
