package ctl

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"regexp"
	"strings"
	"text/tabwriter"
	"time"
	"unicode/utf8"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/iot"
	"github.com/aws/aws-sdk-go-v2/service/iot/types"

	"github.com/shadowgate/shadowgate/agent/shadow"
)

// shadowctl job …: AWS IoT Jobs for cloud operators, over the control
// plane's HTTP API (iot.go). Not to be confused with shadowctl jobs, the
// executions one gateway knows (its local API).

// Limits of CreateJob and CancelJob, as the AWS IoT API reference has
// them.
const (
	maxJobIDLen        = 64
	maxDocumentBytes   = 32 * 1024
	maxDescriptionLen  = 2028
	maxPerMinute       = 1000
	maxTimeoutMinutes  = 10080 // 7 days
	maxRetries         = 10
	maxReasonCodeLen   = 128
	defaultWatchPeriod = 2 * time.Second
)

var (
	jobIDPattern      = regexp.MustCompile(`^[a-zA-Z0-9_-]+$`)
	reasonCodePattern = regexp.MustCompile(`^[\p{Lu}\p{Nd}_]+$`)
)

func jobCommands() []cliCommand {
	return []cliCommand{
		{"job create", "create an AWS IoT job for things and thing groups (--watch follows it)",
			"shadowctl job create JOBID --targets THING,group:GROUP,... (--operation OP [--args JSON] | --document FILE|- | --template NAME) [flags]\n\n" +
				"--operation builds the gateway's job document {\"operation\":OP,\"args\":{...}}: OP is a command type of\n" +
				"the gateways' config (or ROLLBACK, CONFIG_UPDATE). A thing group's ARN is the one the service returns,\n" +
				"and thing ARNs take its region and account (else --region and --account).\n\n" +
				"Examples:\n" +
				"  shadowctl job create speed-40 --targets demo-gw --operation SET_SPEED --args '{\"speed\":40}' --watch\n" +
				"  shadowctl job create lights-off --targets group:porch --operation ALL_OFF --max-per-minute 10 \\\n" +
				"      --abort-failed-percent 30 --abort-min-things 5 --retry-failed 1 --timeout-minutes 10\n" +
				"  shadowctl job create reboot-7 --targets gw-1,gw-2 --document job.json",
			runJobCreate},
		{"job list", "list the AWS IoT jobs (--status to filter)",
			"shadowctl job list [--status IN_PROGRESS|COMPLETED|CANCELED|DELETION_IN_PROGRESS|SCHEDULED] [--json]\n\nExample:\n  shadowctl job list --status IN_PROGRESS",
			runJobList},
		{"job describe", "a job: its settings, counts of things by status, and its executions",
			"shadowctl job describe JOBID [--json]\n\nExample:\n  shadowctl job describe speed-40",
			runJobDescribe},
		{"job cancel", "cancel a job: its queued executions, with --force the ones in progress too",
			"shadowctl job cancel JOBID [--force] [--reason-code CODE] [--comment TEXT]\n\n" +
				"Without --force, executions already IN_PROGRESS run to their end; with it they are CANCELED and the\n" +
				"devices are told (a device may be left half-way: force with care).\n\n" +
				"Example:\n  shadowctl job cancel speed-40 --reason-code OPERATOR --comment \"wrong speed\"",
			runJobCancel},
		{"job watch", "follow a job's executions with a progress bar until it ends",
			"shadowctl job watch JOBID [--interval 2s] [--json]\n\n" +
				"Exit 0 when the job completed and every execution SUCCEEDED; 1 when it was canceled (or aborted) or an\n" +
				"execution FAILED, was REJECTED or TIMED_OUT; 130 when interrupted (the job goes on). Without a terminal,\n" +
				"one line per change; --json, one JSON object per change ({\"job\":…,\"executionSummaries\":[…]}, the API's\n" +
				"shapes), the last one final. A CONTINUOUS job never completes: watch ends when every execution so\n" +
				"far has ended.\n\n" +
				"Example:\n  shadowctl job watch speed-40",
			runJobWatch},
	}
}

