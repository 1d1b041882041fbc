package daemon_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// readmeBlock returns the lines of the README's shell block after marker,
// continuation lines joined.
func readmeBlock(t *testing.T, marker string) []string {
	t.Helper()
	b, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	_, rest, ok := strings.Cut(string(b), marker)
	if !ok {
		t.Fatalf("README.md has no %q", marker)
	}
	_, rest, ok = strings.Cut(rest, "```sh\n")
	if !ok {
		t.Fatalf("README.md: no ```sh block after %q", marker)
	}
	block, _, _ := strings.Cut(rest, "```")
	var lines []string
	for _, l := range strings.Split(strings.ReplaceAll(block, "\\\n", " "), "\n") {
		if l = strings.TrimSpace(l); l != "" && !strings.HasPrefix(l, "#") {
			lines = append(lines, l)
		}
	}
	return lines
}

// TestDemoJobsWithAWSCLI runs the demo's configuration (on free ports) and
// the README's jobs commands exactly as printed, from the repository's root
// as a user would: each must succeed, except the one marked with the error
// it must get.
func TestDemoJobsWithAWSCLI(t *testing.T) {
	if _, err := exec.LookPath("aws"); err != nil {
		t.Skip("the AWS CLI (aws) is not installed: the README's aws iot jobs commands are not checked (pip install awscli, or AWS CLI v2, to run this test)")
	}
	root, _ := filepath.Abs("../..")
	dir := t.TempDir()
	cfg, _, httpAddr := demoOnFreePorts(t)
	gateway(t, cfg)

	// The script: the README's lines with the demo's port moved, each
	// command's output and status kept.
	lines := readmeBlock(t, "<!-- jobs-cli:")
	var script strings.Builder
	fmt.Fprintf(&script, "cd %q\n", root)
	type command struct {
		line, wantErr string
		n             int
	}
	var cmds []command
	for _, l := range lines {
		l = strings.ReplaceAll(l, "http://127.0.0.1:8080", "http://"+httpAddr)
		if strings.HasPrefix(l, "export ") || strings.HasPrefix(l, "EP=") {
			script.WriteString(l + "\n")
			continue
		}
		c := command{line: l, n: len(cmds)}
		if cmd, comment, ok := strings.Cut(l, "   # "); ok {
			c.line, c.wantErr = cmd, strings.TrimSpace(comment)
		}
		cmds = append(cmds, c)
		fmt.Fprintf(&script, "{ %s ; } >%s/out.%d 2>%s/err.%d; echo $? >%s/rc.%d\n", c.line, dir, c.n, dir, c.n, dir, c.n)
	}
	if len(cmds) < 10 {
		t.Fatalf("the README's jobs block has %d commands", len(cmds))
	}
	scriptPath := filepath.Join(dir, "jobs.sh")
	os.WriteFile(scriptPath, []byte(script.String()), 0o600)

	env := []string{"HOME=" + dir, "PATH=" + os.Getenv("PATH"), "AWS_CONFIG_FILE=" + filepath.Join(dir, "none")}
	// The HTTP API is up once the CLI gets an answer.
	deadline := time.Now().Add(30 * time.Second)
	for {
		cmd := exec.Command("aws", "iot", "list-jobs", "--endpoint-url", "http://"+httpAddr, "--region", "us-east-1")
		cmd.Env = append(env, "AWS_SHARED_CREDENTIALS_FILE="+filepath.Join(root, "configs/demo-credentials"))
		out, err := cmd.CombinedOutput()
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("aws iot list-jobs: %v %s", err, out)
		}
		time.Sleep(200 * time.Millisecond)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	run := exec.CommandContext(ctx, "bash", scriptPath)
	run.Env = env
	var stderr bytes.Buffer
	run.Stderr = &stderr
	if err := run.Run(); err != nil {
		t.Fatalf("the README's script: %v %s", err, stderr.String())
	}
	outputs := map[string]string{}
	for _, c := range cmds {
		out, _ := os.ReadFile(filepath.Join(dir, "out."+strconv.Itoa(c.n)))
		errOut, _ := os.ReadFile(filepath.Join(dir, "err."+strconv.Itoa(c.n)))
		rcb, _ := os.ReadFile(filepath.Join(dir, "rc."+strconv.Itoa(c.n)))
		rc := strings.TrimSpace(string(rcb))
		switch {
		case c.wantErr == "" && rc != "0":
			t.Errorf("%s\nexit %s\nstdout %s\nstderr %s", c.line, rc, out, errOut)
		case c.wantErr != "" && (rc == "0" || !strings.Contains(string(errOut), "("+c.wantErr+")")):
			t.Errorf("%s: want %s, got exit %s\nstdout %s\nstderr %s", c.line, c.wantErr, rc, out, errOut)
		}
		outputs[c.line] = string(out)
	}
	find := func(part string) map[string]any {
		t.Helper()
		for line, out := range outputs {
			if strings.Contains(line, part) {
				var v map[string]any
				if err := json.Unmarshal([]byte(out), &v); err != nil {
					t.Fatalf("%s: output %q: %v", line, out, err)
				}
				return v
			}
		}
		t.Fatalf("no README command with %q", part)
		return nil
	}
	if t.Failed() {
		return
	}
	if v := find("create-job --job-id calibrate-1"); v["jobArn"] != "arn:aws:iot:us-east-1:000000000000:job/calibrate-1" {
		t.Errorf("create-job: %v", v)
	}
	if v := find("describe-job --job-id calibrate-1"); jsonPath(v, "job", "status") != "IN_PROGRESS" || jsonPath(v, "job", "jobProcessDetails", "numberOfQueuedThings") != float64(1) {
		t.Errorf("describe-job: %v", v)
	}
	if q, _ := find("get-pending-job-executions")["queuedJobs"].([]any); len(q) != 1 || q[0].(map[string]any)["jobId"] != "calibrate-1" {
		t.Errorf("get-pending-job-executions: %v", q)
	}
	if v := find("describe-job-execution --job-id calibrate-1"); jsonPath(v, "execution", "status") != "SUCCEEDED" || jsonPath(v, "execution", "thingArn") != "arn:aws:iot:us-east-1:000000000000:thing/sensor-1" {
		t.Errorf("describe-job-execution: %v", v)
	}
	// The demo gateway ran the job to its group itself.
	if v := find("describe-job-execution --job-id speed-40 --thing-name demo-gw $EP"); jsonPath(v, "execution", "status") != "SUCCEEDED" ||
		!strings.Contains(fmt.Sprint(jsonPath(v, "execution", "statusDetails", "detailsMap", "result")), `"speed":40`) {
		t.Errorf("the gateway's execution: %v", v)
	}
	status := map[string]any{}
	for _, j := range find("list-jobs")["jobs"].([]any) {
		m := j.(map[string]any)
		status[m["jobId"].(string)] = m["status"]
	}
	if status["calibrate-1"] != "COMPLETED" || status["reboot-1"] != "CANCELED" || status["speed-40"] != "COMPLETED" {
		t.Errorf("list-jobs: %v", status)
	}
}

func jsonPath(v map[string]any, path ...string) any {
	var cur any = v
	for _, p := range path {
		m, _ := cur.(map[string]any)
		cur = m[p]
	}
	return cur
}
