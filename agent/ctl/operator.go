package ctl

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/shadowgate/shadowgate/agent/command"
	"github.com/shadowgate/shadowgate/agent/config"
	"github.com/shadowgate/shadowgate/agent/link"
	"github.com/shadowgate/shadowgate/agent/shadow"
)

// defaultPresenceTopic is the gateways' (config.DefaultPresenceTopic).
const defaultPresenceTopic = config.DefaultPresenceTopic

// mqttFlags are the connection settings of operator commands. Each comes
// from its flag, else its SHADOWCTL_* variable, else
// ~/.config/shadowgate/shadowctl.yaml, else the default.
type mqttFlags struct {
	Broker       string        `yaml:"broker"`
	ClientID     string        `yaml:"client_id"`
	TopicRoot    string        `yaml:"topic_root"`
	Presence     string        `yaml:"presence_topic"`
	CA           string        `yaml:"ca"`
	Cert         string        `yaml:"cert"`
	Key          string        `yaml:"key"`
	Username     string        `yaml:"username"`
	PasswordFile string        `yaml:"password_file"`
	Socket       string        `yaml:"socket"` // the gateway commands'
	Timeout      time.Duration `yaml:"-"`
	JSON         bool          `yaml:"-"`
	configFile   string
}

func (m *mqttFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&m.Broker, "broker", "", "MQTT broker `URL` (SHADOWCTL_BROKER; default tcp://127.0.0.1:1883)")
	fs.StringVar(&m.ClientID, "client-id", "", "MQTT client `id` (default shadowctl-<random>)")
	fs.StringVar(&m.TopicRoot, "topic-root", "", "shadow topic `root` (SHADOWCTL_TOPIC_ROOT; default \"$aws/things/\")")
	fs.StringVar(&m.Presence, "presence-topic", "", "the gateways' presence `topic`, {thing} for the thing (SHADOWCTL_PRESENCE_TOPIC; default \""+defaultPresenceTopic+"\")")
	fs.StringVar(&m.CA, "ca", "", "CA bundle PEM `file` (SHADOWCTL_CA)")
	fs.StringVar(&m.Cert, "cert", "", "client certificate PEM `file` (SHADOWCTL_CERT)")
	fs.StringVar(&m.Key, "key", "", "client key PEM `file` (SHADOWCTL_KEY)")
	fs.StringVar(&m.Username, "username", "", "MQTT user `name` (SHADOWCTL_USERNAME)")
	fs.StringVar(&m.PasswordFile, "password-file", "", "`file` holding the MQTT password (SHADOWCTL_PASSWORD_FILE)")
	fs.DurationVar(&m.Timeout, "timeout", 10*time.Second, "how long to wait for the broker and for answers")
	fs.BoolVar(&m.JSON, "json", false, "print JSON")
	fs.StringVar(&m.configFile, "config", "", settingsUsage)
}

// resolve fills unset fields from the environment, the settings file and
// the defaults. It may be called more than once.
func (m *mqttFlags) resolve() error {
	st, err := readSettings(m.configFile)
	if err != nil {
		return err
	}
	file := st.mqttFlags
	pick := func(flagVal *string, env, fileVal, def string) {
		switch {
		case *flagVal != "":
		case os.Getenv(env) != "":
			*flagVal = os.Getenv(env)
		case fileVal != "":
			*flagVal = fileVal
		default:
			*flagVal = def
		}
	}
	pick(&m.Broker, "SHADOWCTL_BROKER", file.Broker, "tcp://127.0.0.1:1883")
	pick(&m.TopicRoot, "SHADOWCTL_TOPIC_ROOT", file.TopicRoot, shadow.DefaultRoot)
	pick(&m.Presence, "SHADOWCTL_PRESENCE_TOPIC", file.Presence, defaultPresenceTopic)
	pick(&m.CA, "SHADOWCTL_CA", file.CA, "")
	pick(&m.Cert, "SHADOWCTL_CERT", file.Cert, "")
	pick(&m.Key, "SHADOWCTL_KEY", file.Key, "")
	pick(&m.Username, "SHADOWCTL_USERNAME", file.Username, "")
	pick(&m.PasswordFile, "SHADOWCTL_PASSWORD_FILE", file.PasswordFile, "")
	pick(&m.ClientID, "SHADOWCTL_CLIENT_ID", file.ClientID, "shadowctl-"+randomHex(4))
	if !strings.HasSuffix(m.TopicRoot, "/") {
		return usagef("topic root %q must end with '/'", m.TopicRoot)
	}
	return nil
}

func randomHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// session is a connected operator client.
type session struct {
	l      *link.Link
	root   string
	cancel context.CancelFunc
	done   chan struct{}
}

// connect opens an MQTT session with the given subscriptions (filter →
// channel receiving its messages) and waits until it is up.
func connect(ctx context.Context, m *mqttFlags, filters map[string]chan *link.Message) (*session, error) {
	if err := m.resolve(); err != nil {
		return nil, err
	}
	tlsCfg, err := link.TLSConfig(m.Broker, link.TLSFiles{CA: m.CA, Cert: m.Cert, Key: m.Key})
	if err != nil {
		return nil, usagef("%v", err)
	}
	var password string
	if m.PasswordFile != "" {
		b, err := os.ReadFile(m.PasswordFile)
		if err != nil {
			return nil, usagef("password file: %v", err)
		}
		password = strings.TrimRight(string(b), "\r\n")
	}
	l, err := link.New(link.Options{Broker: m.Broker, ClientID: m.ClientID, CleanSession: true, TLS: tlsCfg,
		Username: m.Username, Password: password, MinBackoff: 200 * time.Millisecond, MaxBackoff: 5 * time.Second})
	if err != nil {
		return nil, usagef("%v", err)
	}
	for f, ch := range filters {
		ch := ch
		l.Handle(f, func(_ context.Context, msg *link.Message) {
			select {
			case ch <- msg:
			default: // a reader that stopped reading
			}
		})
	}
	rctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	s := &session{l: l, root: m.TopicRoot, cancel: cancel, done: make(chan struct{})}
	go func() { l.Run(rctx); close(s.done) }()
	deadline := time.NewTimer(m.Timeout)
	defer deadline.Stop()
	for !l.Connected() {
		select {
		case <-deadline.C:
			s.close()
			msg := fmt.Sprintf("cannot reach the broker %s within %s", m.Broker, m.Timeout)
			if e := l.Stats().LastError; e != "" {
				msg += ": " + e
			}
			return nil, &exitError{code: ExitNoDaemon, msg: msg}
		case <-ctx.Done():
			s.close()
			return nil, ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
	return s, nil
}

func (s *session) close() {
	s.cancel()
	<-s.done
}

// shadowRequest publishes one shadow request and waits for its accepted or
// rejected answer (matched by clientToken).
func shadowRequest(e *env, m *mqttFlags, thing, name string, op shadow.Op, body map[string]any) error {
	if err := shadow.ValidateThingName(thing); err != nil {
		return usagef("%v", err)
	}
	if name != "" {
		if err := shadow.ValidateShadowName(name); err != nil {
			return usagef("%v", err)
		}
	}
	if err := m.resolve(); err != nil {
		return err
	}
	t := shadow.Topic{Thing: thing, Name: name, Op: op}
	answers := make(chan *link.Message, 16)
	sess, err := connect(e.ctx, m, map[string]chan *link.Message{
		t.With(shadow.SuffixAccepted).Build(m.TopicRoot): answers,
		t.With(shadow.SuffixRejected).Build(m.TopicRoot): answers,
	})
	if err != nil {
		return err
	}
	defer sess.close()
	token := "shadowctl-" + randomHex(6)
	body["clientToken"] = token
	payload, _ := json.Marshal(body)
	if err := sess.l.Publish(e.ctx, t.Build(m.TopicRoot), false, payload); err != nil {
		return &exitError{code: ExitNoDaemon, msg: err.Error()}
	}
	timeout := time.After(m.Timeout)
	for {
		select {
		case msg := <-answers:
			if !bytes.Contains(msg.Payload, []byte(`"clientToken":"`+token+`"`)) {
				continue
			}
			if strings.HasSuffix(msg.Topic, "/rejected") {
				if m.JSON {
					e.stdout.Write(append(msg.Payload, '\n'))
				}
				rej, _ := shadow.ParseRejected(msg.Payload)
				if rej == nil {
					return &exitError{code: ExitFailure, msg: "rejected: " + string(msg.Payload)}
				}
				return &exitError{code: ExitFailure, msg: fmt.Sprintf("rejected: %d %s", rej.Code, rej.Message)}
			}
			var pretty bytes.Buffer
			json.Indent(&pretty, msg.Payload, "", "  ")
			fmt.Fprintln(e.stdout, pretty.String())
			return nil
		case <-timeout:
			return &exitError{code: ExitNoDaemon, msg: fmt.Sprintf("no answer on %s within %s: is a shadow service (AWS IoT or shadowsvc) attached to %s?", t.With(shadow.SuffixAccepted).Build(m.TopicRoot), m.Timeout, m.Broker)}
		case <-e.ctx.Done():
			return e.ctx.Err()
		}
	}
}

func shadowCommand(op shadow.Op) func(*env, []string) error {
	return func(e *env, args []string) error {
		fs := flag.NewFlagSet("", flag.ContinueOnError)
		var m mqttFlags
		m.register(fs)
		name := fs.String("name", "", "named shadow (default: the classic shadow)")
		file := fs.String("file", "", "update: the request document (JSON) from this file")
		reported := fs.Bool("reported", false, "update: write reported instead of desired")
		version := fs.Int64("version", 0, "update/delete: only if the shadow is at this version")
		pos, err := parseArgs(fs, args)
		if err != nil {
			return err
		}
		if len(pos) < 1 {
			return usagef("takes THING")
		}
		thing := pos[0]
		body := map[string]any{}
		switch op {
		case shadow.OpGet, shadow.OpDelete:
			if len(pos) > 1 {
				return usagef("takes only THING")
			}
		case shadow.OpUpdate:
			switch {
			case *file != "" && len(pos) > 1:
				return usagef("give key=value arguments or --file, not both")
			case *file != "":
				data, err := os.ReadFile(*file)
				if err != nil {
					return usagef("--file: %v", err)
				}
				dec := json.NewDecoder(bytes.NewReader(data))
				dec.UseNumber()
				if err := dec.Decode(&body); err != nil {
					return usagef("--file %s: not a JSON object: %v", *file, err)
				}
			case len(pos) > 1:
				st, err := parseAssignments(pos[1:])
				if err != nil {
					return err
				}
				section := "desired"
				if *reported {
					section = "reported"
				}
				body["state"] = map[string]any{section: st}
			default:
				return usagef("give key=value arguments (e.g. porch_light.on=true) or --file doc.json")
			}
		}
		if *version > 0 {
			body["version"] = *version
		}
		return shadowRequest(e, &m, thing, *name, op, body)
	}
}

func runShadowWatch(e *env, args []string) error {
	fs := flag.NewFlagSet("", flag.ContinueOnError)
	var m mqttFlags
	m.register(fs)
	name := fs.String("name", "", "only this named shadow")
	pos, err := parseArgs(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return usagef("takes THING")
	}
	if err := m.resolve(); err != nil {
		return err
	}
	thing := pos[0]
	if err := shadow.ValidateThingName(thing); err != nil {
		return usagef("%v", err)
	}
	msgs := make(chan *link.Message, 1024)
	filter := m.TopicRoot + thing + "/shadow/#"
	if *name != "" {
		filter = m.TopicRoot + thing + "/shadow/name/" + *name + "/#"
	}
	presence := strings.Replace(m.Presence, "{thing}", thing, 1)
	sess, err := connect(e.ctx, &m, map[string]chan *link.Message{filter: msgs, presence: msgs})
	if err != nil {
		return err
	}
	defer sess.close()
	fmt.Fprintf(e.stderr, "watching %s and %s on %s (Ctrl-C to stop)\n", filter, presence, m.Broker)
	for {
		select {
		case msg := <-msgs:
			if m.JSON {
				printJSON(e.stdout, map[string]any{"topic": msg.Topic, "payload": json.RawMessage(validJSON(msg.Payload))})
				continue
			}
			fmt.Fprintf(e.stdout, "%s  %s  %s\n", time.Now().Format("15:04:05.000"), strings.TrimPrefix(msg.Topic, m.TopicRoot), msg.Payload)
		case <-e.ctx.Done():
			return nil
		}
	}
}

func validJSON(b []byte) []byte {
	if json.Valid(b) {
		return b
	}
	q, _ := json.Marshal(string(b))
	return q
}

// sendOptions tune command send.
type sendOptions struct {
	tries            int
	backoff, maxWait time.Duration
	heartbeatTimeout time.Duration
	expires          time.Duration
}

// outcome is how one command ended, for the requester.
type outcome struct {
	Thing  string         `json:"thing"`
	TID    string         `json:"tid"`
	Cmd    string         `json:"cmd,omitempty"`
	Status string         `json:"status"` // SUCCESS, FAILURE, or GAVE UP
	Reason string         `json:"reason,omitempty"`
	Result map[string]any `json:"result,omitempty"`
	Tries  int            `json:"tries"`
	Took   time.Duration  `json:"took_ns"`
	// ExpiresAt is the request's expires_at (RFC 3339, UTC), if it had one.
	ExpiresAt string `json:"expires_at,omitempty"`
	// Cancel, after a give-up, is how to withdraw the request.
	Cancel string `json:"cancel,omitempty"`
	// unanswered: the gateway never answered (the broker may hold it).
	unanswered bool
}

const statusGaveUp = "GAVE UP"

// sendOne sends a command and follows it to its end: resend with the same
// tid on a backoff schedule until an ack arrives, give up after tries, then
// follow RUNNING heartbeats and fail when they stop.
func sendOne(ctx context.Context, sess *session, acks <-chan command.Ack, thing, cmd, tid string, args map[string]any, o sendOptions, progress func(string)) outcome {
	t0 := time.Now()
	out := outcome{Thing: thing, TID: tid, Cmd: cmd}
	req := map[string]any{"cmd": cmd, "tid": tid, "status": command.StatusRequest}
	if len(args) > 0 {
		req["args"] = args
	}
	if o.expires > 0 {
		out.ExpiresAt = time.Now().Add(o.expires).UTC().Format(time.RFC3339)
		req["expires_at"] = out.ExpiresAt
	}
	payload, _ := json.Marshal(req)
	var first command.Ack
	tries, answered := resend(ctx, sess, thing, payload, acks, o, sentLine(progress, "sent", o.tries), func(a command.Ack) bool {
		first = a
		return a.Status == command.StatusRunning || a.Status == command.StatusSuccess || a.Status == command.StatusFailure
	})
	out.Tries = tries
	switch {
	case answered && first.Status == command.StatusRunning:
		progress(runningLine(first, t0))
		return follow(ctx, acks, out, t0, o, progress)
	case answered:
		return finished(out, first, t0)
	}
	out.Status, out.Took = statusGaveUp, time.Since(t0)
	if ctx.Err() != nil {
		out.Reason = "interrupted before an answer; " + mayStillRun(thing, out.ExpiresAt)
	} else {
		out.Reason = fmt.Sprintf("no answer after %d tries over %s; %s", out.Tries, out.Took.Round(100*time.Millisecond), mayStillRun(thing, out.ExpiresAt))
	}
	out.Cancel, out.unanswered = cancelHint(thing, tid), true
	return out
}

// resend publishes payload on thing's request topic on a backoff schedule
// (the first wait o.backoff, doubling up to o.maxWait) until answer takes
// an ack as the answer (true) or o.tries sends went unanswered. sent
// reports each send. It returns the sends made and whether an answer came;
// without one, ctx.Err() says whether it was interrupted.
func resend(ctx context.Context, sess *session, thing string, payload []byte, acks <-chan command.Ack, o sendOptions, sent func(try int, wait time.Duration, err error), answer func(command.Ack) bool) (int, bool) {
	wait := o.backoff
	for try := 1; try <= o.tries; try++ {
		sent(try, wait, sess.l.Publish(ctx, command.RequestTopic(thing), false, payload))
		timer := time.NewTimer(wait)
	await:
		for {
			select {
			case a := <-acks:
				if answer(a) {
					timer.Stop()
					return try, true
				}
			case <-timer.C:
				break await
			case <-ctx.Done():
				timer.Stop()
				return try, false
			}
		}
		wait = min(wait*2, o.maxWait)
	}
	return o.tries, false
}

// sentLine reports each send of resend as "what (try N of tries)".
func sentLine(progress func(string), what string, tries int) func(int, time.Duration, error) {
	return func(try int, wait time.Duration, err error) {
		if err != nil {
			progress(fmt.Sprintf("try %d: %v", try, err))
			return
		}
		progress(fmt.Sprintf("%s (try %d of %d), waiting %s for an answer", what, try, tries, wait.Round(time.Millisecond)))
	}
}

// awaitFinal follows a RUNNING command to its final ack (SUCCESS or
// FAILURE), calling beat on each heartbeat. It returns nil with silent
// when no heartbeat came for timeout, nil without when ctx ended.
func awaitFinal(ctx context.Context, acks <-chan command.Ack, timeout time.Duration, beat func(command.Ack)) (final *command.Ack, silent bool) {
	lastBeat := time.Now()
	for {
		silence := time.NewTimer(timeout - time.Since(lastBeat))
		select {
		case a := <-acks:
			silence.Stop()
			switch a.Status {
			case command.StatusRunning:
				lastBeat = time.Now()
				beat(a)
			case command.StatusSuccess, command.StatusFailure:
				return &a, false
			}
		case <-silence.C:
			return nil, true
		case <-ctx.Done():
			silence.Stop()
			return nil, false
		}
	}
}

// mayStillRun says, in one line, what a request nobody answered may still
// do: the broker keeps it for the thing, which runs it when it returns.
func mayStillRun(thing, expiresAt string) string {
	if exp, err := time.Parse(time.RFC3339, expiresAt); err == nil {
		return fmt.Sprintf("it may still run: the broker keeps it, and %s runs it if it comes back before %s (its expires_at)", thing, localTime(exp))
	}
	return fmt.Sprintf("it may still run: the broker keeps it, and %s runs it whenever it comes back (it has no expires_at)", thing)
}

func cancelHint(thing, tid string) string { return "shadowctl command cancel " + thing + " " + tid }

// localTime prints t for the operator: local time with its zone.
func localTime(t time.Time) string { return t.Local().Format("2006-01-02 15:04:05 MST") }

// giveUpNote is the full account of a give-up, for the terminal.
func giveUpNote(out outcome) string {
	var b strings.Builder
	fmt.Fprintf(&b, "Giving up does not withdraw the request. The broker keeps it for %s (a persistent session;\n", out.Thing)
	fmt.Fprintf(&b, "AWS IoT Core keeps its messages for an hour after it went away, by default), and %s runs it\n", out.Thing)
	if exp, err := time.Parse(time.RFC3339, out.ExpiresAt); err == nil {
		fmt.Fprintf(&b, "if it comes back online before %s (its expires_at); after that it refuses it.\n", localTime(exp))
	} else {
		fmt.Fprintf(&b, "whenever it comes back online, however late: it has no expires_at (--expires sets one).\n")
	}
	fmt.Fprintf(&b, "To stop it:                 %s\n", out.Cancel)
	fmt.Fprintf(&b, "To ask what became of it:   shadowctl command send %s %s --tid %s", out.Thing, out.Cmd, out.TID)
	return b.String()
}

func runningLine(a command.Ack, t0 time.Time) string {
	msg := "RUNNING"
	if a.Reason != "" {
		msg += " (" + a.Reason + ")"
	}
	return fmt.Sprintf("%s, %s elapsed", msg, time.Since(t0).Round(time.Second))
}

func finished(out outcome, a command.Ack, t0 time.Time) outcome {
	out.Status, out.Reason, out.Result, out.Took = a.Status, a.Reason, a.Result, time.Since(t0)
	return out
}

// follow waits for the final ack while heartbeats keep coming.
func follow(ctx context.Context, acks <-chan command.Ack, out outcome, t0 time.Time, o sendOptions, progress func(string)) outcome {
	final, silent := awaitFinal(ctx, acks, o.heartbeatTimeout, func(a command.Ack) { progress(runningLine(a, t0)) })
	switch {
	case final != nil:
		return finished(out, *final, t0)
	case silent:
		out.Status, out.Took = command.StatusFailure, time.Since(t0)
		out.Reason = fmt.Sprintf("no RUNNING heartbeat for %s: the outcome is unknown; ask again later with --tid %s (the gateway answers a known tid with its recorded result); if it has not started, %s stops it", o.heartbeatTimeout, out.TID, cancelHint(out.Thing, out.TID))
		return out
	}
	out.Status, out.Took = statusGaveUp, time.Since(t0)
	out.Reason = "interrupted while it was RUNNING at the gateway; it goes on without us (ask again later with --tid " + out.TID + ")"
	out.Cancel = cancelHint(out.Thing, out.TID)
	return out
}
