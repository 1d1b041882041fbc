package ctl

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/shadowgate/shadowgate/agent/config"
	"github.com/shadowgate/shadowgate/agent/localapi"
	"github.com/shadowgate/shadowgate/agent/resident"
	"github.com/shadowgate/shadowgate/store"
)

// DefaultSocket is the daemon's API socket when neither --socket nor
// SHADOWGATE_SOCKET nor the config file says otherwise.
const DefaultSocket = config.DefaultSocket

// localFlags are the flags every gateway command takes.
type localFlags struct {
	socket     string
	json       bool
	configFile string
}

func (f *localFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&f.socket, "socket", "", "the `path` of the daemon's API socket (default: $SHADOWGATE_SOCKET, the settings file's, api.socket of "+DefaultConfigPath+" or "+DefaultSocket+", else the demo's "+DemoSocket+")")
	fs.BoolVar(&f.json, "json", false, "print JSON instead of a table")
	fs.StringVar(&f.configFile, "config", "", settingsUsage)
}

// settingsUsage describes --config, for the gateway and the MQTT commands.
const settingsUsage = "settings `file`: shadowctl's (default ~/.config/shadowgate/shadowctl.yaml; keys as the flags: socket, broker, topic_root, ca, …) or a gateway's configuration (its api.socket, broker and topic root)"

// apiClient talks to the daemon's local API.
type apiClient struct {
	target socketTarget
	also   []socketTarget // tried before, for the error message
	http   *http.Client
}

func newAPIClient(t socketTarget, also []socketTarget) *apiClient {
	return &apiClient{target: t, also: also, http: &http.Client{
		Timeout: 90 * time.Second,
		// A connection per request (a unix socket's connect is cheap): none
		// stays open idle after Main returns in a process that goes on
		// (tests), holding goroutines here and in the daemon.
		Transport: &http.Transport{DisableKeepAlives: true, DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", t.path)
		}},
	}}
}

// call does one request; a daemon that cannot be reached is an exitError
// with ExitNoDaemon saying which socket was tried, why it failed, and what
// to check.
func (c *apiClient) call(ctx context.Context, method, path string, body, out any) error {
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, "http://shadowgated"+path, rd)
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := c.http.Do(req)
	if err != nil {
		var op *net.OpError
		if ctx.Err() != nil || !errors.As(err, &op) || op.Op != "dial" {
			return &exitError{code: ExitNoDaemon, msg: fmt.Sprintf("shadowgated at %s did not answer: %v", c.target, unwrapURL(err))}
		}
		return &exitError{code: ExitNoDaemon, msg: dialProblem(c.target, c.also, unwrapURL(err))}
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return fmt.Errorf("read response: %w", err)
	}
	if resp.StatusCode >= 300 {
		var eb localapi.ErrorBody
		if json.Unmarshal(data, &eb) == nil && eb.Error.Message != "" {
			return &exitError{code: ExitFailure, msg: eb.Error.Message}
		}
		return &exitError{code: ExitFailure, msg: fmt.Sprintf("daemon answered %s", resp.Status)}
	}
	if out != nil {
		dec := json.NewDecoder(bytes.NewReader(data))
		dec.UseNumber()
		return dec.Decode(out)
	}
	return nil
}

func unwrapURL(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err
	}
	return err
}

// localCommand builds a gateway command: it parses flags (including
// extra ones registered by setup) and calls run with the positional args.
func localCommand(setup func(fs *flag.FlagSet), run func(e *env, f *localFlags, c *apiClient, args []string) error) func(*env, []string) error {
	return func(e *env, args []string) error {
		fs := flag.NewFlagSet("", flag.ContinueOnError)
		var f localFlags
		f.register(fs)
		if setup != nil {
			setup(fs)
		}
		pos, err := parseArgs(fs, args)
		if err != nil {
			return err
		}
		t, also, err := f.target()
		if err != nil {
			return err
		}
		return run(e, &f, newAPIClient(t, also), pos)
	}
}

func noArgs(args []string) error {
	if len(args) > 0 {
		return usagef("takes no arguments, got %q", strings.Join(args, " "))
	}
	return nil
}

