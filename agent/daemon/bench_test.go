package daemon_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/shadowgate/shadowgate/agent/command"
	"github.com/shadowgate/shadowgate/agent/daemon"
	"github.com/shadowgate/shadowgate/agent/link"
	"github.com/shadowgate/shadowgate/agent/link/brokertest"
	"github.com/shadowgate/shadowgate/agent/shadow"
)

// latencies summarises round-trip times.
type latencies []time.Duration

func (l latencies) pct(p float64) time.Duration {
	s := slices.Clone(l)
	slices.Sort(s)
	if len(s) == 0 {
		return 0
	}
	return s[min(len(s)-1, int(float64(len(s))*p))]
}

// rawRoundTrips measures n request → echo → response round trips of plain
// MQTT QoS 1 messages between two clients on the same broker.
func rawRoundTrips(b testing.TB, brokerURL string, n int) latencies {
	b.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	echo, _ := link.New(link.Options{Broker: brokerURL, ClientID: "bench-echo", CleanSession: true})
	echo.Handle("bench/req", func(ctx context.Context, m *link.Message) { echo.PublishAsync("bench/resp", false, m.Payload) })
	got := make(chan string, 16)
	req, _ := link.New(link.Options{Broker: brokerURL, ClientID: "bench-req", CleanSession: true})
	req.Handle("bench/resp", func(_ context.Context, m *link.Message) { got <- string(m.Payload) })
	done := make(chan struct{}, 2)
	for _, l := range []*link.Link{echo, req} {
		go func() { l.Run(ctx); done <- struct{}{} }()
	}
	defer func() { cancel(); <-done; <-done }()
	for !(echo.Connected() && req.Connected()) {
		time.Sleep(5 * time.Millisecond)
	}
	time.Sleep(50 * time.Millisecond)
	var out latencies
	for i := 0; i < n; i++ {
		want := fmt.Sprint(i)
		t0 := time.Now()
		if err := req.Publish(ctx, "bench/req", false, []byte(want)); err != nil {
			b.Fatal(err)
		}
		for p := range got {
			if p == want {
				break
			}
		}
		out = append(out, time.Since(t0))
	}
	return out
}

// BenchmarkShadowRoundTrip: an operator sets desired on one of N shadows
// and waits for the gateway's reported state to be accepted, through
// mosquitto and shadowsvc; beside it, the raw MQTT round trip on the same
// broker in the same run. Metrics: p50/p99 of each and their ratio.
func BenchmarkShadowRoundTrip(b *testing.B) {
	for _, n := range []int{1, 100} {
		b.Run(fmt.Sprintf("shadows=%d", n), func(b *testing.B) { benchRoundTrip(b, n) })
	}
}

func benchRoundTrip(b *testing.B, shadows int) {
	r := measureRoundTrip(b, brokertest.Config{Stock: true}, shadows, max(b.N, 20))
	b.ReportMetric(float64(r.p50.Microseconds()), "p50-µs")
	b.ReportMetric(float64(r.p99.Microseconds()), "p99-µs")
	b.ReportMetric(float64(r.rawP50.Microseconds()), "raw-p50-µs")
	b.ReportMetric(float64(r.p50)/float64(r.rawP50), "ratio-p50")
	b.ReportMetric(float64(r.p99)/float64(r.rawP99), "ratio-p99")
}

// roundTrip is a shadow round trip measurement and its raw baseline.
type roundTrip struct{ p50, p99, rawP50, rawP99 time.Duration }

