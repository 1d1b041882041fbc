package jobrun

import (
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/shadowgate/shadowgate/agent/command"
	"github.com/shadowgate/shadowgate/agent/config"
)

func TestTID(t *testing.T) {
	tid := TID("speed-40_a", 12)
	if tid != "job:speed-40_a:12" {
		t.Fatal(tid)
	}
	job, n, err := ParseTID(tid)
	if err != nil || job != "speed-40_a" || n != 12 {
		t.Fatalf("%q %d %v", job, n, err)
	}
	for _, bad := range []string{"job:", "job::1", "job:a:", "job:a:0", "job:a:x", "job:a b:1", "cmd:a:1", "job:" + strings.Repeat("a", 65) + ":1"} {
		if _, _, err := ParseTID(bad); err == nil {
			t.Errorf("%q parsed", bad)
		}
	}
	c := &Client{}
	if !c.Claims(tid) || c.Claims("job:nonsense") || c.Claims("CAFED00D") {
		t.Fatal("claims")
	}
}

func TestParseDocument(t *testing.T) {
	d, err := parseDocument([]byte(`{"operation":"SET_SPEED","args":{"speed":40}}`))
	if err != nil || d.Operation != "SET_SPEED" || string(d.Args["speed"]) != "40" {
		t.Fatalf("%+v %v", d, err)
	}
	for doc, want := range map[string]string{
		``:                                `has no document`,
		`[1]`:                             `not a JSON object`,
		`{"args":{}}`:                     `no "operation"`,
		`{"operation":5}`:                 `operation must be a string`,
		`{"operation":"X","args":[]}`:     `args an object`,
		`{"operation":"X","version":"1"}`: `the key "version"`,
	} {
		if _, err := parseDocument([]byte(doc)); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: %v, want %q", doc, err, want)
		}
	}
}

func TestDetailValue(t *testing.T) {
	if got := detailValue("line one\nline\ttwo\u200b end "); got != "line one line two  end" {
		t.Fatalf("%q", got)
	}
	long := detailValue(strings.Repeat("é", 2000))
	if utf8.RuneCountInString(long) != maxDetailValue || !strings.HasSuffix(long, "…") {
		t.Fatalf("%d runes", utf8.RuneCountInString(long))
	}
}

// What each ack becomes: the status table of the README. The step timeout
// is no ack's: it goes once the action starts (Started), the type's
// timeout rounded up to whole minutes.
func TestStatusOf(t *testing.T) {
	cfg := &config.Config{Commands: config.Commands{Types: map[string]*config.CommandType{
		"SLOW": {Timeout: config.Duration(90e9)}, "FAST": {Timeout: config.Duration(1e9)},
	}}}
	c := &Client{o: Options{Config: cfg}}
	for _, tc := range []struct {
		run     Run
		ack     command.Ack
		status  string
		details string
	}{
		{Run{Operation: "SLOW"}, command.Ack{Status: "RUNNING"}, StatusInProgress, ""},
		{Run{Operation: "FAST"}, command.Ack{Status: "RUNNING", Reason: command.ReasonAwaitingApproval}, StatusInProgress, "awaiting=approval"},
		{Run{Operation: "FAST", Approval: "pending"}, command.Ack{Status: "RUNNING"}, StatusInProgress, "approval=approved"},
		{Run{Operation: "ROLLBACK"}, command.Ack{Status: "RUNNING"}, StatusInProgress, ""},
		{Run{Status: StatusInProgress}, command.Ack{Status: "SUCCESS", Result: map[string]any{"m": map[string]any{"on": true}}}, StatusSucceeded, `result={"m":{"on":true}}`},
		{Run{Status: StatusInProgress}, command.Ack{Status: "FAILURE", Reason: "timeout"}, StatusFailed, "reason=timeout"},
		{Run{Status: StatusInProgress}, command.Ack{Status: "FAILURE", Reason: command.ReasonRejected}, StatusRejected, "reason=" + command.ReasonRejected},
		{Run{}, command.Ack{Status: "FAILURE", Reason: `unknown command type "X"`}, StatusRejected, `reason=unknown command type "X"`},
	} {
		status, details := c.statusOf(&tc.run, &tc.ack)
		var d []string
		for k, v := range details {
			d = append(d, k+"="+v)
		}
		if status != tc.status || strings.Join(d, ",") != tc.details {
			t.Errorf("%+v %+v: %s %v, want %s %s", tc.run, tc.ack, status, details, tc.status, tc.details)
		}
	}
	for op, want := range map[string]int64{"SLOW": 2, "FAST": 1, "ROLLBACK": 1} {
		if got := c.stepMinutes(op); got != want {
			t.Errorf("step timeout of %s: %d min, want %d", op, got, want)
		}
	}
}

// Jobs answers feed the trusted clock: their timestamp, in seconds as AWS
// documents it or in milliseconds as its examples show, with the first send
// of the request answered (zero for a message that answers nothing).
func TestCloudTimeFromAnswers(t *testing.T) {
	var got []int64
	var sent []time.Time
	c := &Client{o: Options{CloudTime: func(ts int64, s time.Time) { got = append(got, ts); sent = append(sent, s) }}}
	first := time.Now()
	c.cloudTime(1489096425, &req{firstSent: first})
	c.cloudTime(1489096425069, nil)
	c.cloudTime(0, nil)
	if len(got) != 2 || got[0] != 1489096425 || got[1] != 1489096425 {
		t.Fatalf("timestamps %v", got)
	}
	if !sent[0].Equal(first) || !sent[1].IsZero() {
		t.Fatalf("sent %v", sent)
	}
}
