package ctl

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/iot"
	"github.com/aws/aws-sdk-go-v2/service/iot/types"
)

// ExitInterrupted is watch's code when it was stopped (Ctrl-C) before the
// job ended.
const ExitInterrupted = 130

func runJobWatch(e *env, args []string) error {
	fs := flag.NewFlagSet("", flag.ContinueOnError)
	var f iotFlags
	f.register(fs)
	interval := fs.Duration("interval", defaultWatchPeriod, "how often to ask for the job's progress")
	id, err := oneJobID(fs, args)
	if err != nil {
		return err
	}
	if *interval <= 0 {
		return usagef("--interval must be positive")
	}
	c, err := f.client(e.ctx)
	if err != nil {
		return err
	}
	return watchJob(e, c, id, *interval, f.json)
}

// counts are a job's things by the status of their latest execution
// (DescribeJob's jobProcessDetails).
type counts struct {
	queued, inProgress, succeeded, failed, rejected, timedOut, canceled, removed int
}

func countsOf(p *types.JobProcessDetails) counts {
	if p == nil {
		return counts{}
	}
	n := func(v *int32) int { return int(aws.ToInt32(v)) }
	return counts{n(p.NumberOfQueuedThings), n(p.NumberOfInProgressThings), n(p.NumberOfSucceededThings), n(p.NumberOfFailedThings),
		n(p.NumberOfRejectedThings), n(p.NumberOfTimedOutThings), n(p.NumberOfCanceledThings), n(p.NumberOfRemovedThings)}
}

func (c counts) total() int { return c.queued + c.inProgress + c.ended() }
func (c counts) ended() int {
	return c.succeeded + c.failed + c.rejected + c.timedOut + c.canceled + c.removed
}
func (c counts) bad() int { return c.failed + c.rejected + c.timedOut }

// line is every count, the zero ones of the rarer statuses left out.
func (c counts) line() string {
	parts := []string{fmt.Sprintf("queued %d", c.queued), fmt.Sprintf("in progress %d", c.inProgress), fmt.Sprintf("succeeded %d", c.succeeded), fmt.Sprintf("failed %d", c.failed)}
	for _, x := range []struct {
		name string
		n    int
	}{{"rejected", c.rejected}, {"timed out", c.timedOut}, {"canceled", c.canceled}, {"removed", c.removed}} {
		if x.n > 0 {
			parts = append(parts, fmt.Sprintf("%s %d", x.name, x.n))
		}
	}
	return strings.Join(parts, " · ")
}

// bar draws the counts in width cells: # succeeded, x failed, rejected
// or timed out, - canceled or removed, > in progress, . queued.
func (c counts) bar(width int) string {
	total := c.total()
	if total == 0 {
		return "[" + strings.Repeat(" ", width) + "]"
	}
	var b strings.Builder
	b.WriteByte('[')
	acc, drawn := 0, 0
	for _, seg := range []struct {
		n  int
		ch string
	}{{c.succeeded, "#"}, {c.bad(), "x"}, {c.canceled + c.removed, "-"}, {c.inProgress, ">"}, {c.queued, "."}} {
		acc += seg.n
		upto := acc * width / total
		b.WriteString(strings.Repeat(seg.ch, upto-drawn))
		drawn = upto
	}
	b.WriteByte(']')
	return b.String()
}

// isTerminal is whether w is a terminal (a progress bar redraws in place).
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}

// watchJob polls DescribeJob every interval (and the executions when the
// counts move) until the job ends, drawing its progress.
func watchJob(e *env, c *iotClient, id string, interval time.Duration, asJSON bool) error {
	tty := !asJSON && isTerminal(e.stdout)
	seen := map[string]string{} // thing → its latest execution's "STATUS #n"
	lastKey := ""
	failing := 0 // polls in a row that failed
	var s *snapshot
	interrupted := func() error {
		if tty {
			fmt.Fprintln(e.stdout)
		}
		return &exitError{code: ExitInterrupted, msg: fmt.Sprintf("stopped watching job %s; it goes on (shadowctl job watch %s)", id, id)}
	}
	for first := true; ; first = false {
		if !first {
			t := time.NewTimer(interval)
			select {
			case <-e.ctx.Done():
				t.Stop()
				return interrupted()
			case <-t.C:
			}
		}
		j, raw, err := c.describeJob(e, id)
		if err != nil && e.ctx.Err() != nil {
			return interrupted()
		}
		if err != nil {
			var ee *exitError
			if first || errors.Is(err, context.Canceled) || (!errors.As(err, &ee) && !transient(err)) {
				return err
			}
			if failing++; failing == 1 || failing%10 == 0 {
				fmt.Fprintf(e.stderr, "\nshadowctl job watch: %v (trying again every %s)\n", err, interval)
			}
			continue
		}
		failing = 0
		n := countsOf(j.JobProcessDetails)
		key := fmt.Sprintf("%s %+v", j.Status, n)
		if key != lastKey {
			lastKey = key
			s = &snapshot{job: j, raw: raw}
			if err := c.executions(e, s); err != nil {
				if e.ctx.Err() != nil {
					return interrupted()
				}
				lastKey = "" // again next time
				fmt.Fprintf(e.stderr, "\nshadowctl job watch: %v\n", err)
				continue
			}
			switch {
			case asJSON:
				job, _ := rawField(raw, "job")
				line, _ := json.Marshal(map[string]any{"job": job, "executionSummaries": nonNil(s.rawExecs)})
				fmt.Fprintln(e.stdout, string(line))
			default:
				for _, ch := range changes(seen, s.execs) {
					if tty {
						fmt.Fprint(e.stdout, "\r\033[K")
					}
					fmt.Fprintln(e.stdout, "  "+ch)
				}
				if !tty {
					fmt.Fprintf(e.stdout, "%s %s %s %d/%d ended  %s\n", id, j.Status, n.bar(20), n.ended(), n.total(), n.line())
				}
			}
		}
		if tty {
			fmt.Fprintf(e.stdout, "\r\033[K%s %s %s %d/%d ended  %s", id, j.Status, n.bar(30), n.ended(), n.total(), n.line())
		}
		if done, note := jobEnded(j, n); done {
			if tty {
				fmt.Fprintln(e.stdout)
			}
			return c.watchResult(e, s, n, note, asJSON)
		}
	}
}

