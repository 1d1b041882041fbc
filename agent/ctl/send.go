package ctl

import (
	"bufio"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/shadowgate/shadowgate/agent/command"
	"github.com/shadowgate/shadowgate/agent/link"
	"github.com/shadowgate/shadowgate/agent/shadow"
)

// connectAcks connects and routes the acks arriving on topic (depth of
// them may wait) to their tids' waiters; done disconnects.
func connectAcks(ctx context.Context, m *mqttFlags, topic string, depth int) (sess *session, router *ackRouter, done func(), err error) {
	msgs := make(chan *link.Message, depth)
	if sess, err = connect(ctx, m, map[string]chan *link.Message{topic: msgs}); err != nil {
		return nil, nil, nil, err
	}
	router = &ackRouter{waiters: map[string]chan command.Ack{}}
	stop := make(chan struct{})
	go router.route(msgs, stop)
	return sess, router, func() { close(stop); sess.close() }, nil
}

// ackRouter hands each ack to the waiter of its tid.
type ackRouter struct {
	mu      sync.Mutex
	waiters map[string]chan command.Ack
}

func (r *ackRouter) register(tid string) chan command.Ack {
	r.mu.Lock()
	defer r.mu.Unlock()
	ch := make(chan command.Ack, 64)
	r.waiters[tid] = ch
	return ch
}

func (r *ackRouter) route(msgs <-chan *link.Message, done <-chan struct{}) {
	for {
		select {
		case m := <-msgs:
			var a command.Ack
			if json.Unmarshal(m.Payload, &a) != nil {
				continue
			}
			r.mu.Lock()
			ch := r.waiters[a.TID]
			r.mu.Unlock()
			if ch != nil {
				select {
				case ch <- a:
				default:
				}
			}
		case <-done:
			return
		}
	}
}

func runCommandSend(e *env, args []string) error {
	fs := flag.NewFlagSet("", flag.ContinueOnError)
	var m mqttFlags
	m.register(fs)
	var o sendOptions
	tid := fs.String("tid", "", "transaction id (default: a fresh one); resend a tid to ask for its result")
	fs.IntVar(&o.tries, "tries", 5, "how many times to send before giving up")
	fs.DurationVar(&o.backoff, "backoff", 2*time.Second, "first wait for an answer; doubles each try")
	fs.DurationVar(&o.maxWait, "max-backoff", 30*time.Second, "longest wait between tries")
	fs.DurationVar(&o.heartbeatTimeout, "heartbeat-timeout", 35*time.Second, "fail when no RUNNING heartbeat comes for this long")
	fs.DurationVar(&o.expires, "expires", 0, "the gateway must not start the command after this long (expires_at)")
	things := fs.String("things", "", "fleet rollout: a file with one thing per line, or a,b,c")
	rate := fs.Int("rate", 60, "fleet rollout: things started per minute")
	abortAfter := fs.Int("abort-after-failures", 0, "fleet rollout: start no more things after this many failures (0: never)")
	pos, err := parseArgs(fs, args)
	if err != nil {
		return err
	}
	var targets []string
	var cmdArgs []string
	var cmd string
	switch {
	case *things != "":
		if len(pos) < 1 {
			return usagef("takes CMD [key=value...] with --things")
		}
		targets, err = readThings(*things)
		if err != nil {
			return err
		}
		cmd, cmdArgs = pos[0], pos[1:]
		if *tid != "" {
			return usagef("--tid is for one thing; a rollout gives each thing its own tid")
		}
	default:
		if len(pos) < 2 {
			return usagef("takes THING CMD [key=value...]")
		}
		targets, cmd, cmdArgs = pos[:1], pos[1], pos[2:]
	}
	for _, t := range targets {
		if err := shadow.ValidateThingName(t); err != nil {
			return usagef("%v", err)
		}
	}
	if o.tries < 1 || o.backoff <= 0 || o.heartbeatTimeout <= 0 || *rate < 1 {
		return usagef("--tries, --backoff, --heartbeat-timeout and --rate must be positive")
	}
	argv, err := parseAssignments(cmdArgs)
	if err != nil {
		return err
	}
	sess, router, done, err := connectAcks(e.ctx, &m, "commands/+/ack", 4096)
	if err != nil {
		return err
	}
	defer done()

	if len(targets) == 1 && *things == "" {
		id := *tid
		if id == "" {
			id = randomHex(8)
		}
		acks := router.register(id)
		fmt.Fprintf(e.stderr, "%s %s tid=%s\n", targets[0], cmd, id)
		out := sendOne(e.ctx, sess, acks, targets[0], cmd, id, argv, o, func(s string) { fmt.Fprintf(e.stderr, "  %s\n", s) })
		return report(e, &m, out)
	}
	return rollout(e, &m, sess, router, targets, cmd, argv, o, *rate, *abortAfter)
}