// parseJobID checks a job id as CreateJob does.
func parseJobID(id string) error {
	if id == "" || len(id) > maxJobIDLen || !jobIDPattern.MatchString(id) {
		return usagef("job id %q must be 1 to %d letters, digits, '-' or '_'", id, maxJobIDLen)
	}
	return nil
}

// oneJobID parses a command that takes JOBID and flags.
func oneJobID(fs *flag.FlagSet, args []string) (string, error) {
	pos, err := parseArgs(fs, args)
	if err != nil {
		return "", err
	}
	if len(pos) != 1 {
		return "", usagef("takes one JOBID")
	}
	return pos[0], parseJobID(pos[0])
}

type createOptions struct {
	targets, document, operation, args, template, description string
	continuous, watch                                         bool
	perMinute, abortMin, timeoutMinutes, retryFailed          int
	retryTimedOut                                             int
	abortPercent                                              float64
	abortType                                                 string
	interval                                                  time.Duration
}

func runJobCreate(e *env, args []string) error {
	fs := flag.NewFlagSet("", flag.ContinueOnError)
	var f iotFlags
	f.register(fs)
	var o createOptions
	fs.StringVar(&o.targets, "targets", "", "comma-separated thing `names`, group:NAME for a thing group, or ARNs")
	fs.StringVar(&o.operation, "operation", "", "the gateway's `operation`: a command type of its config, ROLLBACK, CONFIG_UPDATE")
	fs.StringVar(&o.args, "args", "", "with --operation: its arguments, a JSON `object`")
	fs.StringVar(&o.document, "document", "", "the job document from this JSON `file` (- for stdin)")
	fs.StringVar(&o.template, "template", "", "create from this job template (`name` or ARN)")
	fs.StringVar(&o.description, "description", "", "a `text` describing the job")
	fs.BoolVar(&o.continuous, "continuous", false, "targetSelection CONTINUOUS: things that join the groups later get it too")
	fs.IntVar(&o.perMinute, "max-per-minute", 0, "rollout: at most `N` things notified per minute (1 to 1000)")
	fs.Float64Var(&o.abortPercent, "abort-failed-percent", 0, "abort (cancel the job) once this `percent` of executed things failed")
	fs.IntVar(&o.abortMin, "abort-min-things", 1, "abort only after this many `things` ended")
	fs.StringVar(&o.abortType, "abort-failure-type", "ALL", "`type` of failure that counts as failed for the abort: FAILED, REJECTED, TIMED_OUT or ALL")
	fs.IntVar(&o.timeoutMinutes, "timeout-minutes", 0, "an execution IN_PROGRESS this many `minutes` ends TIMED_OUT (1 to 10080)")
	fs.IntVar(&o.retryFailed, "retry-failed", 0, "retry a FAILED execution up to `N` times (0 to 10)")
	fs.IntVar(&o.retryTimedOut, "retry-timed-out", 0, "retry a TIMED_OUT execution up to `N` times (0 to 10)")
	fs.BoolVar(&o.watch, "watch", false, "then follow the job as job watch does (and exit as it does)")
	fs.DurationVar(&o.interval, "interval", defaultWatchPeriod, "with --watch: how often to ask")
	id, err := oneJobID(fs, args)
	if err != nil {
		return err
	}
	in, err := o.input(id)
	if err != nil {
		return err
	}
	c, err := f.client(e.ctx)
	if err != nil {
		return err
	}
	if in.Targets, err = c.resolveTargets(e, strings.Split(o.targets, ",")); err != nil {
		return err
	}
	if o.template != "" {
		arn, err := c.templateArn(e, o.template)
		if err != nil {
			return err
		}
		in.JobTemplateArn = aws.String(arn)
	}
	var raw []byte
	out, err := c.api.CreateJob(withRaw(e.ctx, &raw), in)
	if err != nil {
		return c.explain(err)
	}
	switch {
	case f.json && o.watch:
		fmt.Fprintln(e.stdout, string(compactJSON(raw)))
	case f.json:
		printRaw(e.stdout, raw)
	default:
		fmt.Fprintf(e.stdout, "created job %s (%s) for %d target(s)\n", aws.ToString(out.JobId), aws.ToString(out.JobArn), len(in.Targets))
	}
	if !o.watch {
		return nil
	}
	return watchJob(e, c, id, o.interval, f.json)
}

