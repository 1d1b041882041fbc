// Package brokertest runs a real mosquitto for tests: on a free loopback
// port, with a temporary config and persistence directory, stoppable and
// restartable on the same port.
package brokertest

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Broker is one mosquitto process.
type Broker struct {
	t    testing.TB
	dir  string
	port int
	cmd  *exec.Cmd
	tls  bool
}

// Path finds the mosquitto binary. Without one the test fails with a clear
// message: `make test` installs mosquitto, and a skipped end-to-end test
// would hide that nothing was tested.
func Path(t testing.TB) string {
	for _, p := range []string{"mosquitto", "/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto"} {
		if path, err := exec.LookPath(p); err == nil {
			return path
		}
	}
	t.Fatal("mosquitto is not installed: run `make test` (it installs it as root) or `sudo apt-get install -y mosquitto`")
	return ""
}

// Config chooses the broker's settings.
type Config struct {
	// Stock runs mosquitto as a user's broker is: its defaults (Nagle's
	// algorithm on, 20 messages in flight and 1000 queued per client), with
	// only what Debian's mosquitto.conf sets (persistence) and what a test
	// needs (a loopback listener, anonymous clients, a log file). Without
	// it the broker is tuned for tests: set_tcp_nodelay, no in-flight
	// limit, deep queues, persistence saved every second.
	Stock bool
	// NoDelay adds set_tcp_nodelay to a stock broker: the one setting that
	// turns Nagle's algorithm off, so that a benchmark compares that alone.
	NoDelay bool
	// TLSCert and TLSKey, when set, make the listener TLS with this
	// server certificate and key (PEM files); URL is then tls://.
	TLSCert, TLSKey string
}

// Start starts a tuned mosquitto on a free loopback port; it stops with the
// test.
func Start(t testing.TB) *Broker {
	t.Helper()
	return StartWith(t, Config{})
}

// StartStock starts mosquitto with its stock settings (Config.Stock).
func StartStock(t testing.TB) *Broker {
	t.Helper()
	return StartWith(t, Config{Stock: true})
}

// StartWith starts mosquitto with c on a free loopback port; it stops with
// the test.
func StartWith(t testing.TB, c Config) *Broker {
	t.Helper()
	b := &Broker{t: t, dir: t.TempDir(), port: freePort(t), tls: c.TLSCert != ""}
	// user: run as root, mosquitto would switch to the mosquitto user and
	// could not write its log or persistence file in the test's directory
	// (and a restart would silently lose every session).
	conf := fmt.Sprintf("user %s\nlistener %d 127.0.0.1\nallow_anonymous true\npersistence true\npersistence_location %s/\nlog_dest file %s\nlog_type error\nlog_type warning\nlog_type notice\nlog_type information\n",
		currentUser(), b.port, b.dir, filepath.Join(b.dir, "mosquitto.log"))
	if b.tls {
		conf += fmt.Sprintf("certfile %s\nkeyfile %s\n", c.TLSCert, c.TLSKey)
	}
	switch {
	case !c.Stock:
		conf += "set_tcp_nodelay true\nautosave_interval 1\nmax_queued_messages 100000\nmax_inflight_messages 0\n"
	case c.NoDelay:
		conf += "set_tcp_nodelay true\n"
	}
	if err := os.WriteFile(filepath.Join(b.dir, "mosquitto.conf"), []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	b.start()
	t.Cleanup(b.Stop)
	return b
}

// URL is the broker's tcp:// URL (tls:// with Config.TLSCert).
func (b *Broker) URL() string {
	if b.tls {
		return fmt.Sprintf("tls://127.0.0.1:%d", b.port)
	}
	return fmt.Sprintf("tcp://127.0.0.1:%d", b.port)
}

// Addr is host:port.
func (b *Broker) Addr() string { return fmt.Sprintf("127.0.0.1:%d", b.port) }

// Pid is the running mosquitto's process id (0 when stopped), so that a
// benchmark can read the CPU time the broker took.
func (b *Broker) Pid() int {
	if b.cmd == nil || b.cmd.Process == nil {
		return 0
	}
	return b.cmd.Process.Pid
}

func (b *Broker) start() {
	b.t.Helper()
	cmd := exec.Command(Path(b.t), "-c", filepath.Join(b.dir, "mosquitto.conf"))
	// Output goes to the log file only: a broker outliving a crashed test
	// must not hold the test's output pipe open. Pdeathsig ends it with us.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		b.t.Fatalf("start mosquitto: %v", err)
	}
	b.cmd = cmd
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		c, err := net.DialTimeout("tcp", b.Addr(), 200*time.Millisecond)
		if err == nil {
			c.Close()
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	log, _ := os.ReadFile(filepath.Join(b.dir, "mosquitto.log"))
	b.t.Fatalf("mosquitto did not listen on %s within 10s; log:\n%s", b.Addr(), log)
}

// Stop stops mosquitto gracefully (it saves its persistence file).
func (b *Broker) Stop() {
	if b.cmd == nil {
		return
	}
	b.cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan struct{})
	go func() { b.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		b.cmd.Process.Kill()
		<-done
	}
	b.cmd = nil
}

// Restart stops and starts mosquitto on the same port.
func (b *Broker) Restart() {
	b.Stop()
	b.start()
}

// Log returns mosquitto's log, for failure messages.
func (b *Broker) Log() string {
	data, _ := os.ReadFile(filepath.Join(b.dir, "mosquitto.log"))
	return strings.TrimSpace(string(data))
}

func currentUser() string {
	if u, err := user.Current(); err == nil {
		return u.Username
	}
	return "root"
}

func freePort(t testing.TB) int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}