// transient is whether a failed poll is worth trying again.
func transient(err error) bool {
	msg := err.Error()
	for _, code := range []string{"ThrottlingException", "ServiceUnavailableException", "InternalFailureException", "InternalException"} {
		if strings.HasPrefix(msg, code+":") {
			return true
		}
	}
	return false
}

// jobEnded is whether watching is over: the job completed, was canceled
// or is being deleted; a CONTINUOUS job (which never completes) once every
// execution so far has ended.
func jobEnded(j *types.Job, n counts) (bool, string) {
	switch j.Status {
	case types.JobStatusCompleted, types.JobStatusCanceled, types.JobStatusDeletionInProgress:
		if n.inProgress > 0 && j.Status == types.JobStatusCanceled {
			return true, fmt.Sprintf("%d execution(s) still IN_PROGRESS run to their end (job cancel --force stops them)", n.inProgress)
		}
		return true, ""
	}
	if j.TargetSelection == types.TargetSelectionContinuous && n.total() > 0 && n.queued == 0 && n.inProgress == 0 {
		return true, "every execution so far has ended; the CONTINUOUS job stays IN_PROGRESS for things that join its groups later"
	}
	return false, ""
}

// changes are the executions whose status moved since seen, as lines.
func changes(seen map[string]string, execs []types.JobExecutionSummaryForJob) []string {
	var out []string
	for _, x := range execs {
		s := x.JobExecutionSummary
		if s == nil {
			continue
		}
		thing := thingOf(aws.ToString(x.ThingArn))
		now := fmt.Sprintf("%s #%d", s.Status, aws.ToInt64(s.ExecutionNumber))
		if seen[thing] == now {
			continue
		}
		seen[thing] = now
		out = append(out, fmt.Sprintf("%s %s  %s", time.Now().Format("15:04:05"), thing, now))
	}
	return out
}

// watchResult prints how the job ended and makes it the exit code: the
// statusDetails of the executions that did not succeed, then 1 when the
// job was canceled or any execution failed, was rejected or timed out.
func (c *iotClient) watchResult(e *env, s *snapshot, n counts, note string, asJSON bool) error {
	j := s.job
	id := aws.ToString(j.JobId)
	if !asJSON {
		fmt.Fprintf(e.stdout, "job %s %s: %s\n", id, j.Status, n.line())
		shown := 0
		for _, x := range s.execs {
			st := x.JobExecutionSummary
			if st == nil || (st.Status != types.JobExecutionStatusFailed && st.Status != types.JobExecutionStatusRejected && st.Status != types.JobExecutionStatusTimedOut) {
				continue
			}
			if shown++; shown > 20 {
				fmt.Fprintf(e.stdout, "  … (shadowctl job describe %s lists them all)\n", id)
				break
			}
			thing := thingOf(aws.ToString(x.ThingArn))
			d, err := c.api.DescribeJobExecution(e.ctx, &iot.DescribeJobExecutionInput{JobId: j.JobId, ThingName: aws.String(thing), ExecutionNumber: st.ExecutionNumber})
			details := ""
			if err == nil && d.Execution != nil && d.Execution.StatusDetails != nil {
				details = compact(d.Execution.StatusDetails.DetailsMap)
			}
			fmt.Fprintf(e.stdout, "  %s %s %s\n", thing, st.Status, details)
		}
		if note != "" {
			fmt.Fprintln(e.stdout, note)
		}
	}
	switch {
	case j.Status == types.JobStatusCanceled:
		return &exitError{code: ExitFailure, msg: fmt.Sprintf("job %s was canceled (%s)", id, cancelWhy(j))}
	case n.bad() > 0:
		return &exitError{code: ExitFailure, msg: fmt.Sprintf("job %s: %d of %d things did not succeed (failed %d, rejected %d, timed out %d)", id, n.bad(), n.total(), n.failed, n.rejected, n.timedOut)}
	}
	return nil
}
