package sync

import (
	"context"
	"encoding/json"
	"math/rand/v2"
	"time"

	"github.com/shadowgate/shadowgate/agent/shadow"
	"github.com/shadowgate/shadowgate/store"
)

// Shadow requests (GET, and updates: reports and local writes) are settled
// by the shadow service's answer, never by the broker's PUBACK: a broker
// acknowledges a request that no service receives (one restarted before the
// service reconnected, one that drops messages for a slow subscriber). One
// goroutine, the sender, sends them:
//
//   - a request awaits its answer for AnswerTimeout, then goes again with
//     the same clientToken (the first copy may have been served; the
//     timeout doubles for each copy, up to maxAnswerTimeout);
//   - 429, 500 and 503 are retried with capped, jittered backoff; an
//     update is rebuilt for the retry, so it carries the newest values;
//   - per shadow there is at most one GET and one update awaiting an
//     answer, so that two updates never land out of order, and never more
//     than MaxInFlight requests in all (AWS answers 429 above 10 per
//     connection);
//   - after a (re)connect a shadow is fetched first; its updates wait for
//     the answer (the conflict policy needs the cloud's document).

const (
	maxAnswerTimeout = time.Minute
	minRetry         = 500 * time.Millisecond
	maxRetry         = 30 * time.Second
)

type reqKind uint8

const (
	reqGet reqKind = iota
	reqWrite
	reqReport
)

func (k reqKind) String() string {
	return [...]string{"get", "write", "report"}[k]
}

type request struct {
	kind    reqKind
	token   string
	topic   string
	payload []byte
	// values are what an update carries, by key (for settlement).
	values map[string]any
	sentAt time.Time // zero: waiting to be sent
	// firstSent is when it was first sent: an answer to any of its copies
	// (one token) was made after it (agent/clock's round-trip bound).
	firstSent time.Time
	deadline  time.Time
	timeout   time.Duration
	retryAt   time.Time // after 429/5xx: not before
	tries     int       // 429/5xx answers so far
}

// want is a reported value the cloud has not accepted yet.
type want struct {
	value any
	seq   uint64 // the outbox copy made while offline, 0 if none
}

// safetyNet watches a shadow's standing delta.
type safetyNet struct {
	sig  string        // the delta, encoded
	wait time.Duration // until the next fetch while it stands
	at   time.Time
}

// inFlight counts the shadow's requests awaiting an answer. sh.mu held.
func (sh *shadowSync) inFlight() int {
	n := 0
	for _, r := range []*request{sh.get, sh.upd} {
		if r != nil && !r.sentAt.IsZero() {
			n++
		}
	}
	return n
}

