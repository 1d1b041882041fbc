package ctl

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/shadowgate/shadowgate/agent/command"
	"github.com/shadowgate/shadowgate/agent/shadow"
)

// Outcomes of command cancel.
const (
	cancelCanceled    = "CANCELED"         // the command will never run
	cancelFinished    = "ALREADY FINISHED" // it ended before the cancel arrived
	cancelTooLate     = "TOO LATE"         // it was running; its result follows
	cancelNotCanceled = "NOT CANCELED"     // the gateway could not record the cancel
)

// cancelResult is how a cancel ended, for the operator.
type cancelResult struct {
	Thing   string `json:"thing"`
	TID     string `json:"tid"`
	Outcome string `json:"outcome"` // CANCELED, ALREADY FINISHED, TOO LATE, NOT CANCELED, GAVE UP
	// Ack is the gateway's answer: the command's final ack when it has
	// one (FAILURE canceled, or the result it had already).
	Ack    *command.Ack  `json:"ack,omitempty"`
	Reason string        `json:"reason,omitempty"`
	Tries  int           `json:"tries"`
	Took   time.Duration `json:"took_ns"`
}

func runCommandCancel(e *env, args []string) error {
	fs := flag.NewFlagSet("", flag.ContinueOnError)
	var m mqttFlags
	m.register(fs)
	var o sendOptions
	fs.IntVar(&o.tries, "tries", 5, "how many times to send the cancel before giving up")
	fs.DurationVar(&o.backoff, "backoff", 2*time.Second, "first wait for an answer; doubles each try")
	fs.DurationVar(&o.maxWait, "max-backoff", 30*time.Second, "longest wait between tries")
	fs.DurationVar(&o.heartbeatTimeout, "heartbeat-timeout", 35*time.Second, "too late to cancel: stop following the command when no RUNNING heartbeat comes for this long")
	pos, err := parseArgs(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 2 {
		return usagef("takes THING TID")
	}
	thing, tid := pos[0], pos[1]
	if err := shadow.ValidateThingName(thing); err != nil {
		return usagef("%v", err)
	}
	if len(tid) == 0 || len(tid) > command.MaxTIDLen || strings.ContainsFunc(tid, func(r rune) bool { return r < 0x21 || r > 0x7e }) {
		return usagef("tid %q must be 1 to %d printable characters, as command send gave it", tid, command.MaxTIDLen)
	}
	if o.tries < 1 || o.backoff <= 0 || o.heartbeatTimeout <= 0 {
		return usagef("--tries, --backoff and --heartbeat-timeout must be positive")
	}
	sess, router, done, err := connectAcks(e.ctx, &m, command.AckTopic(thing), 1024)
	if err != nil {
		return err
	}
	defer done()
	acks := router.register(tid)
	fmt.Fprintf(e.stderr, "%s cancel tid=%s\n", thing, tid)
	res := cancelOne(e.ctx, sess, acks, thing, tid, o, func(s string) { fmt.Fprintf(e.stderr, "  %s\n", s) })
	return reportCancel(e, &m, res)
}

// cancelOne sends a cancel and waits for the gateway's answer: resend with
// the same tid on a backoff schedule (a cancel is idempotent), give up
// after tries. Too late to cancel, it follows the command to its end.
func cancelOne(ctx context.Context, sess *session, acks <-chan command.Ack, thing, tid string, o sendOptions, progress func(string)) cancelResult {
	t0 := time.Now()
	res := cancelResult{Thing: thing, TID: tid}
	payload, _ := json.Marshal(map[string]string{"tid": tid, "status": command.StatusCancel})
	var answer command.Ack
	tries, answered := resend(ctx, sess, thing, payload, acks, o, sentLine(progress, "cancel sent", o.tries), func(a command.Ack) bool {
		if a.Status == command.StatusRunning && a.Reason != command.ReasonCancelTooLate {
			// A heartbeat, or the answer to a resent request: the
			// gateway has the command; the cancel's answer follows.
			progress(runningLine(a, t0) + "; waiting for the answer to the cancel")
			return false
		}
		answer = a
		return a.Status == command.StatusRunning || a.Status == command.StatusSuccess || a.Status == command.StatusFailure
	})
	res.Tries = tries
	done := func(outcome string, a command.Ack, reason string) cancelResult {
		res.Outcome, res.Ack, res.Reason, res.Took = outcome, &a, reason, time.Since(t0)
		return res
	}
	switch {
	case !answered:
		res.Outcome, res.Took = statusGaveUp, time.Since(t0)
		res.Reason = fmt.Sprintf("no answer after %d tries over %s", res.Tries, res.Took.Round(100*time.Millisecond))
		if ctx.Err() != nil {
			res.Reason = "interrupted before an answer"
		}
		return res
	case answer.Status == command.StatusFailure && answer.Reason == command.ReasonCanceled:
		return done(cancelCanceled, answer, "")
	case answer.Status == command.StatusFailure && strings.HasPrefix(answer.Reason, command.ReasonCancelNotRecorded):
		return done(cancelNotCanceled, answer, answer.Reason)
	case answer.Status == command.StatusRunning:
		progress("too late to cancel: the command is running; waiting for its result")
		return followTooLate(ctx, acks, res, t0, o, progress)
	}
	return done(cancelFinished, answer, "")
}

// followTooLate waits for the final ack of a command the cancel came too
// late for.
func followTooLate(ctx context.Context, acks <-chan command.Ack, res cancelResult, t0 time.Time, o sendOptions, progress func(string)) cancelResult {
	final, silent := awaitFinal(ctx, acks, o.heartbeatTimeout, func(a command.Ack) { progress(runningLine(a, t0)) })
	res.Outcome, res.Ack, res.Took = cancelTooLate, final, time.Since(t0)
	switch {
	case final != nil:
	case silent:
		res.Reason = fmt.Sprintf("it was running when the cancel arrived, and no RUNNING heartbeat came for %s since: its outcome is unknown; ask with shadowctl command cancel %s %s again", o.heartbeatTimeout, res.Thing, res.TID)
	default:
		res.Reason = "it was running when the cancel arrived (interrupted before its result)"
	}
	return res
}

func reportCancel(e *env, m *mqttFlags, res cancelResult) error {
	if m.JSON {
		printJSON(e.stdout, res)
	} else {
		fmt.Fprintf(e.stdout, "%s %s", res.TID, res.Outcome)
		switch {
		case res.Outcome == cancelCanceled:
			fmt.Fprint(e.stdout, ": the gateway will not run it (its final ack is FAILURE canceled)")
		case res.Ack != nil:
			fmt.Fprintf(e.stdout, ": %s", res.Ack.Status)
			if res.Ack.Reason != "" {
				fmt.Fprintf(e.stdout, ": %s", res.Ack.Reason)
			}
			if res.Ack.Result != nil {
				fmt.Fprintf(e.stdout, " %s", compact(res.Ack.Result))
			}
		case res.Reason != "":
			fmt.Fprintf(e.stdout, ": %s", res.Reason)
		}
		fmt.Fprintf(e.stdout, " (%s)\n", res.Took.Round(time.Millisecond))
		if note := cancelNote(res); note != "" {
			fmt.Fprintln(e.stderr, note)
		}
	}
	switch res.Outcome {
	case cancelCanceled:
		return nil
	case statusGaveUp:
		return &exitError{code: ExitNoDaemon}
	}
	return &exitError{code: ExitFailure}
}

// cancelNote explains an outcome other than CANCELED: what happened, and
// the way back where there is one.
func cancelNote(res cancelResult) string {
	var b strings.Builder
	switch res.Outcome {
	case cancelFinished, cancelTooLate:
		if res.Ack == nil {
			fmt.Fprintf(&b, "The command was running when the cancel arrived; a cancel cannot stop or undo it.")
			break
		}
		if res.Outcome == cancelTooLate {
			fmt.Fprintf(&b, "The command was already running when the cancel arrived, and it ran to its end (%s).\n", res.Ack.Status)
		} else {
			fmt.Fprintf(&b, "The command had already ended (%s) when the cancel arrived; nothing was canceled.\n", res.Ack.Status)
		}
		fmt.Fprintf(&b, "A cancel cannot undo what a command did. ROLLBACK is the way back:")
		acts := slices.Sorted(maps.Keys(res.Ack.Result))
		if len(acts) == 0 {
			fmt.Fprintf(&b, "\n  shadowctl command send %s ROLLBACK actuator=ACTUATOR   (shadowctl history on the gateway shows what changed)", res.Thing)
		}
		for _, a := range acts {
			fmt.Fprintf(&b, "\n  shadowctl command send %s ROLLBACK actuator=%s   (undoes %s's last change; shadowctl history %s on the gateway shows it)", res.Thing, a, a, a)
		}
	case cancelNotCanceled:
		fmt.Fprintf(&b, "The gateway did not record the cancel. If the request arrives later it is not held back; try again once\nthe gateway's inbox has room (shadowctl status on the gateway shows it).")
	case statusGaveUp:
		fmt.Fprintf(&b, "The cancel is not lost: the broker keeps it for %s, as it keeps the request. When %s comes back it reads\n", res.Thing, res.Thing)
		fmt.Fprintf(&b, "both, and it starts no command until that backlog has arrived, so the request is canceled before it runs\n")
		fmt.Fprintf(&b, "(unless the broker's session for %s has expired: then neither arrives). To learn the outcome, ask again:\n", res.Thing)
		fmt.Fprintf(&b, "  shadowctl command cancel %s %s", res.Thing, res.TID)
	}
	return b.String()
}