func measureRoundTrip(b testing.TB, bc brokertest.Config, shadows, iters int) roundTrip {
	c := newCloudWith(b, bc)
	dir := b.TempDir()
	var acts strings.Builder
	for i := 0; i < shadows; i++ {
		if shadows == 1 {
			fmt.Fprintf(&acts, "  light%d: {driver: sim, state: {on: false}}\n", i)
		} else {
			fmt.Fprintf(&acts, "  light%d: {driver: sim, shadow: s%d, state: {on: false}}\n", i, i)
		}
	}
	y := fmt.Sprintf("gateway: {thing: gw-bench}\ncloud: {broker: %q, keepalive: 30s}\nstore: {path: %q}\napi: {socket: %q}\nlog: {level: error}\nactuators:\n%s",
		c.broker.URL(), filepath.Join(dir, "state.db"), filepath.Join(dir, "api.sock"), acts.String())
	path := filepath.Join(dir, "bench.yaml")
	os.WriteFile(path, []byte(y), 0o600)
	cfg, err := daemon.LoadConfig(path)
	if err != nil {
		b.Fatal(err)
	}
	gateway(b, cfg)
	shadowName := func(i int) string {
		if shadows == 1 {
			return ""
		}
		return fmt.Sprintf("s%d", i)
	}
	// Wait for every shadow to exist.
	for i := 0; i < shadows; i++ {
		for c.get(b, "gw-bench", shadowName(i)) == nil {
			time.Sleep(20 * time.Millisecond)
		}
	}
	accepted := make(chan string, 1024)
	c.onMessage = func(m *link.Message) {
		if strings.HasSuffix(m.Topic, "/update/accepted") && strings.Contains(string(m.Payload), `"reported"`) {
			select {
			case accepted <- m.Topic + " " + string(m.Payload):
			default:
			}
		}
	}
	raw := rawRoundTrips(b, c.broker.URL(), iters)

	var lat latencies
	on := make([]bool, shadows)
	for i := 0; i < iters; i++ {
		k := i % shadows
		on[k] = !on[k]
		key := fmt.Sprintf("light%d", k)
		topic := shadow.Topic{Thing: "gw-bench", Name: shadowName(k), Op: shadow.OpUpdate}
		want := fmt.Sprintf(`"reported":{"%s":{"on":%v}}`, key, on[k])
		t0 := time.Now()
		if err := c.op.Publish(context.Background(), topic.Build(root), false, []byte(fmt.Sprintf(`{"state":{"desired":{"%s":{"on":%v}}}}`, key, on[k]))); err != nil {
			b.Fatal(err)
		}
		timeout := time.After(10 * time.Second)
	wait:
		for {
			select {
			case a := <-accepted:
				if strings.HasPrefix(a, topic.With(shadow.SuffixAccepted).Build(root)+" ") && strings.Contains(a, want) {
					break wait
				}
			case <-timeout:
				b.Fatalf("no reported state for %s", key)
			}
		}
		lat = append(lat, time.Since(t0))
	}
	return roundTrip{lat.pct(0.5), lat.pct(0.99), raw.pct(0.5), raw.pct(0.99)}
}

// pipelined sends n requests with up to window in flight and returns the
// completed requests per second. send publishes request i; done receives
// the index of each completed request.
func pipelined(b testing.TB, n, window int, send func(i int), done <-chan int) float64 {
	b.Helper()
	t0 := time.Now()
	sent, completed := 0, 0
	for sent < min(window, n) {
		send(sent)
		sent++
	}
	timeout := time.After(120 * time.Second)
	for completed < n {
		select {
		case <-done:
			completed++
			if sent < n {
				send(sent)
				sent++
			}
		case <-timeout:
			b.Fatalf("only %d of %d completed", completed, n)
		}
	}
	return float64(n) / time.Since(t0).Seconds()
}