func runStatus(e *env, f *localFlags, c *apiClient, args []string) error {
	if err := noArgs(args); err != nil {
		return err
	}
	var st localapi.Status
	if err := c.call(e.ctx, "GET", "/v1/status", nil, &st); err != nil {
		return err
	}
	if f.json {
		return printJSON(e.stdout, st)
	}
	link := "offline"
	if st.Connected {
		link = "connected"
	}
	tw := tabwriter.NewWriter(e.stdout, 0, 0, 2, ' ', 0)
	row := func(k, v string) { fmt.Fprintf(tw, "%s\t%s\n", k, v) }
	row("thing", st.Thing)
	row("version", st.Version)
	row("link", fmt.Sprintf("%s to %s", link, st.Broker))
	if !st.LastConnect.IsZero() {
		row("last connect", fmt.Sprintf("%s (%d connects)", st.LastConnect.Local().Format(time.DateTime), st.Connects))
	}
	if st.LastError != "" {
		row("last error", st.LastError)
	}
	row("messages", fmt.Sprintf("%d published, %d received", st.Published, st.Received))
	row("outbox", fmt.Sprintf("%d waiting (%d bytes), %d sent, %d dropped", st.OutboxItems, st.OutboxBytes, st.OutboxSent, st.OutboxDropped))
	cmds := fmt.Sprintf("%d pending, %d executed, %d unreadable, %d too large", st.PendingCmds, st.CommandsStats.Executed, st.CommandsStats.Malformed, st.CommandsStats.TooLarge)
	if st.CommandsStats.Held {
		cmds += "; waiting for the broker's backlog after the connect (a second of quiet)"
	}
	row("commands", cmds)
	in := st.CommandsStats.Inbox
	row("inbox", fmt.Sprintf("%d of %d commands, %d of %d bytes; %d refused (full); %d received not yet written", in.Items, in.MaxItems, in.Bytes, in.MaxBytes, in.Refused, st.CommandsStats.Unwritten))
	if j := st.Jobs; j != nil {
		line := j.State
		if j.State == "on" {
			line = fmt.Sprintf("on; %d received, %d succeeded, %d failed, %d rejected, %d ended in the cloud; %d statuses not yet accepted", j.Received, j.Succeeded, j.Failed, j.Rejected, j.EndedInCloud, j.Unsent)
			if j.Current != "" {
				line += "; in hand: " + j.Current
			}
		}
		row("jobs", line)
	}
	row("sync", fmt.Sprintf("%d applied, %d failed, %d stale deltas, %d conflicts, %d malformed", st.Sync.Applied, st.Sync.ApplyFailures, st.Sync.StaleDeltas, st.Sync.Conflicts, st.Sync.Malformed))
	row("shadow requests", fmt.Sprintf("%d awaiting an answer, %d sent again after no answer, %d retried after 429/5xx, %d refused; %d version gaps, %d safety-net fetches",
		st.Sync.InFlight, st.Sync.Resent, st.Sync.Retried, st.Sync.Rejected, st.Sync.Gaps, st.Sync.SafetyGets))
	row("actuators", strconv.Itoa(st.ActuatorsCount))
	row("store", fmt.Sprintf("%s (%d bytes; %d commits, %d bytes written since start)", st.StorePath, st.StoreBytes, st.StoreWrites.Commits, st.StoreWrites.Bytes))
	if w := st.StoreWrites; w.Refused != "" {
		row("disk", fmt.Sprintf("refuses writes since %s (%d commits refused): %s; commands and reports wait until it takes them",
			localTime(w.RefusedSince), w.Refusals, w.Refused))
	}
	if st.Clock != nil {
		row("clock", st.Clock.Summary())
	}
	row("memory", memoryLine(st.Memory))
	row("uptime", st.Uptime.String())
	return tw.Flush()
}

