package ctl

import (
	"flag"
	"fmt"
	"net/url"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/shadowgate/shadowgate/agent/jobrun"
)

// runJobs lists the job executions the gateway knows; with a job id, that
// job's executions with their history.
func runJobs(e *env, f *localFlags, c *apiClient, args []string, n int) error {
	if len(args) > 1 {
		return usagef("takes at most one JOB_ID")
	}
	path := "/v1/jobs?n=" + strconv.Itoa(n)
	if len(args) == 1 {
		path += "&job=" + url.QueryEscape(args[0])
	}
	var runs []*jobrun.Run
	if err := c.call(e.ctx, "GET", path, nil, &runs); err != nil {
		return err
	}
	if f.json {
		return printJSON(e.stdout, runs)
	}
	if len(runs) == 0 {
		fmt.Fprintln(e.stdout, "no job executions")
		return nil
	}
	if len(args) == 1 {
		for i, r := range runs {
			if i > 0 {
				fmt.Fprintln(e.stdout)
			}
			printRun(e, r)
		}
		return nil
	}
	tw := tabwriter.NewWriter(e.stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "JOB\tEXEC\tOPERATION\tSTATUS\tCLOUD\tRECEIVED\tDETAIL")
	for _, r := range runs {
		fmt.Fprintf(tw, "%s\t%d\t%s\t%s\t%s\t%s\t%s\n", r.JobID, r.ExecutionNumber, dash(r.Operation), execStatus(r), dash(r.Cloud),
			r.Received.Local().Format(time.DateTime), runDetail(r))
	}
	return tw.Flush()
}

// execStatus is the gateway's status of an execution, marked while the
// jobs service has not accepted it yet.
func execStatus(r *jobrun.Run) string {
	if r.Unsent {
		return r.Status + " (not yet accepted)"
	}
	return r.Status
}

func runDetail(r *jobrun.Run) string {
	if r.Approval == "pending" {
		return "awaiting approval: shadowctl approve " + r.JobID
	}
	var parts []string
	for _, k := range []string{"reason", "result", "awaiting", "approval"} {
		if v, ok := r.Details[k]; ok {
			parts = append(parts, k+": "+v)
		}
	}
	return strings.Join(parts, "; ")
}

func printRun(e *env, r *jobrun.Run) {
	tw := tabwriter.NewWriter(e.stdout, 0, 0, 2, ' ', 0)
	row := func(k, v string) { fmt.Fprintf(tw, "%s\t%s\n", k, v) }
	row("job", fmt.Sprintf("%s (execution %d, tid %s)", r.JobID, r.ExecutionNumber, r.TID))
	row("operation", dash(r.Operation))
	row("status", execStatus(r))
	if len(r.Details) > 0 {
		row("details", compact(r.Details))
	}
	row("cloud", fmt.Sprintf("%s (version %d)", dash(r.Cloud), r.Version))
	tw.Flush()
	fmt.Fprintln(e.stdout, "history:")
	for _, ev := range r.Events {
		fmt.Fprintf(e.stdout, "  %s  %s\n", ev.At.Local().Format(time.DateTime), ev.What)
	}
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func jobsCommand() cliCommand {
	var n int
	return cliCommand{"jobs", "the AWS IoT Jobs executions the gateway knows: state and history",
		"shadowctl jobs [JOB_ID] [-n N] [--json]\n\nSTATUS is what the gateway reports (IN_PROGRESS, SUCCEEDED, FAILED, REJECTED), marked while the\njobs service has not accepted it yet; CLOUD is the execution's status as the service last said.\nWith JOB_ID, that job's executions and their history. An execution awaiting approval is\napproved with shadowctl approve JOB_ID.\n\nExamples:\n  shadowctl jobs\n  shadowctl jobs speed-40",
		localCommand(func(fs *flag.FlagSet) { fs.IntVar(&n, "n", 50, "how many executions") },
			func(e *env, f *localFlags, c *apiClient, a []string) error { return runJobs(e, f, c, a, n) })}
}
