package ctl

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// bins builds shadowgated and shadowctl once for the tests of this file.
var bins struct {
	once sync.Once
	dir  string
	err  error
}

func TestMain(m *testing.M) {
	code := m.Run()
	if bins.dir != "" {
		os.RemoveAll(bins.dir)
	}
	os.Exit(code)
}

func binary(t *testing.T, name string) string {
	t.Helper()
	bins.once.Do(func() {
		bins.dir, bins.err = os.MkdirTemp("", "shadowctl-test-")
		if bins.err != nil {
			return
		}
		os.Chmod(bins.dir, 0o755) // run as another user too
		out, err := exec.Command("go", "build", "-o", bins.dir+"/", "../../cmd/shadowgated", "../../cmd/shadowctl").CombinedOutput()
		if err != nil {
			bins.err = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if bins.err != nil {
		t.Fatal(bins.err)
	}
	return filepath.Join(bins.dir, name)
}

// daemon runs a real shadowgated whose API socket is at
// DIR/tmp/demo/api.sock, where the demo's would be when run in DIR. Its
// broker is one nobody listens on: the local API does not need it.
type daemon struct {
	dir, socket, config string
}

func startDaemon(t *testing.T) *daemon {
	t.Helper()
	dir := t.TempDir()
	d := &daemon{dir: dir, socket: filepath.Join(dir, "tmp", "demo", "api.sock"), config: filepath.Join(dir, "gateway.yaml")}
	os.WriteFile(d.config, fmt.Appendf(nil, `gateway: {thing: gw-cli}
cloud: {broker: "tcp://127.0.0.1:1", conflict: cloud_wins}
store: {path: %s}
api: {socket: %s}
actuators:
  porch_light: {driver: sim, state: {on: false}}
  gate_motor: {driver: sim, state: {running: false, speed: 0}}
`, filepath.Join(dir, "state.db"), d.socket), 0o600)
	cmd := exec.Command(binary(t, "shadowgated"), "--config", d.config)
	cmd.Env = append(os.Environ(), "NOTIFY_SOCKET=")
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		<-exited
	})
	deadline := time.Now().Add(30 * time.Second)
	for {
		if c, err := net.Dial("unix", d.socket); err == nil {
			c.Close()
			return d
		}
		select {
		case <-exited:
			t.Fatalf("shadowgated exited:\n%s", out.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("no API socket within 30s:\n%s", out.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// must checks an exit code and that the output holds every string.
func must(t *testing.T, args []string, code int, contains ...string) string {
	t.Helper()
	c, out, errOut := run(t, args...)
	all := out + errOut
	if c != code {
		t.Fatalf("shadowctl %s: exit %d, want %d\n%s", strings.Join(args, " "), c, code, all)
	}
	for _, s := range contains {
		if !strings.Contains(all, s) {
			t.Fatalf("shadowctl %s: output lacks %q:\n%s", strings.Join(args, " "), s, all)
		}
	}
	return all
}

func args(a ...string) []string { return a }

// noHome keeps the user's own settings file and the machine's installed
// configuration out of a test.
func noHome(t *testing.T) {
	t.Setenv("HOME", t.TempDir())
	t.Setenv("SHADOWGATE_SOCKET", "")
}

// Every command's flags are found (help and completion read them), and
// each has --help and `shadowctl help NAME`.
func TestEveryCommandHasHelpAndFlags(t *testing.T) {
	for _, c := range commands() {
		if describe(&c) == nil {
			t.Errorf("%s: its run function parses no FlagSet with parseArgs or parseFlags", c.name)
			continue
		}
		words := strings.Fields(c.name)
		for _, a := range [][]string{append(words, "--help"), append(words, "-h"), append([]string{"help"}, words...), append([]string{"--help"}, words...)} {
			out := must(t, a, ExitOK, "shadowctl "+c.name+": "+c.summary, "Usage: ")
			if describe(&c).Lookup("socket") != nil && !strings.Contains(out, "--socket PATH") {
				t.Errorf("shadowctl %s: no --socket in the help:\n%s", strings.Join(a, " "), out)
			}
		}
	}
	must(t, args("history", "--help"), ExitOK, "Flags:", "-n N", "show the last N changes (default 20)", "Global flags", "--socket PATH")
	must(t, args("command", "send", "--help"), ExitOK, "--tries", "--broker URL", "--topic-root ROOT")
}

func TestHelp(t *testing.T) {
	for _, a := range [][]string{nil, {"help"}, {"--help"}, {"-h"}} {
		out := must(t, a, ExitOK, "Usage: shadowctl [GLOBAL FLAGS] COMMAND", "Global flags", "--socket PATH", "--broker URL", "shadow update", "config check", "completion")
		for _, c := range commands() {
			if !strings.Contains(out, "  "+c.name+" ") {
				t.Errorf("shadowctl %v does not list %s", a, c.name)
			}
		}
	}
	must(t, args("help", "shadow"), ExitOK, "shadow get", "shadow watch")
	must(t, args("shadow", "--help"), ExitOK, "shadow get", "shadow watch")
	must(t, args("shadow"), ExitUsage, `"shadow" needs a subcommand`, "shadow update")
	must(t, args("shadow", "frob"), ExitUsage, `unknown command "shadow frob"`)
	must(t, args("help", "frob"), ExitUsage, `no command "frob"`)
	must(t, args("version"), ExitOK, "shadowctl ")
	must(t, args("--version"), ExitOK, "shadowctl ")
}

func TestGlobalFlagsBeforeAndAfterTheCommand(t *testing.T) {
	noHome(t)
	d := startDaemon(t)
	for _, a := range [][]string{
		{"--socket", d.socket, "status"},
		{"status", "--socket", d.socket},
		{"--socket=" + d.socket, "status"},
		{"-socket", d.socket, "status"},
		{"--json", "--socket", d.socket, "status"},
	} {
		must(t, a, ExitOK, "gw-cli")
	}
	must(t, args("--json", "--socket", d.socket, "actuators"), ExitOK, `"name": "porch_light"`)
	must(t, args("--socket", d.socket, "history", "porch_light", "-n", "1"), ExitOK, "no changes recorded")
	must(t, args("--socket", d.socket, "set", "porch_light", "on=true"), ExitOK, `porch_light: {"on":false} → {"on":true}`)
	must(t, args("--socket", d.socket, "--", "history"), ExitOK, "porch_light")

	must(t, args("--bogus", "status"), ExitUsage, "unknown flag --bogus")
	must(t, args("-n", "5", "history"), ExitUsage, "-n is not a global flag; it belongs after the command (history, commands, jobs)")
	must(t, args("--broker", "tcp://x:1", "status"), ExitUsage, "--broker does not apply to status", "shadow get")
	must(t, args("status", "--broker", "tcp://x:1"), ExitUsage, "flag provided but not defined: -broker", "--broker is a flag of")
	must(t, args("--socket"), ExitUsage, "flag needs an argument: --socket")
	must(t, args("--socket", d.socket), ExitUsage, "give a command")
}

func TestSocketDiscovery(t *testing.T) {
	noHome(t)
	d := startDaemon(t)
	t.Run("SHADOWGATE_SOCKET", func(t *testing.T) {
		t.Setenv("SHADOWGATE_SOCKET", d.socket)
		must(t, args("status"), ExitOK, "gw-cli")
	})
	t.Run("settings file", func(t *testing.T) {
		p := filepath.Join(t.TempDir(), "shadowctl.yaml")
		os.WriteFile(p, []byte("socket: "+d.socket+"\nbroker: tcp://127.0.0.1:1883\n"), 0o600)
		must(t, args("--config", p, "status"), ExitOK, "gw-cli")
		must(t, args("status", "--config", p), ExitOK, "gw-cli")
		home := t.TempDir()
		os.MkdirAll(filepath.Join(home, ".config", "shadowgate"), 0o755)
		os.Rename(p, filepath.Join(home, ".config", "shadowgate", "shadowctl.yaml"))
		t.Setenv("HOME", home)
		must(t, args("status"), ExitOK, "gw-cli")
	})
	t.Run("the gateway's config", func(t *testing.T) {
		must(t, args("--config", d.config, "status"), ExitOK, "gw-cli")
		// Read leniently: a broken file still names the socket, so that
		// reload can say what is wrong with it.
		text, _ := os.ReadFile(d.config)
		os.WriteFile(d.config, append(text, "  siren: {driver: nope}\n"...), 0o600)
		must(t, args("--config", d.config, "reload"), ExitFailure, d.config+":8: actuators.siren.driver: unknown driver")
		os.WriteFile(d.config, text, 0o600)
	})
	t.Run("the demo's in this directory", func(t *testing.T) {
		if _, err := os.Lstat(DefaultSocket); err == nil {
			t.Skip(DefaultSocket + " exists on this machine: it is tried first")
		}
		t.Chdir(d.dir)
		must(t, args("status"), ExitOK, "gw-cli")
		must(t, args("actuators"), ExitOK, "gate_motor")
	})
}

func TestSocketErrorsSayWhichAndWhy(t *testing.T) {
	noHome(t)
	dir := t.TempDir()
	missing := filepath.Join(dir, "nothing.sock")
	must(t, args("status", "--socket", missing), ExitNoDaemon, "cannot reach shadowgated at "+missing+" (--socket): no such socket", "systemctl status shadowgated")
	t.Setenv("SHADOWGATE_SOCKET", missing)
	must(t, args("status"), ExitNoDaemon, missing+" ($SHADOWGATE_SOCKET): no such socket")
	t.Setenv("SHADOWGATE_SOCKET", "")

	if _, err := os.Lstat(DefaultSocket); err != nil {
		t.Chdir(dir)
		must(t, args("status"), ExitNoDaemon, DefaultSocket+" (the default): no such socket",
			"also tried "+DemoSocket+" (the demo's socket, make run in this directory): no such socket", "export SHADOWGATE_SOCKET=")
	}

	// A socket left behind by a daemon that died.
	stale := filepath.Join(dir, "stale.sock")
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: stale, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	l.SetUnlinkOnClose(false)
	l.Close()
	must(t, args("status", "--socket", stale), ExitNoDaemon, stale+" (--socket): the socket is there but no daemon listens on it", "The daemon is down")

	plain := filepath.Join(dir, "plain")
	os.WriteFile(plain, nil, 0o644)
	must(t, args("status", "--socket", plain), ExitNoDaemon, plain+" (--socket): not a socket")
}

// A user outside the socket's group is told which group to join.
func TestSocketPermissionDenied(t *testing.T) {
	noHome(t)
	d := startDaemon(t)
	if os.Geteuid() != 0 {
		t.Skip("runs shadowctl as another user (nobody): needs root")
	}
	cmd := exec.Command(binary(t, "shadowctl"), "status", "--socket", d.socket)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	cmd.Env = append(os.Environ(), "HOME=/nonexistent")
	out, err := cmd.CombinedOutput()
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != ExitNoDaemon {
		t.Fatalf("exit %v, want %d:\n%s", err, ExitNoDaemon, out)
	}
	for _, want := range []string{"cannot reach shadowgated at " + d.socket + " (--socket): permission denied", "group", "sudo usermod -aG"} {
		if !strings.Contains(string(out), want) {
			t.Fatalf("output lacks %q:\n%s", want, out)
		}
	}
}

func completions(t *testing.T, words ...string) []string {
	t.Helper()
	return complete(context.Background(), commands(), words)
}

func hasWord(cands []string, word string) bool {
	for _, c := range cands {
		if w, _, _ := strings.Cut(c, "\t"); w == word {
			return true
		}
	}
	return false
}

func TestCompletion(t *testing.T) {
	noHome(t)
	d := startDaemon(t)
	for _, tc := range []struct {
		words []string
		want  []string
		not   []string
	}{
		{[]string{""}, []string{"status", "shadow", "command", "commands", "config", "help", "completion"}, []string{"get"}},
		{[]string{"sh"}, []string{"shadow", "shadows"}, []string{"status"}},
		{[]string{"shadow", ""}, []string{"get", "update", "delete", "watch"}, []string{"status"}},
		{[]string{"--socket", d.socket, "st"}, []string{"status"}, nil},
		{[]string{"--json", "shadow", "g"}, []string{"get"}, []string{"update"}},
		{[]string{"history", "-"}, []string{"-n", "--socket", "--json", "--config"}, []string{"--broker"}},
		{[]string{"shadow", "get", "--"}, []string{"--name", "--broker", "--topic-root"}, []string{"--socket"}},
		{[]string{"--soc"}, []string{"--socket"}, []string{"--json"}},
		{[]string{"--socket", ""}, []string{filesDirective}, nil},
		{[]string{"config", "check", ""}, []string{filesDirective}, nil},
		{[]string{"help", "sh"}, []string{"shadow", "shadows"}, nil},
		{[]string{"help", "shadow", ""}, []string{"get", "watch"}, nil},
		{[]string{"completion", ""}, []string{"bash", "zsh"}, nil},
		{[]string{"set", "--socket", d.socket, ""}, []string{"porch_light", "gate_motor"}, nil},
		{[]string{"--socket", d.socket, "history", "p"}, []string{"porch_light"}, []string{"gate_motor"}},
		{[]string{"rollback", "--socket", d.socket, "gate_motor", ""}, nil, []string{"gate_motor"}},
	} {
		got := completions(t, tc.words...)
		for _, w := range tc.want {
			if !hasWord(got, w) {
				t.Errorf("complete %q: no %q in %q", tc.words, w, got)
			}
		}
		for _, w := range tc.not {
			if hasWord(got, w) {
				t.Errorf("complete %q: %q should not be offered: %q", tc.words, w, got)
			}
		}
	}
	// Candidates carry their summary, for zsh's menu.
	if got := completions(t, "stat"); len(got) != 1 || got[0] != "status\tthe gateway's link, outbox, commands and store" {
		t.Errorf("complete stat: %q", got)
	}
	must(t, args("__complete", "shadow", ""), ExitOK, "get\t", "watch\t")
	must(t, args("completion", "fish"), ExitUsage, `no completion for "fish"`)
}

// The bash script, sourced in a real bash, completes through the binary.
func TestBashCompletionScript(t *testing.T) {
	bash, err := exec.LookPath("bash")
	if err != nil {
		t.Skip("no bash")
	}
	noHome(t)
	ctl := binary(t, "shadowctl")
	script := filepath.Join(t.TempDir(), "shadowctl.bash")
	c, out, _ := run(t, "completion", "bash")
	if c != ExitOK {
		t.Fatal(out)
	}
	os.WriteFile(script, []byte(out), 0o644)
	try := func(line string) string {
		t.Helper()
		cmd := exec.Command(bash, "--norc", "--noprofile", "-c", `source "$1"; eval "COMP_WORDS=($2)"; COMP_CWORD=$(( ${#COMP_WORDS[@]} - 1 )); [[ $2 == *" " ]] && { COMP_WORDS+=(""); COMP_CWORD=$(( COMP_CWORD + 1 )); }; _shadowctl; printf '%s\n' "${COMPREPLY[@]}"`, "bash", script, line)
		cmd.Env = append(os.Environ(), "PATH="+filepath.Dir(ctl)+":"+os.Getenv("PATH"))
		b, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("bash: %v\n%s", err, b)
		}
		return string(b)
	}
	if got := try("shadowctl sh"); got != "shadow\nshadows\n" {
		t.Errorf("shadowctl sh<TAB>: %q", got)
	}
	if got := try("shadowctl shadow "); !strings.Contains(got, "get\n") || !strings.Contains(got, "watch\n") || strings.Contains(got, "\t") {
		t.Errorf("shadowctl shadow <TAB>: %q", got)
	}
	if got := try("shadowctl history --j"); got != "--json\n" {
		t.Errorf("shadowctl history --j<TAB>: %q", got)
	}
}

func TestZshCompletionScript(t *testing.T) {
	zsh, err := exec.LookPath("zsh")
	if err != nil {
		t.Skip("no zsh (apt-get install zsh)")
	}
	_, out, _ := run(t, "completion", "zsh")
	if !strings.HasPrefix(out, "#compdef shadowctl\n") {
		t.Fatalf("no #compdef line: %q", out)
	}
	script := filepath.Join(t.TempDir(), "_shadowctl")
	os.WriteFile(script, []byte(out), 0o644)
	if b, err := exec.Command(zsh, "-n", script).CombinedOutput(); err != nil {
		t.Fatalf("zsh -n: %v\n%s", err, b)
	}
}