// memoryLine is the status's memory row: the resident memory, and what
// the daemon gave back once start-up was over.
func memoryLine(m resident.Stats) string {
	mb := func(b int64) string { return fmt.Sprintf("%.1f MB", float64(b)/(1<<20)) }
	line := fmt.Sprintf("%s resident (%s its own, %s of the binary and other mapped files", mb(m.Resident), mb(m.Anon), mb(m.File))
	if m.Shmem > 0 {
		line += fmt.Sprintf(", %s of files held in memory (tmpfs)", mb(m.Shmem))
	}
	line += ")"
	switch {
	case m.Released.IsZero():
		line += "; start-up's memory not given back yet"
	case m.Unreleased != "":
		line += fmt.Sprintf("; at %s start-up's heap was given back, the binary's pages not: %s", localTime(m.Released), m.Unreleased)
	default:
		line += fmt.Sprintf("; %s resident before start-up's memory was given back at %s", mb(m.Before.Resident), localTime(m.Released))
	}
	return line
}

func runActuators(e *env, f *localFlags, c *apiClient, args []string) error {
	if err := noArgs(args); err != nil {
		return err
	}
	var acts []localapi.ActuatorView
	if err := c.call(e.ctx, "GET", "/v1/actuators", nil, &acts); err != nil {
		return err
	}
	if f.json {
		return printJSON(e.stdout, acts)
	}
	tw := tabwriter.NewWriter(e.stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "ACTUATOR\tDRIVER\tSHADOW\tSTATE\tHEALTH")
	for _, a := range acts {
		health := "ok"
		if !a.Healthy {
			health = "ERROR: " + a.Error
		}
		sh := a.Shadow
		if sh == "" {
			sh = "(classic)"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s.%s\t%s\t%s\n", a.Name, a.Driver, sh, a.Key, compact(a.State), health)
	}
	return tw.Flush()
}

func runShadows(e *env, f *localFlags, c *apiClient, args []string) error {
	if err := noArgs(args); err != nil {
		return err
	}
	var sh []localapi.ShadowView
	if err := c.call(e.ctx, "GET", "/v1/shadows", nil, &sh); err != nil {
		return err
	}
	if f.json {
		return printJSON(e.stdout, sh)
	}
	tw := tabwriter.NewWriter(e.stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "SHADOW\tVERSION\tCONNECTED\tDESIRED\tREPORTED\tDELTA")
	for _, s := range sh {
		name := s.Name
		if name == "" {
			name = "(classic)"
		}
		fmt.Fprintf(tw, "%s\t%d\t%s\t%s\t%s\t%s\n", name, s.Version, connectedSince(s.Reported), compact(s.Desired), compact(s.Reported), compact(s.Delta))
	}
	return tw.Flush()
}

// connectedSince is what a shadow's reported state says of the gateway's
// presence ("yes since …", "no since …"), as the cloud's shadow service or
// IoT rule wrote it; "-" when it says nothing (a named shadow).
func connectedSince(reported map[string]any) string {
	c, ok := reported["connected"].(bool)
	if !ok {
		return "-"
	}
	out := "no"
	if c {
		out = "yes"
	}
	p, _ := reported["presence"].(map[string]any)
	if since, err := strconv.ParseInt(fmt.Sprint(p["since"]), 10, 64); err == nil && since > 0 {
		out += " since " + time.Unix(since, 0).Local().Format(time.DateTime)
	}
	if session, err := strconv.ParseUint(fmt.Sprint(p["session"]), 10, 64); err == nil {
		out += fmt.Sprintf(" (session %d)", session)
	}
	return out
}

func runHistory(e *env, f *localFlags, c *apiClient, args []string, n int) error {
	if len(args) > 1 {
		return usagef("takes at most one ACTUATOR")
	}
	q := url.Values{"n": {strconv.Itoa(n)}}
	if len(args) == 1 {
		q.Set("actuator", args[0])
	}
	var h []store.Change
	if err := c.call(e.ctx, "GET", "/v1/history?"+q.Encode(), nil, &h); err != nil {
		return err
	}
	if f.json {
		return printJSON(e.stdout, h)
	}
	if len(h) == 0 {
		fmt.Fprintln(e.stdout, "no changes recorded")
		return nil
	}
	tw := tabwriter.NewWriter(e.stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tTIME\tACTUATOR\tSOURCE\tBEFORE\tAFTER\tTID/GROUP")
	for _, ch := range h {
		ref := ch.TID
		if ch.Group != "" {
			ref = strings.TrimSpace(ref + " " + ch.Group)
		}
		if ref == "" {
			ref = "-"
		}
		at := ch.Time.Local().Format(time.DateTime)
		if ch.TimeUntrusted {
			at += " (clock not trusted)"
		}
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%s\t%s\n", ch.ID, at, ch.Actuator, ch.Source, compact(ch.Before), compact(ch.After), ref)
	}
	return tw.Flush()
}

func printChanges(e *env, f *localFlags, rs []localapi.ChangeResult) error {
	if f.json {
		return printJSON(e.stdout, rs)
	}
	for _, r := range rs {
		if !r.Changed {
			fmt.Fprintf(e.stdout, "%s: already %s, nothing changed\n", r.Actuator, compact(r.After))
			continue
		}
		fmt.Fprintf(e.stdout, "%s: %s → %s (history #%d)\n", r.Actuator, compact(r.Before), compact(r.After), r.HistoryID)
	}
	return nil
}

func runRollback(e *env, f *localFlags, c *apiClient, args []string, steps int, to uint64, group string) error {
	req := localapi.RollbackRequest{Steps: steps, To: to, Group: group}
	switch {
	case len(args) == 1:
		req.Actuator = args[0]
	case len(args) > 1:
		return usagef("takes one ACTUATOR")
	case to == 0 && group == "":
		return usagef("give an ACTUATOR, --to ID or --group G")
	}
	if steps != 0 && to != 0 {
		return usagef("give --steps or --to, not both")
	}
	var rs []localapi.ChangeResult
	if err := c.call(e.ctx, "POST", "/v1/rollback", req, &rs); err != nil {
		return err
	}
	return printChanges(e, f, rs)
}

func runSet(e *env, f *localFlags, c *apiClient, args []string) error {
	if len(args) < 2 {
		return usagef("takes ACTUATOR and at least one key=value")
	}
	state, err := parseAssignments(args[1:])
	if err != nil {
		return err
	}
	var r localapi.ChangeResult
	if err := c.call(e.ctx, "POST", "/v1/set", localapi.SetRequest{Actuator: args[0], State: state}, &r); err != nil {
		return err
	}
	return printChanges(e, f, []localapi.ChangeResult{r})
}

func runCommands(e *env, f *localFlags, c *apiClient, args []string, n int) error {
	if err := noArgs(args); err != nil {
		return err
	}
	var cmds []store.Command
	if err := c.call(e.ctx, "GET", "/v1/commands?n="+strconv.Itoa(n), nil, &cmds); err != nil {
		return err
	}
	if f.json {
		return printJSON(e.stdout, cmds)
	}
	if len(cmds) == 0 {
		fmt.Fprintln(e.stdout, "no commands")
		return nil
	}
	tw := tabwriter.NewWriter(e.stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "TID\tCMD\tSTATUS\tRECEIVED\tDETAIL")
	for _, cm := range cmds {
		detail := ""
		var ack struct{ Reason string }
		json.Unmarshal(cm.LastAck, &ack)
		detail = ack.Reason
		if cm.Approval == "pending" {
			detail = "awaiting approval: shadowctl approve " + cm.TID
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", cm.TID, cm.Cmd, cm.Status, cm.Received.Local().Format(time.DateTime), detail)
	}
	return tw.Flush()
}

func runDecide(approve bool) func(e *env, f *localFlags, c *apiClient, args []string) error {
	return func(e *env, f *localFlags, c *apiClient, args []string) error {
		if len(args) != 1 {
			return usagef("takes one TID")
		}
		verb := map[bool]string{true: "approve", false: "reject"}[approve]
		var out map[string]string
		if err := c.call(e.ctx, "POST", "/v1/commands/"+url.PathEscape(args[0])+"/"+verb, nil, &out); err != nil {
			return err
		}
		if f.json {
			return printJSON(e.stdout, out)
		}
		fmt.Fprintf(e.stdout, "%s: %s\n", args[0], out["decision"])
		return nil
	}
}

func runReload(e *env, f *localFlags, c *apiClient, args []string) error {
	if err := noArgs(args); err != nil {
		return err
	}
	var res localapi.ReloadResult
	if err := c.call(e.ctx, "POST", "/v1/reload", nil, &res); err != nil {
		var ee *exitError
		if errors.As(err, &ee) && ee.code == ExitFailure {
			ee.msg = "reload failed: " + ee.msg
		}
		return err
	}
	if f.json {
		return printJSON(e.stdout, res)
	}
	if len(res.Changes) == 0 {
		fmt.Fprintln(e.stdout, "the configuration file is what shadowgated runs; nothing changed")
		return nil
	}
	fmt.Fprintln(e.stdout, "reloaded; changed:")
	for _, c := range res.Changes {
		fmt.Fprintln(e.stdout, "  "+c)
	}
	return nil
}

func localCommands() []cliCommand {
	var histN, cmdN, steps int
	var to uint64
	var group string
	return []cliCommand{
		{"status", "the gateway's link, outbox, commands and store", "shadowctl status [--json] [--socket PATH]\n\nExample:\n  shadowctl status",
			localCommand(nil, runStatus)},
		{"actuators", "every actuator: driver, shadow key, state, health", "shadowctl actuators [--json]\n\nExample:\n  shadowctl actuators",
			localCommand(nil, runActuators)},
		{"shadows", "the gateway's replica of each shadow (connected, desired, reported, delta)", "shadowctl shadows [--json]\n\nCONNECTED is the presence the cloud records in the classic shadow (reported.connected\nand reported.presence: since when, the gateway's session): yes, no, or - when none.",
			localCommand(nil, runShadows)},
		{"history", "recorded changes, newest first", "shadowctl history [ACTUATOR] [-n N] [--json]\n\nExamples:\n  shadowctl history\n  shadowctl history gate_motor -n 5",
			localCommand(func(fs *flag.FlagSet) { fs.IntVar(&histN, "n", 20, "show the last `N` changes") },
				func(e *env, f *localFlags, c *apiClient, a []string) error { return runHistory(e, f, c, a, histN) })},
		{"rollback", "drive an actuator back to a recorded state (works offline)",
			"shadowctl rollback ACTUATOR [--steps N | --to ID]\n       shadowctl rollback --to ID\n       shadowctl rollback --group GROUP\n\nExamples:\n  shadowctl rollback porch_light             # undo the last change\n  shadowctl rollback gate_motor --steps 3    # undo the last three\n  shadowctl rollback --to 42                 # back to the state after history entry 42",
			localCommand(func(fs *flag.FlagSet) {
				fs.IntVar(&steps, "steps", 0, "undo the last N changes")
				fs.Uint64Var(&to, "to", 0, "back to the state right after history entry ID")
				fs.StringVar(&group, "group", "", "undo every change of a group")
			}, func(e *env, f *localFlags, c *apiClient, a []string) error {
				return runRollback(e, f, c, a, steps, to, group)
			})},
		{"set", "drive an actuator to a state at the gateway (recorded as source local)",
			"shadowctl set ACTUATOR key=value...\n\nValues are JSON where they parse as JSON (true, 40), strings otherwise.\n\nExamples:\n  shadowctl set porch_light on=true\n  shadowctl set gate_motor running=true speed=40",
			localCommand(nil, runSet)},
		{"commands", "commands in the inbox with their status", "shadowctl commands [-n N] [--json]",
			localCommand(func(fs *flag.FlagSet) { fs.IntVar(&cmdN, "n", 50, "show the last `N` commands") },
				func(e *env, f *localFlags, c *apiClient, a []string) error { return runCommands(e, f, c, a, cmdN) })},
		{"approve", "let a command (or job execution) that requires approval run", "shadowctl approve TID|JOB_ID\n\nExamples:\n  shadowctl approve 7f3c9e\n  shadowctl approve unlock-front    # a job awaiting approval (shadowctl jobs)", localCommand(nil, runDecide(true))},
		{"reject", "fail a command (or reject a job execution) that requires approval", "shadowctl reject TID|JOB_ID", localCommand(nil, runDecide(false))},
		jobsCommand(),
		{"reload", "check the config file and make the daemon use it", "shadowctl reload [--json]\n\nOnly what changed is rebuilt, beside the running parts, and swapped in once it started;\nactuators, the MQTT session and the embedded broker whose settings did not change keep\nrunning. An invalid file, or a part that cannot start (a port in use), changes nothing:\nthe reason is printed and the exit status is 1. Same as systemctl reload shadowgated.",
			localCommand(nil, runReload)},
	}
}