// input is the CreateJob request the flags describe (targets apart).
func (o *createOptions) input(id string) (*iot.CreateJobInput, error) {
	in := &iot.CreateJobInput{JobId: aws.String(id)}
	if strings.TrimSpace(strings.ReplaceAll(o.targets, ",", "")) == "" {
		return nil, usagef("give --targets: thing names, group:NAME, or ARNs, separated by commas")
	}
	n := 0
	for _, s := range []string{o.document, o.operation, o.template} {
		if s != "" {
			n++
		}
	}
	if n != 1 {
		return nil, usagef("give one of --operation OP, --document FILE or --template NAME")
	}
	if o.args != "" && o.operation == "" {
		return nil, usagef("--args goes with --operation (a --document holds its own)")
	}
	switch {
	case o.operation != "":
		if strings.ContainsFunc(o.operation, func(r rune) bool { return r <= ' ' }) {
			return nil, usagef("--operation %q: a command type has no spaces", o.operation)
		}
		doc := map[string]any{"operation": o.operation}
		if o.args != "" {
			var a map[string]any
			dec := json.NewDecoder(strings.NewReader(o.args))
			dec.UseNumber()
			if err := dec.Decode(&a); err != nil || dec.More() {
				return nil, usagef("--args %s: not a JSON object (e.g. '{\"speed\":40}')", o.args)
			}
			doc["args"] = a
		}
		b, _ := json.Marshal(doc)
		in.Document = aws.String(string(b))
	case o.document != "":
		var b []byte
		var err error
		if o.document == "-" {
			b, err = io.ReadAll(io.LimitReader(os.Stdin, maxDocumentBytes+1))
		} else {
			b, err = os.ReadFile(o.document)
		}
		if err != nil {
			return nil, usagef("--document: %v", err)
		}
		var v map[string]any
		if err := json.Unmarshal(b, &v); err != nil {
			return nil, usagef("--document %s: not a JSON object: %v", o.document, err)
		}
		if len(b) > maxDocumentBytes {
			return nil, usagef("--document %s: over %d bytes, the most a job document may hold", o.document, maxDocumentBytes)
		}
		in.Document = aws.String(string(b))
	}
	if o.description != "" {
		if utf8.RuneCountInString(o.description) > maxDescriptionLen {
			return nil, usagef("--description: at most %d characters", maxDescriptionLen)
		}
		in.Description = aws.String(o.description)
	}
	if o.continuous {
		in.TargetSelection = types.TargetSelectionContinuous
	}
	if o.perMinute != 0 {
		if o.perMinute < 1 || o.perMinute > maxPerMinute {
			return nil, usagef("--max-per-minute %d: from 1 to %d", o.perMinute, maxPerMinute)
		}
		in.JobExecutionsRolloutConfig = &types.JobExecutionsRolloutConfig{MaximumPerMinute: aws.Int32(int32(o.perMinute))}
	}
	if o.abortPercent != 0 {
		if o.abortPercent < 0 || o.abortPercent > 100 {
			return nil, usagef("--abort-failed-percent %g: from 0 to 100", o.abortPercent)
		}
		if o.abortMin < 1 {
			return nil, usagef("--abort-min-things %d: at least 1", o.abortMin)
		}
		ft := types.JobExecutionFailureType(o.abortType)
		switch ft {
		case types.JobExecutionFailureTypeFailed, types.JobExecutionFailureTypeRejected, types.JobExecutionFailureTypeTimedOut, types.JobExecutionFailureTypeAll:
		default:
			return nil, usagef("--abort-failure-type %q: FAILED, REJECTED, TIMED_OUT or ALL", o.abortType)
		}
		in.AbortConfig = &types.AbortConfig{CriteriaList: []types.AbortCriteria{{FailureType: ft, Action: types.AbortActionCancel,
			ThresholdPercentage: aws.Float64(o.abortPercent), MinNumberOfExecutedThings: aws.Int32(int32(o.abortMin))}}}
	}
	if o.timeoutMinutes != 0 {
		if o.timeoutMinutes < 1 || o.timeoutMinutes > maxTimeoutMinutes {
			return nil, usagef("--timeout-minutes %d: from 1 to %d (7 days)", o.timeoutMinutes, maxTimeoutMinutes)
		}
		in.TimeoutConfig = &types.TimeoutConfig{InProgressTimeoutInMinutes: aws.Int64(int64(o.timeoutMinutes))}
	}
	var retry []types.RetryCriteria
	for _, r := range []struct {
		flag string
		n    int
		ft   types.RetryableFailureType
	}{{"--retry-failed", o.retryFailed, types.RetryableFailureTypeFailed}, {"--retry-timed-out", o.retryTimedOut, types.RetryableFailureTypeTimedOut}} {
		switch {
		case r.n < 0 || r.n > maxRetries:
			return nil, usagef("%s %d: from 0 to %d", r.flag, r.n, maxRetries)
		case r.n > 0:
			retry = append(retry, types.RetryCriteria{FailureType: r.ft, NumberOfRetries: aws.Int32(int32(r.n))})
		}
	}
	if o.retryFailed+o.retryTimedOut > maxRetries {
		return nil, usagef("--retry-failed and --retry-timed-out: at most %d retries in all", maxRetries)
	}
	if len(retry) > 0 {
		in.JobExecutionsRetryConfig = &types.JobExecutionsRetryConfig{CriteriaList: retry}
	}
	if o.interval <= 0 {
		return nil, usagef("--interval must be positive")
	}
	return in, nil
}