func readThings(spec string) ([]string, error) {
	var out []string
	if f, err := os.Open(spec); err == nil {
		defer f.Close()
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			if l := strings.TrimSpace(sc.Text()); l != "" && !strings.HasPrefix(l, "#") {
				out = append(out, l)
			}
		}
		if err := sc.Err(); err != nil {
			return nil, usagef("--things %s: %v", spec, err)
		}
	} else if strings.ContainsAny(spec, "/.") && !strings.Contains(spec, ",") {
		return nil, usagef("--things %s: %v", spec, err)
	} else {
		for _, t := range strings.Split(spec, ",") {
			if t = strings.TrimSpace(t); t != "" {
				out = append(out, t)
			}
		}
	}
	if len(out) == 0 {
		return nil, usagef("--things %s names no things", spec)
	}
	return out, nil
}

func report(e *env, m *mqttFlags, out outcome) error {
	if m.JSON {
		printJSON(e.stdout, out)
	} else {
		fmt.Fprintf(e.stdout, "%s %s", out.TID, out.Status)
		if out.Reason != "" {
			fmt.Fprintf(e.stdout, ": %s", out.Reason)
		}
		if out.Result != nil {
			fmt.Fprintf(e.stdout, " %s", compact(out.Result))
		}
		fmt.Fprintf(e.stdout, " (%s)\n", out.Took.Round(time.Millisecond))
		if out.unanswered {
			fmt.Fprintln(e.stderr, giveUpNote(out))
		}
	}
	switch out.Status {
	case command.StatusSuccess:
		return nil
	case statusGaveUp:
		return &exitError{code: ExitNoDaemon}
	}
	return &exitError{code: ExitFailure}
}

// rollout sends one command to many things at a steady rate, with a
// progress line and a summary table.
func rollout(e *env, m *mqttFlags, sess *session, router *ackRouter, things []string, cmd string, args map[string]any, o sendOptions, rate, abortAfter int) error {
	interval := time.Minute / time.Duration(rate)
	results := make([]outcome, len(things))
	var mu sync.Mutex
	var wg sync.WaitGroup
	done, failures, started := 0, 0, 0
	bar := func() {
		mu.Lock()
		defer mu.Unlock()
		const width = 30
		filled := width * done / len(things)
		fmt.Fprintf(e.stderr, "\r[%s%s] %d/%d done, %d failed, %d running ", strings.Repeat("#", filled), strings.Repeat(".", width-filled), done, len(things), failures, started-done)
	}
	tick := time.NewTicker(interval)
	defer tick.Stop()
	aborted := false
	for i, thing := range things {
		mu.Lock()
		stopNow := abortAfter > 0 && failures >= abortAfter
		mu.Unlock()
		if stopNow {
			aborted = true
			for j := i; j < len(things); j++ {
				results[j] = outcome{Thing: things[j], Status: "NOT SENT", Reason: fmt.Sprintf("rollout aborted after %d failures", abortAfter)}
			}
			break
		}
		if i > 0 {
			select {
			case <-tick.C:
			case <-e.ctx.Done():
				aborted = true
			}
		}
		if aborted {
			for j := i; j < len(things); j++ {
				results[j] = outcome{Thing: things[j], Status: "NOT SENT", Reason: "interrupted"}
			}
			break
		}
		tid := randomHex(8)
		acks := router.register(tid)
		mu.Lock()
		started++
		mu.Unlock()
		wg.Add(1)
		go func() {
			defer wg.Done()
			out := sendOne(e.ctx, sess, acks, thing, cmd, tid, args, o, func(string) {})
			mu.Lock()
			results[i] = out
			done++
			if out.Status != command.StatusSuccess {
				failures++
			}
			mu.Unlock()
			bar()
		}()
		bar()
	}
	wg.Wait()
	fmt.Fprintln(e.stderr)
	if m.JSON {
		printJSON(e.stdout, results)
	} else {
		tw := tabwriter.NewWriter(e.stdout, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "THING\tTID\tSTATUS\tTOOK\tREASON")
		for _, r := range results {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", r.Thing, r.TID, r.Status, r.Took.Round(time.Millisecond), r.Reason)
		}
		tw.Flush()
	}
	ok := 0
	for _, r := range results {
		if r.Status == command.StatusSuccess {
			ok++
		}
	}
	fmt.Fprintf(e.stderr, "%d of %d succeeded\n", ok, len(things))
	gaveUp := 0
	for _, r := range results {
		if r.Status == statusGaveUp {
			gaveUp++
		}
	}
	if gaveUp > 0 {
		fmt.Fprintf(e.stderr, "%d gave up: their requests are not withdrawn and may still run when those things come back; stop each with shadowctl command cancel THING TID\n", gaveUp)
	}
	if ok < len(things) {
		return &exitError{code: ExitFailure}
	}
	return nil
}