// kick marks sh (every shadow if nil) for the sender's next pass and
// wakes it.
func (s *Syncer) kick(sh *shadowSync) {
	if sh != nil {
		sh.kicked.Store(true)
	} else {
		for _, sh := range s.shadows {
			sh.kicked.Store(true)
		}
	}
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// wantGet asks for the shadow to be fetched (unless a GET is already on
// its way). sh.mu held.
func (s *Syncer) wantGet(sh *shadowSync) {
	if sh.get != nil {
		return
	}
	tok := s.token("get")
	payload, _ := json.Marshal(map[string]string{"clientToken": tok})
	sh.get = &request{kind: reqGet, token: tok, topic: s.topic(sh, shadow.OpGet, shadow.Request), payload: payload,
		timeout: s.o.AnswerTimeout}
}

// fetched records that the shadow's GET was answered. sh.mu held.
func (s *Syncer) fetched(sh *shadowSync) {
	sh.get = nil
	sh.synced = true
}

// backOff schedules a request refused with 429/500/503 (or a GET refused
// otherwise) to go again after a capped, jittered, doubling delay.
func (s *Syncer) backOff(r *request) {
	r.tries++
	r.sentAt = time.Time{}
	r.retryAt = time.Now().Add(retryDelay(r.tries))
	s.retried.Add(1)
}

func retryDelay(tries int) time.Duration {
	d := minRetry << min(tries-1, 10)
	d = min(d, maxRetry)
	return d/2 + rand.N(d/2+1)
}

func retryable(code int) bool { return code == 429 || code == 500 || code == 503 }

// settleUpdate takes the answer to the shadow's update in flight: what it
// carried is settled unless a newer value replaced it meanwhile. sh.mu held.
func (s *Syncer) settleUpdate(sh *shadowSync, token string) {
	r := sh.upd
	if r == nil || r.token != token {
		return
	}
	sh.upd, sh.updTries, sh.updHold = nil, 0, time.Time{}
	switch r.kind {
	case reqWrite:
		changed := false
		for key, v := range r.values {
			if p := sh.rep.Pending[key]; p != nil && shadow.Equal(any(p.Value), v) {
				delete(sh.rep.Pending, key)
				changed = true
			}
		}
		if changed {
			s.persist(sh)
		}
	case reqReport:
		for key, v := range r.values {
			if w := sh.reports[key]; w != nil && shadow.Equal(w.value, v) {
				s.dropWant(sh, key)
			}
		}
	}
}

// settledByDocument settles the update in flight when the document just
// fetched already holds everything it carries: its answer was lost, or it
// landed and its answer has not come yet (it changes nothing then). sh.mu
// held.
func (s *Syncer) settledByDocument(sh *shadowSync) {
	r := sh.upd
	if r == nil {
		return
	}
	for key, v := range r.values {
		if !shadow.Equal(sh.rep.Reported[key], v) || (r.kind == reqWrite && !shadow.Equal(sh.rep.Desired[key], v)) {
			return
		}
	}
	s.settleUpdate(sh, r.token)
}

// updateRefused takes a rejection of the shadow's update in flight. sh.mu
// held.
func (s *Syncer) updateRefused(sh *shadowSync, e *shadow.Error) {
	r := sh.upd
	if r == nil || r.token != e.ClientToken {
		return // another client's, or an answer to a copy already settled
	}
	switch {
	case r.kind == reqWrite && e.Code == 409:
		// The cloud moved on since the version sent: fetch it, and let the
		// conflict rules decide before the write goes again.
		s.log.Info("local change met a newer shadow version; fetching it", "shadow", label(sh.name))
		sh.upd = nil
		s.wantGet(sh)
	case retryable(e.Code):
		sh.upd = nil
		sh.updTries++
		sh.updHold = time.Now().Add(retryDelay(sh.updTries))
		s.retried.Add(1)
		s.log.Info("shadow update refused for now; retrying with backoff", "shadow", label(sh.name), "kind", r.kind,
			"code", e.Code, "message", e.Message, "tries", sh.updTries)
	default:
		sh.upd = nil
		s.rejected.Add(1)
		s.log.Error("the cloud refused a shadow update", "shadow", label(sh.name), "kind", r.kind,
			"code", e.Code, "message", e.Message, "state", r.values)
		for key, v := range r.values {
			if r.kind == reqWrite {
				if p := sh.rep.Pending[key]; p != nil && shadow.Equal(any(p.Value), v) {
					delete(sh.rep.Pending, key)
				}
				continue
			}
			if w := sh.reports[key]; w != nil && shadow.Equal(w.value, v) {
				s.dropWant(sh, key)
				sh.refused[key] = v // not sent again until the value changes
			}
		}
		if r.kind == reqWrite {
			s.persist(sh)
		}
	}
}

// setWant records a value to report. Offline, a copy goes to the outbox,
// so that shadowctl shows it and a restart still knows. sh.mu held.
func (s *Syncer) setWant(sh *shadowSync, key string, v any) {
	w := sh.reports[key]
	if w != nil && shadow.Equal(w.value, v) {
		return
	}
	if old, ok := sh.refused[key]; ok {
		if shadow.Equal(old, v) {
			return
		}
		delete(sh.refused, key)
	}
	if w == nil {
		w = &want{seq: sh.oldMirror[key]}
		delete(sh.oldMirror, key)
		sh.reports[key] = w
	}
	w.value = v
	if s.o.Link.Connected() {
		return
	}
	payload, _ := json.Marshal(map[string]any{
		"state":       map[string]any{"reported": map[string]any{key: v}},
		"clientToken": s.token("rep"),
	})
	seq, err := s.o.Store.Enqueue(store.OutItem{Kind: store.KindReport, Topic: s.topic(sh, shadow.OpUpdate, shadow.Request),
		Payload: payload, QoS: 1, Key: s.outboxKey(sh, key)})
	if err != nil {
		s.log.Error("queue report", "shadow", label(sh.name), "key", key, "err", err)
		return
	}
	w.seq = seq // the store replaced the older copy of the key
}

// dropWant forgets a settled report and its outbox copies. sh.mu held.
func (s *Syncer) dropWant(sh *shadowSync, key string) {
	if w := sh.reports[key]; w != nil {
		if w.seq != 0 {
			sh.unmirror = append(sh.unmirror, w.seq)
		}
		delete(sh.reports, key)
	}
	if seq, ok := sh.oldMirror[key]; ok {
		sh.unmirror = append(sh.unmirror, seq)
		delete(sh.oldMirror, key)
	}
}

// carried says whether the update in flight carries key. sh.mu held.
func (sh *shadowSync) carried(key string) bool {
	if sh.upd == nil {
		return false
	}
	_, ok := sh.upd.values[key]
	return ok
}

// buildUpdate makes the shadow's next update: the local writes first (once
// no GET is pending: the conflict rules need the fetched document), then
// the reports. nil when there is nothing to send. sh.mu held.
func (s *Syncer) buildUpdate(sh *shadowSync) *request {
	values := map[string]any{}
	var body map[string]any
	kind := reqReport
	if len(sh.rep.Pending) > 0 && sh.get == nil {
		kind = reqWrite
		for key, p := range sh.rep.Pending {
			values[key] = any(p.Value)
		}
		body = map[string]any{"state": map[string]any{"desired": values, "reported": values}}
		if sh.rep.Version > 0 {
			body["version"] = sh.rep.Version
		}
	} else {
		for key, w := range sh.reports {
			if sh.rep.Pending[key] == nil {
				values[key] = w.value
			}
		}
		if len(values) == 0 {
			return nil
		}
		body = map[string]any{"state": map[string]any{"reported": values}}
	}
	tok := s.token(kind.String())
	body["clientToken"] = tok
	payload, err := json.Marshal(body)
	if err != nil {
		s.log.Error("encode shadow update", "shadow", label(sh.name), "err", err)
		return nil
	}
	return &request{kind: kind, token: tok, topic: s.topic(sh, shadow.OpUpdate, shadow.Request), payload: payload,
		values: values, timeout: s.o.AnswerTimeout}
}

// standing is the replica's delta for the gateway's own keys (those with a
// local change waiting aside), encoded; "" when there is none. sh.mu held.
func (s *Syncer) standing(sh *shadowSync) string {
	var d map[string]any
	for key := range sh.keys {
		dv, ok := sh.rep.Desired[key]
		if !ok || sh.rep.Pending[key] != nil {
			continue
		}
		sub := shadow.Delta(map[string]any{key: dv}, map[string]any{key: sh.rep.Reported[key]})
		if sub == nil {
			continue
		}
		if d == nil {
			d = map[string]any{}
		}
		d[key] = sub[key]
	}
	if d == nil {
		return ""
	}
	b, _ := json.Marshal(d)
	return string(b)
}

// checkNet is the safety net for what no message says: a delta that stood
// unchanged in the replica for StaleAfter fetches the shadow (which then
// reconciles), again after a doubling wait while it stands. sh.mu held.
func (s *Syncer) checkNet(sh *shadowSync, now time.Time, next *time.Time) {
	if !sh.synced || sh.get != nil {
		return
	}
	sig := s.standing(sh)
	if sig == "" {
		sh.net = safetyNet{}
		return
	}
	if sig != sh.net.sig {
		sh.net = safetyNet{sig: sig, wait: s.o.StaleAfter, at: now.Add(s.o.StaleAfter)}
	}
	if now.Before(sh.net.at) {
		*next = earliest(*next, sh.net.at)
		return
	}
	s.safetyGets.Add(1)
	s.log.Info("a delta stood unchanged; fetching the shadow", "shadow", label(sh.name), "delta", sig, "after", sh.net.wait)
	s.wantGet(sh)
	sh.net.wait = min(2*sh.net.wait, 32*s.o.StaleAfter)
	sh.net.at = now.Add(sh.net.wait)
}

func earliest(a, b time.Time) time.Time {
	if b.Before(a) {
		return b
	}
	return a
}

// sender sends the shadow requests that are due until ctx ends.
func (s *Syncer) sender(ctx context.Context) {
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	first := 0
	for {
		next := s.sendDue(first)
		first++
		timer.Reset(time.Until(next))
		select {
		case <-ctx.Done():
			return
		case <-s.wake:
		case <-timer.C:
		}
	}
}

type outgoing struct {
	topic   string
	payload []byte
}

// sendDue removes the outbox copies of settled reports, sends what is due
// (shadows taken in turn from first, for fairness under the in-flight
// bound) and returns when it must run next.
func (s *Syncer) sendDue(first int) time.Time {
	now := time.Now()
	next := now.Add(time.Hour)
	// One pass over the shadows for the outbox copies to remove and the
	// requests in flight: the count can only be too high by the time it is
	// used (answers settle requests, only this goroutine sends them), so
	// the bound holds.
	var unmirror []uint64
	inflight := 0
	for _, sh := range s.order {
		sh.mu.Lock()
		unmirror = append(unmirror, sh.unmirror...)
		sh.unmirror = nil
		inflight += sh.inFlight()
		sh.mu.Unlock()
	}
	if len(unmirror) > 0 {
		if err := s.o.Store.Update(func(tx *store.Tx) error {
			for _, seq := range unmirror {
				if err := tx.Remove(seq); err != nil {
					return err
				}
			}
			return nil
		}); err != nil {
			s.log.Warn("remove settled reports from the outbox", "err", err)
		}
	}
	if !s.o.Link.Connected() {
		return next // woken again on connect
	}
	var out []outgoing
	send := func(r *request) {
		if inflight >= s.o.MaxInFlight {
			return
		}
		r.sentAt, r.deadline = now, now.Add(r.timeout)
		if r.firstSent.IsZero() {
			r.firstSent = now
		}
		inflight++
		out = append(out, outgoing{r.topic, r.payload})
	}
	for i := range s.order {
		sh := s.order[(first+i)%len(s.order)]
		if !sh.kicked.Swap(false) {
			if due := time.Unix(0, sh.due.Load()); now.Before(due) {
				next = earliest(next, due) // nothing changed, nothing due
				continue
			}
		}
		sh.mu.Lock()
		due := now.Add(time.Hour)
		for _, r := range []*request{sh.get, sh.upd} {
			if r != nil && !r.sentAt.IsZero() && !now.Before(r.deadline) {
				// No answer: send it again, same clientToken, waiting longer.
				s.resent.Add(1)
				s.log.Info("no answer to a shadow request; sending it again", "shadow", label(sh.name), "kind", r.kind,
					"token", r.token, "waited", r.timeout)
				r.sentAt = time.Time{}
				r.timeout = min(2*r.timeout, maxAnswerTimeout)
				inflight--
			}
		}
		s.checkNet(sh, now, &due)
		if r := sh.get; r != nil && r.sentAt.IsZero() {
			if now.Before(r.retryAt) {
				due = earliest(due, r.retryAt)
			} else {
				send(r)
			}
		}
		switch {
		case sh.upd != nil && sh.upd.sentAt.IsZero():
			send(sh.upd)
		case sh.upd == nil && sh.synced && now.Before(sh.updHold):
			due = earliest(due, sh.updHold)
		case sh.upd == nil && sh.synced && inflight < s.o.MaxInFlight:
			if r := s.buildUpdate(sh); r != nil {
				sh.upd = r
				send(r)
			}
		}
		for _, r := range []*request{sh.get, sh.upd} {
			switch {
			case r != nil && !r.sentAt.IsZero():
				due = earliest(due, r.deadline)
			case (r != nil && !(r == sh.get && now.Before(r.retryAt))) || (sh.upd == nil && sh.synced && inflight >= s.o.MaxInFlight):
				// Held back by the in-flight bound: visited again on the
				// next pass (an answer frees a slot and wakes the sender).
				sh.kicked.Store(true)
			}
		}
		sh.due.Store(due.UnixNano())
		next = earliest(next, due)
		sh.mu.Unlock()
	}
	for _, o := range out {
		// The PUBACK settles nothing; a failed publish is a lost message:
		// the answer timeout sends it again, a reconnect starts over.
		if _, err := s.o.Link.PublishAsync(o.topic, false, o.payload); err != nil {
			s.log.Debug("publish shadow request", "topic", o.topic, "err", err)
		}
	}
	return next
}