// resolveTargets turns names into ARNs: group:NAME is the ARN the service
// answers DescribeThingGroup with (so a group that does not exist is an
// error before the job is made), and a thing name gets the region and
// account of that ARN (or --region and --account). An ARN stays as given.
func (c *iotClient) resolveTargets(e *env, list []string) ([]string, error) {
	var arns, things []string
	prefix := ""
	for _, t := range list {
		t = strings.TrimSpace(t)
		switch g, isGroup := strings.CutPrefix(t, "group:"); {
		case t == "":
		case strings.HasPrefix(t, "arn:"):
			if _, ok := arnPrefixOf(t); !ok {
				return nil, usagef("--targets %q: not an ARN (arn:aws:iot:REGION:ACCOUNT:thing/NAME or thinggroup/NAME)", t)
			}
			arns = append(arns, t)
		case isGroup:
			if err := shadow.ValidateThingName(g); err != nil {
				return nil, usagef("--targets %q: thing group name: %v", t, err)
			}
			out, err := c.api.DescribeThingGroup(e.ctx, &iot.DescribeThingGroupInput{ThingGroupName: aws.String(g)})
			if err != nil {
				return nil, fmt.Errorf("thing group %s: %w", g, c.explain(err))
			}
			arn := aws.ToString(out.ThingGroupArn)
			if p, ok := arnPrefixOf(arn); ok && prefix == "" {
				prefix = p
			}
			arns = append(arns, arn)
		default:
			if err := shadow.ValidateThingName(t); err != nil {
				return nil, usagef("--targets %q: %v", t, err)
			}
			things = append(things, t)
		}
	}
	if prefix == "" || c.account != "" {
		prefix = c.arnPrefix()
	}
	for _, t := range things {
		arns = append(arns, prefix+"thing/"+t)
	}
	if len(arns) == 0 {
		return nil, usagef("give --targets: thing names, group:NAME, or ARNs, separated by commas")
	}
	return arns, nil
}

// templateArn is the ARN of a job template named by name (or the ARN).
func (c *iotClient) templateArn(e *env, name string) (string, error) {
	if strings.HasPrefix(name, "arn:") {
		return name, nil
	}
	if err := parseJobID(name); err != nil {
		return "", usagef("--template %q: a template id is 1 to %d letters, digits, '-' or '_'", name, maxJobIDLen)
	}
	out, err := c.api.DescribeJobTemplate(e.ctx, &iot.DescribeJobTemplateInput{JobTemplateId: aws.String(name)})
	if err != nil {
		return "", fmt.Errorf("job template %s: %w", name, c.explain(err))
	}
	return aws.ToString(out.JobTemplateArn), nil
}