// BenchmarkCommandThroughput: durable commands (request → persisted →
// executed on a sim actuator → SUCCESS ack seen by the requester) per
// second through mosquitto, next to raw MQTT request → echo → response per
// second on the same broker, both with 32 requests in flight; commands on
// one actuator (they run in order) and spread over ten (they run at once).
func BenchmarkCommandThroughput(b *testing.B) {
	for _, acts := range []int{1, 10} {
		b.Run(fmt.Sprintf("actuators=%d", acts), func(b *testing.B) {
			f := measureCommands(b, brokertest.Config{Stock: true}, max(b.N, 200), acts)
			b.ReportMetric(f.durable, "cmds/s")
			b.ReportMetric(f.raw, "raw-req/s")
			b.ReportMetric(f.durable/f.raw, "ratio")
			b.ReportMetric(f.cmd.msgs, "msgs/cmd")
			b.ReportMetric(float64(f.cmd.broker.Microseconds()), "broker-µs/cmd")
			b.ReportMetric(float64(f.cmd.clients.Microseconds()), "clients-µs/cmd")
			b.ReportMetric(f.cmd.ceiling(), "ceiling-cmds/s")
			b.ReportMetric(f.acked, "acked-req/s")
			b.ReportMetric(f.durable/f.acked, "ratio-to-acked")
		})
	}
}

// cmdFigures are measureCommands': the rates, and the work each command
// and each raw exchange cost (opWork).
type cmdFigures struct {
	durable, raw float64 // per second
	cmd, rawWork work
	// acked is the command's messages with nothing behind them: a
	// request answered by two acks (RUNNING, SUCCESS) from an echo that
	// neither stores nor runs anything, per second, and its work.
	acked     float64
	ackedWork work
}

// measureCommands returns durable commands per second, spread round-robin
// over the given number of sim actuators, and raw MQTT requests per second:
// n of each with 32 in flight.
func measureCommands(b testing.TB, bc brokertest.Config, n, actuators int) (f cmdFigures) {
	c := newCloudOps(b, bc, nil, false)
	dir := b.TempDir()
	var acts, types strings.Builder
	for i := 0; i < actuators; i++ {
		fmt.Fprintf(&acts, "  m%d: {driver: sim, state: {speed: 0}}\n", i)
		fmt.Fprintf(&types, "    SET%d: {actuator: m%d, set: {speed: \"{speed}\"}, args: {speed: {type: number, required: true}}}\n", i, i)
	}
	y := fmt.Sprintf("gateway: {thing: gw-cbench}\ncloud: {broker: %q, keepalive: 30s}\nstore: {path: %q}\napi: {socket: %q}\nlog: {level: error}\nactuators:\n%scommands:\n  types:\n%s",
		c.broker.URL(), filepath.Join(dir, "state.db"), filepath.Join(dir, "api.sock"), acts.String(), types.String())
	path := filepath.Join(dir, "cbench.yaml")
	os.WriteFile(path, []byte(y), 0o600)
	cfg, err := daemon.LoadConfig(path)
	if err != nil {
		b.Fatal(err)
	}
	d := gateway(b, cfg)
	for !d.Link.Connected() {
		time.Sleep(5 * time.Millisecond)
	}
	const window = 32

	// Raw baseline.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	echo, _ := link.New(link.Options{Broker: c.broker.URL(), ClientID: "tp-echo", CleanSession: true})
	echo.Handle("tp/req", func(_ context.Context, m *link.Message) { echo.PublishAsync("tp/resp", false, m.Payload) })
	rawDone := make(chan int, n)
	reqr, _ := link.New(link.Options{Broker: c.broker.URL(), ClientID: "tp-req", CleanSession: true})
	reqr.Handle("tp/resp", func(_ context.Context, m *link.Message) { rawDone <- 0 })
	ackedDone := make(chan int, n)
	reqr.Handle("tp/ack", func(_ context.Context, m *link.Message) {
		if bytes.Contains(m.Payload, []byte(command.StatusSuccess)) {
			ackedDone <- 0
		}
	})
	for _, l := range []*link.Link{echo, reqr} {
		go l.Run(ctx)
	}
	for !(echo.Connected() && reqr.Connected()) {
		time.Sleep(5 * time.Millisecond)
	}
	time.Sleep(50 * time.Millisecond)
	counted := opWork(b, c.broker, echo, reqr)
	f.raw = pipelined(b, n, window, func(i int) { reqr.PublishAsync("tp/req", false, []byte(fmt.Sprint(i))) }, rawDone)
	f.rawWork = counted(n)

	// The command's own messages, with nothing behind them: the real
	// request, and two acks of the real acks' size from an echo.
	acker, _ := link.New(link.Options{Broker: c.broker.URL(), ClientID: "tp-acker", CleanSession: true})
	acker.Handle("tp/cmd", func(_ context.Context, m *link.Message) {
		var r struct{ TID string }
		json.Unmarshal(m.Payload, &r)
		for _, st := range []string{command.StatusRunning, command.StatusSuccess} {
			acker.PublishAsync("tp/ack", false, fmt.Appendf(nil, `{"tid":%q,"status":%q,"ts":"2026-12-02T17:00:00.000000000Z"}`, r.TID, st))
		}
	})
	go acker.Run(ctx)
	for !acker.Connected() {
		time.Sleep(5 * time.Millisecond)
	}
	time.Sleep(50 * time.Millisecond)
	counted = opWork(b, c.broker, acker, reqr)
	f.acked = pipelined(b, n, window, func(i int) {
		reqr.PublishAsync("tp/cmd", false, []byte(req(fmt.Sprintf("SET%d", i%actuators), fmt.Sprintf("tp-%d", i), fmt.Sprintf(`{"speed":%d}`, i%100))))
	}, ackedDone)
	f.ackedWork = counted(n)

	// Steady state: after a connect commands wait for the broker's
	// backlog (a second of quiet on the command topic, agent/command's
	// backlog hold); a gateway that has been up a while is past it.
	for d.Commands.Stats().Held {
		time.Sleep(10 * time.Millisecond)
	}
	cmdDone := make(chan int, n)
	c.onMessage = func(m *link.Message) {
		if m.Topic == "commands/gw-cbench/ack" && strings.Contains(string(m.Payload), `"SUCCESS"`) {
			cmdDone <- 0
		}
	}
	counted = opWork(b, c.broker, d.Link, c.svcLink, c.op)
	f.durable = pipelined(b, n, window, func(i int) {
		c.op.PublishAsync("commands/gw-cbench", false, []byte(req(fmt.Sprintf("SET%d", i%actuators), fmt.Sprintf("tp-%d", i), fmt.Sprintf(`{"speed":%d}`, i%100))))
	}, cmdDone)
	f.cmd = counted(n)
	return f
}

