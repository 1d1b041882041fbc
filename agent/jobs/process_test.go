package jobs_test

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/shadowgate/shadowgate/agent/jobs"
	"github.com/shadowgate/shadowgate/agent/link/brokertest"
	"github.com/shadowgate/shadowgate/store"
)

// offline runs fn against a jobs service on the file with no MQTT.
func offline(t *testing.T, path string, fn func(s *jobs.Service)) {
	t.Helper()
	st, err := store.Open(path, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	s := jobs.New(jobs.Options{Store: st})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { s.Run(ctx); close(done) }()
	defer func() { cancel(); <-done }()
	fn(s)
}

// buildShadowsvc builds cmd/shadowsvc into dir and returns its path.
func buildShadowsvc(t *testing.T, dir string) string {
	t.Helper()
	bin := filepath.Join(dir, "shadowsvc")
	build := exec.Command("go", "build", "-o", bin, "../../cmd/shadowsvc")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build shadowsvc: %v\n%s", err, out)
	}
	return bin
}

// command runs bin, under SHADOWGATE_TEST_EMULATOR when make test-arm
// set it (the binary is built for the tests' GOARCH). A user-mode
// emulator runs its program in its own process, so kill -9 is still one.
func command(bin string, args ...string) *exec.Cmd {
	if emu := os.Getenv("SHADOWGATE_TEST_EMULATOR"); emu != "" {
		return exec.Command(emu, append([]string{bin}, args...)...)
	}
	return exec.Command(bin, args...)
}

// startShadowsvc starts the binary with args; it dies with the test
// process (and kill ends it sooner).
func startShadowsvc(t *testing.T, bin string, args ...string) *exec.Cmd {
	t.Helper()
	cmd := command(bin, args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { kill(cmd) })
	return cmd
}

// kill is kill -9, waited for.
func kill(cmd *exec.Cmd) {
	if cmd.ProcessState == nil {
		cmd.Process.Signal(syscall.SIGKILL)
		cmd.Wait()
	}
}

func TestShadowsvcProcessKilledKeepsAcceptedUpdates(t *testing.T) {
	// The real cmd/shadowsvc serves jobs from its bbolt file; an update it
	// answered accepted survives kill -9.
	dir := t.TempDir()
	bin := buildShadowsvc(t, dir)
	e := &env{t: t, root: "$aws/things/", broker: brokertest.Start(t), path: filepath.Join(dir, "svc.db")}
	offline(t, e.path, func(s *jobs.Service) {
		if _, err := s.CreateJob(context.Background(), &jobs.CreateJobRequest{JobID: "fw", Targets: []string{thingArn("p1")}, Document: `{"fw":"2.0"}`}); err != nil {
			t.Fatal(err)
		}
	})
	run := func() *exec.Cmd {
		return startShadowsvc(t, bin, "--broker", e.broker.URL(), "--client-id", "shadowsvc-p", "--store", e.path, "--log-level", "warn")
	}
	cmd := run()
	d := e.device("p1")
	d.awaitService()
	if sfx, ans := d.request("start-next", map[string]any{}); sfx != "accepted" || field(ans, "execution", "jobDocument", "fw") != "2.0" {
		t.Fatalf("start-next: %s %v", sfx, ans)
	}
	if sfx, ans := d.request("fw/update", map[string]any{"status": "IN_PROGRESS", "expectedVersion": 2, "statusDetails": map[string]any{"step": "flash"}}); sfx != "accepted" {
		t.Fatalf("update: %v", ans)
	}
	kill(cmd)
	cmd = run()
	sfx, ans := d.request("fw/get", map[string]any{})
	if sfx != "accepted" || num(field(ans, "execution", "versionNumber")) != 3 || field(ans, "execution", "statusDetails", "step") != "flash" {
		t.Fatalf("after kill -9: %s %v", sfx, ans)
	}
	if sfx, ans := d.request("fw/update", map[string]any{"status": "SUCCEEDED", "expectedVersion": 3}); sfx != "accepted" {
		t.Fatalf("final update: %v", ans)
	}
	kill(cmd)
	offline(t, e.path, func(s *jobs.Service) {
		d, err := s.DescribeJob(context.Background(), "fw")
		if err != nil || d.Job.Status != jobs.JobCompleted || d.Job.JobProcessDetails.NumberOfSucceededThings != 1 {
			t.Fatalf("after the second kill -9: %+v %v", d, err)
		}
	})
	if out, _ := command(bin, "--help").CombinedOutput(); !strings.Contains(string(out), "-no-jobs") {
		t.Fatalf("--help lacks -no-jobs: %s", out)
	}
}