var jobStatuses = []types.JobStatus{types.JobStatusInProgress, types.JobStatusCompleted, types.JobStatusCanceled, types.JobStatusDeletionInProgress, types.JobStatusScheduled}

func runJobList(e *env, args []string) error {
	fs := flag.NewFlagSet("", flag.ContinueOnError)
	var f iotFlags
	f.register(fs)
	status := fs.String("status", "", "only jobs with this `status`: IN_PROGRESS, COMPLETED, CANCELED, DELETION_IN_PROGRESS, SCHEDULED")
	pos, err := parseArgs(fs, args)
	if err != nil {
		return err
	}
	if len(pos) > 0 {
		return usagef("takes no arguments")
	}
	in := &iot.ListJobsInput{MaxResults: aws.Int32(250)}
	if *status != "" {
		ok := false
		for _, s := range jobStatuses {
			ok = ok || string(s) == *status
		}
		if !ok {
			return usagef("--status %q: IN_PROGRESS, COMPLETED, CANCELED, DELETION_IN_PROGRESS or SCHEDULED", *status)
		}
		in.Status = types.JobStatus(*status)
	}
	c, err := f.client(e.ctx)
	if err != nil {
		return err
	}
	var jobs []types.JobSummary
	var rawJobs []json.RawMessage
	for {
		var raw []byte
		out, err := c.api.ListJobs(withRaw(e.ctx, &raw), in)
		if err != nil {
			return c.explain(err)
		}
		jobs = append(jobs, out.Jobs...)
		rawJobs = append(rawJobs, rawList(raw, "jobs")...)
		if in.NextToken = out.NextToken; aws.ToString(in.NextToken) == "" {
			break
		}
	}
	if f.json {
		return printJSON(e.stdout, map[string]any{"jobs": nonNil(rawJobs)})
	}
	if len(jobs) == 0 {
		fmt.Fprintln(e.stdout, "no jobs")
		return nil
	}
	tw := tabwriter.NewWriter(e.stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "JOB\tSTATUS\tSELECTION\tCREATED\tCOMPLETED")
	for _, j := range jobs {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", aws.ToString(j.JobId), j.Status, j.TargetSelection, when(j.CreatedAt), when(j.CompletedAt))
	}
	return tw.Flush()
}

func runJobDescribe(e *env, args []string) error {
	fs := flag.NewFlagSet("", flag.ContinueOnError)
	var f iotFlags
	f.register(fs)
	id, err := oneJobID(fs, args)
	if err != nil {
		return err
	}
	c, err := f.client(e.ctx)
	if err != nil {
		return err
	}
	snap, err := c.snapshot(e, id)
	if err != nil {
		return err
	}
	var rawDoc []byte
	doc, err := c.api.GetJobDocument(withRaw(e.ctx, &rawDoc), &iot.GetJobDocumentInput{JobId: aws.String(id)})
	if err != nil {
		return c.explain(err)
	}
	if f.json {
		var v map[string]json.RawMessage
		json.Unmarshal(snap.raw, &v)
		if v == nil {
			v = map[string]json.RawMessage{}
		}
		v["executionSummaries"], _ = json.Marshal(nonNil(snap.rawExecs))
		if d, ok := rawField(rawDoc, "document"); ok {
			v["document"] = d
		}
		return printJSON(e.stdout, v)
	}
	j := snap.job
	w := e.stdout
	fmt.Fprintf(w, "job %s  %s  %s\n", aws.ToString(j.JobId), j.Status, j.TargetSelection)
	fmt.Fprintf(w, "  arn          %s\n", aws.ToString(j.JobArn))
	if d := aws.ToString(j.Description); d != "" {
		fmt.Fprintf(w, "  description  %s\n", d)
	}
	fmt.Fprintf(w, "  document     %s\n", aws.ToString(doc.Document))
	if t := aws.ToString(j.JobTemplateArn); t != "" {
		fmt.Fprintf(w, "  template     %s\n", t)
	}
	fmt.Fprintf(w, "  targets      %s\n", strings.Join(j.Targets, ", "))
	fmt.Fprintf(w, "  created      %s   updated %s   completed %s\n", when(j.CreatedAt), when(j.LastUpdatedAt), when(j.CompletedAt))
	if s := jobSettings(j); s != "" {
		fmt.Fprintf(w, "  settings     %s\n", s)
	}
	if j.Status == types.JobStatusCanceled {
		fmt.Fprintf(w, "  canceled     %s\n", cancelWhy(j))
	}
	fmt.Fprintf(w, "  things       %s\n", countsOf(j.JobProcessDetails).line())
	if len(snap.execs) == 0 {
		fmt.Fprintln(w, "no executions")
		return nil
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "\nTHING\tSTATUS\tEXEC\tQUEUED\tSTARTED\tUPDATED")
	for _, x := range snap.execs {
		s := x.JobExecutionSummary
		if s == nil {
			s = &types.JobExecutionSummary{}
		}
		fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%s\t%s\n", thingOf(aws.ToString(x.ThingArn)), s.Status, aws.ToInt64(s.ExecutionNumber), when(s.QueuedAt), when(s.StartedAt), when(s.LastUpdatedAt))
	}
	return tw.Flush()
}