// opWork starts counting the work done for the clients given, and
// returns it for each of n operations: the messages through the broker
// (every client's publishes and deliveries), mosquitto's CPU, and this
// process's (the gateway, cloud and operator of a command, or the two raw
// clients). It lets the last operations' trailing messages (a report's
// answer after the ack) arrive first: the counts settle for 100 ms.
func opWork(b testing.TB, br *brokertest.Broker, clients ...*link.Link) func(n int) work {
	count := func() (m int64) {
		for _, l := range clients {
			st := l.Stats()
			m += st.Published + st.Received
		}
		return m
	}
	self := os.Getpid()
	m0, c0, s0 := count(), procCPU(b, br.Pid()), procCPU(b, self)
	return func(n int) work {
		c1, s1 := procCPU(b, br.Pid()), procCPU(b, self)
		m1 := count()
		for deadline := time.Now().Add(2 * time.Second); time.Now().Before(deadline); {
			time.Sleep(100 * time.Millisecond)
			if m := count(); m != m1 {
				m1 = m
				continue
			}
			break
		}
		return work{msgs: float64(m1-m0) / float64(n), broker: (c1 - c0) / time.Duration(n), clients: (s1 - s0) / time.Duration(n)}
	}
}

// work is what one operation cost (opWork).
type work struct {
	msgs            float64       // through the broker: publishes in, deliveries out
	broker, clients time.Duration // CPU: mosquitto's, this process's
}

// ceiling is the rate this machine's cores allow if nothing but the
// operation's measured CPU ran on them.
func (w work) ceiling() float64 { return float64(runtime.NumCPU()) / (w.broker + w.clients).Seconds() }