func operatorCommands() []cliCommand {
	return []cliCommand{
		{"shadow get", "print a thing's shadow (classic or --name)", "shadowctl shadow get THING [--name SHADOW] [--broker URL ...]\n\nExample:\n  shadowctl shadow get gw-0001 --name doors",
			shadowCommand(shadow.OpGet)},
		{"shadow update", "set desired (or --reported) state of a thing's shadow",
			"shadowctl shadow update THING [--name SHADOW] [--reported] [--version N] key=value... | --file doc.json\n\nDotted keys build objects; values are JSON where they parse as JSON.\n\nExamples:\n  shadowctl shadow update gw-0001 porch_light.on=true\n  shadowctl shadow update gw-0001 --name doors front_door.locked=false\n  shadowctl shadow update gw-0001 --file desired.json",
			shadowCommand(shadow.OpUpdate)},
		{"shadow delete", "delete a thing's shadow", "shadowctl shadow delete THING [--name SHADOW] [--version N]", shadowCommand(shadow.OpDelete)},
		{"shadow watch", "print every shadow message and the presence of a thing", "shadowctl shadow watch THING [--name SHADOW] [--json]\n\nExample:\n  shadowctl shadow watch gw-0001",
			runShadowWatch},
		{"command send", "send a command and follow it to SUCCESS or FAILURE (or roll it out to a fleet)",
			"shadowctl command send THING CMD [key=value...] [--tid T] [--tries 5] [--backoff 2s] [--heartbeat-timeout 35s] [--expires 10m]\n" +
				"       shadowctl command send --things FILE|a,b,c CMD [key=value...] [--rate N] [--abort-after-failures N]\n\n" +
				"The request is sent again with the same tid on a doubling backoff until the gateway answers; RUNNING\nheartbeats are shown as they come. Exit 0 on SUCCESS, 1 on FAILURE (or heartbeats stopping), 3 when\nno answer came at all. Giving up does not withdraw the request: the broker keeps it, and the gateway\nruns it when it comes back (before --expires, if given). 'shadowctl command cancel THING TID' stops it.\n\nExamples:\n  shadowctl command send gw-0001 MOTOR_1_ON\n  shadowctl command send gw-0001 SET_SPEED speed=40\n  shadowctl command send gw-0001 ROLLBACK actuator=gate_motor steps=2\n  shadowctl command send --things fleet.txt --rate 30 --abort-after-failures 3 MOTOR_1_OFF",
			runCommandSend},
		{"command cancel", "withdraw a command by its tid: it never runs if it has not started",
			"shadowctl command cancel THING TID [--tries 5] [--backoff 2s] [--heartbeat-timeout 35s]\n\n" +
				"Sends {\"tid\":TID,\"status\":\"CANCEL\"} on commands/THING, again with the same tid on a doubling backoff\n" +
				"until the gateway answers (like command send). The gateway keeps the cancel like a request:\n" +
				"  CANCELED          the command had not started (queued, awaiting approval, or not arrived yet):\n" +
				"                    it ends FAILURE canceled and never runs, also if its request arrives later\n" +
				"  ALREADY FINISHED  it ended before the cancel arrived: its recorded result (a cancel cannot undo it;\n" +
				"                    ROLLBACK is the way back)\n" +
				"  TOO LATE          it was running: its result, once it has one\n" +
				"Exit 0 when CANCELED, 1 otherwise, 3 when no answer came (the broker keeps the cancel for the gateway).\n\n" +
				"Example:\n  shadowctl command cancel gw-0001 3f9a0c1e22b4d5e6",
			runCommandCancel},
	}
}