// jobSettings lists a job's rollout, abort, timeout and retry settings.
func jobSettings(j *types.Job) string {
	var out []string
	if r := j.JobExecutionsRolloutConfig; r != nil && r.MaximumPerMinute != nil {
		out = append(out, fmt.Sprintf("at most %d things a minute", aws.ToInt32(r.MaximumPerMinute)))
	}
	if a := j.AbortConfig; a != nil {
		for _, c := range a.CriteriaList {
			out = append(out, fmt.Sprintf("abort when %g%% %s (after %d things)", aws.ToFloat64(c.ThresholdPercentage), c.FailureType, aws.ToInt32(c.MinNumberOfExecutedThings)))
		}
	}
	if t := j.TimeoutConfig; t != nil && t.InProgressTimeoutInMinutes != nil {
		out = append(out, fmt.Sprintf("in progress at most %d min", aws.ToInt64(t.InProgressTimeoutInMinutes)))
	}
	if r := j.JobExecutionsRetryConfig; r != nil {
		for _, c := range r.CriteriaList {
			out = append(out, fmt.Sprintf("retry %s %d×", c.FailureType, aws.ToInt32(c.NumberOfRetries)))
		}
	}
	return strings.Join(out, "; ")
}

func cancelWhy(j *types.Job) string {
	var parts []string
	if aws.ToBool(j.ForceCanceled) {
		parts = append(parts, "with force")
	}
	if r := aws.ToString(j.ReasonCode); r != "" {
		parts = append(parts, "reason "+r)
	}
	if c := aws.ToString(j.Comment); c != "" {
		parts = append(parts, c)
	}
	if len(parts) == 0 {
		return "yes"
	}
	return strings.Join(parts, ", ")
}

func runJobCancel(e *env, args []string) error {
	fs := flag.NewFlagSet("", flag.ContinueOnError)
	var f iotFlags
	f.register(fs)
	force := fs.Bool("force", false, "cancel the executions IN_PROGRESS too (the devices are told)")
	reason := fs.String("reason-code", "", "why, as a `CODE` of upper-case letters, digits and _")
	comment := fs.String("comment", "", "why, in `text`")
	id, err := oneJobID(fs, args)
	if err != nil {
		return err
	}
	in := &iot.CancelJobInput{JobId: aws.String(id), Force: *force}
	if *reason != "" {
		if len(*reason) > maxReasonCodeLen || !reasonCodePattern.MatchString(*reason) {
			return usagef("--reason-code %q: at most %d upper-case letters, digits and _", *reason, maxReasonCodeLen)
		}
		in.ReasonCode = reason
	}
	if *comment != "" {
		if utf8.RuneCountInString(*comment) > maxDescriptionLen {
			return usagef("--comment: at most %d characters", maxDescriptionLen)
		}
		in.Comment = comment
	}
	c, err := f.client(e.ctx)
	if err != nil {
		return err
	}
	var raw []byte
	if _, err := c.api.CancelJob(withRaw(e.ctx, &raw), in); err != nil {
		return c.explain(err)
	}
	if f.json {
		printRaw(e.stdout, raw)
		return nil
	}
	if *force {
		fmt.Fprintf(e.stdout, "canceled job %s: its queued and in-progress executions are CANCELED\n", id)
	} else {
		fmt.Fprintf(e.stdout, "canceled job %s: its queued executions are CANCELED; those in progress run to their end (--force cancels them too)\n", id)
	}
	return nil
}

// snapshot is a job with its executions, and the API's JSON of both.
type snapshot struct {
	job      *types.Job
	execs    []types.JobExecutionSummaryForJob
	raw      []byte            // DescribeJob's answer
	rawExecs []json.RawMessage // the executionSummaries of every page
}

// describeJob is DescribeJob.
func (c *iotClient) describeJob(e *env, id string) (*types.Job, []byte, error) {
	var raw []byte
	out, err := c.api.DescribeJob(withRaw(e.ctx, &raw), &iot.DescribeJobInput{JobId: aws.String(id)})
	if err != nil {
		return nil, nil, c.explain(err)
	}
	if out.Job == nil {
		return nil, nil, fmt.Errorf("DescribeJob %s: the answer holds no job", id)
	}
	return out.Job, raw, nil
}

// snapshot reads a job and every page of its executions.
func (c *iotClient) snapshot(e *env, id string) (*snapshot, error) {
	j, raw, err := c.describeJob(e, id)
	if err != nil {
		return nil, err
	}
	s := &snapshot{job: j, raw: raw}
	return s, c.executions(e, s)
}

func (c *iotClient) executions(e *env, s *snapshot) error {
	s.execs, s.rawExecs = nil, nil
	in := &iot.ListJobExecutionsForJobInput{JobId: s.job.JobId, MaxResults: aws.Int32(250)}
	for {
		var raw []byte
		out, err := c.api.ListJobExecutionsForJob(withRaw(e.ctx, &raw), in)
		if err != nil {
			return c.explain(err)
		}
		s.execs = append(s.execs, out.ExecutionSummaries...)
		s.rawExecs = append(s.rawExecs, rawList(raw, "executionSummaries")...)
		if in.NextToken = out.NextToken; aws.ToString(in.NextToken) == "" {
			return nil
		}
	}
}

// rawList is the array at key of a JSON object.
func rawList(raw []byte, key string) []json.RawMessage {
	var list []json.RawMessage
	if v, ok := rawField(raw, key); ok {
		json.Unmarshal(v, &list)
	}
	return list
}

func rawField(raw []byte, key string) (json.RawMessage, bool) {
	var v map[string]json.RawMessage
	if json.Unmarshal(raw, &v) != nil {
		return nil, false
	}
	f, ok := v[key]
	return f, ok
}

func nonNil(l []json.RawMessage) []json.RawMessage {
	if l == nil {
		return []json.RawMessage{}
	}
	return l
}

// printRaw prints an answer's JSON indented.
func printRaw(w io.Writer, raw []byte) {
	var b bytes.Buffer
	if json.Indent(&b, raw, "", "  ") != nil {
		b.Reset()
		b.Write(raw)
	}
	fmt.Fprintln(w, strings.TrimRight(b.String(), "\n"))
}

func compactJSON(raw []byte) []byte {
	var b bytes.Buffer
	if json.Compact(&b, raw) != nil {
		return raw
	}
	return b.Bytes()
}

// thingOf is the name at the end of a thing ARN.
func thingOf(arn string) string {
	if i := strings.LastIndex(arn, "/"); i >= 0 {
		return arn[i+1:]
	}
	return arn
}

func when(t *time.Time) string {
	if t == nil || t.IsZero() {
		return "-"
	}
	return t.Local().Format(time.DateTime)
}
