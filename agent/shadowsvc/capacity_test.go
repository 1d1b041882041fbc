package shadowsvc_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/shadowgate/shadowgate/agent/jobs"
	"github.com/shadowgate/shadowgate/agent/jobs/jobstest"
	"github.com/shadowgate/shadowgate/agent/link"
	"github.com/shadowgate/shadowgate/agent/link/brokertest"
	"github.com/shadowgate/shadowgate/agent/shadowsvc"
	"github.com/shadowgate/shadowgate/store"
)

// capacitySizes: tiny for the smoke run in make test, full for make bench.
type capacitySizes struct {
	things   []int
	updates  int // per measurement
	stored   []int
	duration time.Duration // per latency measurement
	// jobThings run the jobs device flow; queued executions are held.
	jobThings, queued int
}

var (
	capacitySmoke = capacitySizes{things: []int{10}, updates: 300, stored: []int{1000}, duration: 300 * time.Millisecond, jobThings: 10, queued: 1000}
	capacityFull  = capacitySizes{things: []int{1000, 10000}, updates: 60000, stored: []int{10000, 100000}, duration: 5 * time.Second,
		jobThings: 1000, queued: 10000}
)

// TestCapacityReport measures how far one shadowsvc goes on this machine
// with a stock mosquitto: sustained updates per second across many things,
// latency at 50 % and 90 % of that rate, and memory with many stored
// shadows, each next to raw mosquitto in the same run; and the jobs: executions
// a second through the whole device flow, memory with many queued
// executions. SHADOWGATE_BENCH=1
// (make bench) runs it at full size and writes bench/SHADOWSVC.md.
func TestCapacityReport(t *testing.T) {
	sz, full := capacitySmoke, os.Getenv("SHADOWGATE_BENCH") == "1"
	if full {
		sz = capacityFull
	} else if testing.Short() {
		t.Skip("capacity smoke run")
	}
	var b strings.Builder
	fmt.Fprintf(&b, "# shadowsvc capacity (%s, %s)\n\nOne shadowsvc and one stock mosquitto on this machine (%d cores); the load generator runs in the same process as the service.\n\n",
		map[bool]string{true: "make bench", false: "smoke run"}[full], time.Now().UTC().Format(time.DateOnly), runtime.NumCPU())
	b.WriteString("| measure | measured | ÷ raw mosquitto |\n| --- | --- | --- |\n")
	row := func(name, measured, ratio string) {
		fmt.Fprintf(&b, "| %s | %s | %s |\n", name, measured, ratio)
		t.Logf("%s: %s (%s)", name, measured, ratio)
	}
	for _, things := range sz.things {
		h := newCapacityHarness(t, things)
		raw := h.rawRate(sz.updates)
		rate := h.sustained(sz.updates)
		row(fmt.Sprintf("sustained updates/s across %d things (accepted + documents + delta each)", things),
			fmt.Sprintf("%.0f/s", rate), fmt.Sprintf("%.2f× of %.0f msgs/s", rate/raw, raw))
		for _, frac := range []float64{0.5, 0.9} {
			lat := h.atRate(rate*frac, sz.duration)
			row(fmt.Sprintf("latency at %.0f %% of that (%.0f/s): p50 / p99", frac*100, rate*frac),
				fmt.Sprintf("%.1f ms / %.1f ms", ms(lat.pct(0.5)), ms(lat.pct(0.99))), "")
		}
	}
	rate, raw := jobsFlow(t, sz.jobThings)
	row(fmt.Sprintf("jobs: executions/s through the device flow across %d things (start-next → IN_PROGRESS → SUCCEEDED)", sz.jobThings),
		fmt.Sprintf("%.0f/s", rate), fmt.Sprintf("%.2f× of %.0f msgs/s", rate/raw, raw))
	mem := brokertest.StartStock(t)
	bin := buildShadowsvc(t)
	for _, n := range sz.stored {
		rss, hwm := storedMemory(t, bin, mem.URL(), n)
		row(fmt.Sprintf("shadowsvc RSS with %d stored shadows, each read once (VmRSS / VmHWM)", n),
			fmt.Sprintf("%.1f MB / %.1f MB", float64(rss)/(1<<20), float64(hwm)/(1<<20)), "")
	}
	rss, hwm := queuedMemory(t, bin, mem.URL(), sz.queued)
	row(fmt.Sprintf("shadowsvc RSS with %d queued job executions, each thing's pending jobs read once (VmRSS / VmHWM)", sz.queued),
		fmt.Sprintf("%.1f MB / %.1f MB", float64(rss)/(1<<20), float64(hwm)/(1<<20)), "")
	fmt.Println(b.String())
	if full {
		os.MkdirAll("../../bench", 0o755)
		if err := os.WriteFile("../../bench/SHADOWSVC.md", []byte(b.String()), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

type latencies []time.Duration

func (l latencies) pct(p float64) time.Duration {
	s := slices.Clone(l)
	slices.Sort(s)
	if len(s) == 0 {
		return 0
	}
	return s[min(len(s)-1, int(float64(len(s))*p))]
}

// capacityHarness is a stock mosquitto, a shadowsvc and a load client.
type capacityHarness struct {
	t      *testing.T
	broker *brokertest.Broker
	svc    *shadowsvc.Service
	things int
	load   mqtt.Client

	mu      sync.Mutex
	waiting map[string]chan struct{} // clientToken → answered
	seq     int
}

func newCapacityHarness(t *testing.T, things int) *capacityHarness {
	h := &capacityHarness{t: t, broker: brokertest.StartStock(t), things: things, waiting: map[string]chan struct{}{}}
	st, err := store.Open(filepath.Join(t.TempDir(), "svc.db"), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	svcLink, _ := link.New(link.Options{Broker: h.broker.URL(), ClientID: "svc", MinBackoff: 50 * time.Millisecond})
	h.svc = shadowsvc.New(shadowsvc.Options{Root: "things/", Link: svcLink, Store: st})
	runService(t, h.svc)
	run(t, svcLink)
	h.load = connect(t, h.broker.URL(), "load")
	answered := func(_ mqtt.Client, m mqtt.Message) {
		var body struct {
			ClientToken string `json:"clientToken"`
		}
		json.Unmarshal(m.Payload(), &body)
		h.mu.Lock()
		if ch := h.waiting[body.ClientToken]; ch != nil {
			close(ch)
			delete(h.waiting, body.ClientToken)
		}
		h.mu.Unlock()
	}
	for _, f := range []string{"things/+/shadow/update/accepted", "things/+/shadow/update/rejected"} {
		if tok := h.load.Subscribe(f, 1, answered); tok.Wait() && tok.Error() != nil {
			t.Fatal(tok.Error())
		}
	}
	waitUntil(t, "service connected", 10*time.Second, svcLink.Connected)
	return h
}

func connect(t *testing.T, url, id string) mqtt.Client {
	c := mqtt.NewClient(mqtt.NewClientOptions().AddBroker(url).SetClientID(id).SetCleanSession(true).SetOrderMatters(false))
	if tok := c.Connect(); tok.Wait() && tok.Error() != nil {
		t.Fatal(tok.Error())
	}
	t.Cleanup(func() { c.Disconnect(100) })
	return c
}

// send publishes one update to the next thing and returns a channel closed
// when it is answered.
func (h *capacityHarness) send() chan struct{} {
	h.mu.Lock()
	h.seq++
	i := h.seq
	tok := fmt.Sprintf("c-%d", i)
	ch := make(chan struct{})
	h.waiting[tok] = ch
	h.mu.Unlock()
	h.load.Publish(fmt.Sprintf("things/t%d/shadow/update", i%h.things), 1, false,
		fmt.Appendf(nil, `{"state":{"desired":{"v":%d},"reported":{"v":%d}},"clientToken":%q}`, i, i-1, tok))
	return ch
}

// sustained runs n updates with a window of in-flight requests per thing
// under AWS's limit of 10, and returns answered updates per second.
func (h *capacityHarness) sustained(n int) float64 {
	// A stock mosquitto queues at most 1000 messages for a subscriber
	// before it drops them: keep the load under that.
	window := min(h.things*4, 500)
	sem := make(chan struct{}, window)
	var wg sync.WaitGroup
	t0 := time.Now()
	for range n {
		sem <- struct{}{}
		ch := h.send()
		wg.Add(1)
		go func() {
			defer wg.Done()
			select {
			case <-ch:
			case <-time.After(60 * time.Second):
				h.t.Error("an update was not answered within 60 s")
			}
			<-sem
		}()
	}
	wg.Wait()
	return float64(n) / time.Since(t0).Seconds()
}

// atRate sends updates at a steady rate for d and returns their latencies.
func (h *capacityHarness) atRate(rate float64, d time.Duration) latencies {
	every := time.Duration(float64(time.Second) / rate)
	var mu sync.Mutex
	var out latencies
	var wg sync.WaitGroup
	start := time.Now()
	for i := 0; time.Since(start) < d; i++ {
		if wait := time.Until(start.Add(time.Duration(i) * every)); wait > 0 {
			time.Sleep(wait)
		}
		t0 := time.Now()
		ch := h.send()
		wg.Add(1)
		go func() {
			defer wg.Done()
			select {
			case <-ch:
				mu.Lock()
				out = append(out, time.Since(t0))
				mu.Unlock()
			case <-time.After(60 * time.Second):
				h.t.Error("an update was not answered within 60 s")
			}
		}()
	}
	wg.Wait()
	return out
}

// rawRate is raw mosquitto: QoS 1 messages per second from one client to
// another, the same count, on the same broker.
func (h *capacityHarness) rawRate(n int) float64 {
	got := make(chan struct{}, n)
	sub := connect(h.t, h.broker.URL(), "raw-sub")
	if tok := sub.Subscribe("raw/+", 1, func(mqtt.Client, mqtt.Message) { got <- struct{}{} }); tok.Wait() && tok.Error() != nil {
		h.t.Fatal(tok.Error())
	}
	pub := connect(h.t, h.broker.URL(), "raw-pub")
	sem := make(chan struct{}, 100) // a stock broker queues 1000 for a slow subscriber
	done := make(chan struct{})
	go func() {
		for range n {
			<-got
			<-sem
		}
		close(done)
	}()
	t0 := time.Now()
	for i := range n {
		sem <- struct{}{}
		pub.Publish(fmt.Sprintf("raw/%d", i%h.things), 1, false, []byte(`{"state":{"desired":{"v":1}}}`))
	}
	select {
	case <-done:
	case <-time.After(120 * time.Second):
		h.t.Fatal("raw messages lost")
	}
	return float64(n) / time.Since(t0).Seconds()
}

// buildShadowsvc builds cmd/shadowsvc as released (stripped).
func buildShadowsvc(t *testing.T) string {
	bin := filepath.Join(t.TempDir(), "shadowsvc")
	build := exec.Command("go", "build", "-trimpath", "-ldflags", "-s -w", "-o", bin, "../../cmd/shadowsvc")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build shadowsvc: %v\n%s", err, out)
	}
	return bin
}

// storedMemory runs the real shadowsvc on a store holding n shadows, reads
// every one of them through it, and returns its RSS and peak RSS.
func storedMemory(t *testing.T, bin, url string, n int) (rss, hwm uint64) {
	path := filepath.Join(t.TempDir(), "mem.db")
	st, err := store.Open(path, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	doc := []byte(`{"state":{"desired":{"light":{"on":true,"brightness":60}},"reported":{"light":{"on":true,"brightness":60}}},"metadata":{"desired":{"light":{"on":{"timestamp":1},"brightness":{"timestamp":1}}},"reported":{"light":{"on":{"timestamp":1},"brightness":{"timestamp":1}}}},"version":3,"timestamp":1}`)
	for i := 0; i < n; i += 5000 {
		err := st.Update(func(tx *store.Tx) error {
			for j := i; j < min(i+5000, n); j++ {
				if _, err := tx.PutShadow(store.ShadowKey{Thing: fmt.Sprintf("m%d", j)}, doc); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	st.Close()
	return serviceMemory(t, bin, url, path, fmt.Sprintf("shadows-%d", n), n, func(i int) string { return fmt.Sprintf("mem/m%d/shadow/get", i) })
}

// queuedMemory runs the real shadowsvc on a store holding one job queued
// on n things, asks every thing's pending jobs through it, and returns its
// RSS and peak RSS.
func queuedMemory(t *testing.T, bin, url string, n int) (rss, hwm uint64) {
	path := filepath.Join(t.TempDir(), "queued.db")
	st, err := store.Open(path, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	js := jobs.New(jobs.Options{Store: st})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	done := make(chan struct{})
	go func() { js.Run(ctx); close(done) }()
	names := jobstest.Things("q", n)
	err = jobstest.Release(ctx, js, "held", `{"operation":"update","version":"2.0"}`, names)
	cancel()
	<-done
	st.Close()
	if err != nil {
		t.Fatal(err)
	}
	return serviceMemory(t, bin, url, path, fmt.Sprintf("jobs-%d", n), n, func(i int) string { return fmt.Sprintf("mem/q%d/jobs/get", i) })
}

// serviceMemory runs the real shadowsvc on the store at path, publishes
// the request of each of n things (topic(i); answered on …/accepted) with
// 100 in flight, and returns its RSS and peak RSS.
func serviceMemory(t *testing.T, bin, url, path, name string, n int, topic func(i int) string) (rss, hwm uint64) {
	cmd := exec.Command(bin, "--broker", url, "--client-id", "svc-mem-"+name, "--topic-root", "mem/", "--store", path, "--log-level", "error")
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { cmd.Process.Signal(syscall.SIGTERM); cmd.Wait() }()

	got := make(chan struct{}, 1000)
	c := connect(t, url, "mem-reader-"+name)
	filters := map[string]byte{"mem/+/shadow/get/accepted": 1, "mem/+/jobs/get/accepted": 1}
	if tok := c.SubscribeMultiple(filters, func(mqtt.Client, mqtt.Message) { got <- struct{}{} }); tok.Wait() && tok.Error() != nil {
		t.Fatal(tok.Error())
	}
	// Wait for the service, then ask for every thing with 100 in flight.
	waitUntil(t, "shadowsvc answers", 20*time.Second, func() bool {
		c.Publish(topic(0), 1, false, []byte(`{}`))
		select {
		case <-got:
			return true
		case <-time.After(200 * time.Millisecond):
			return false
		}
	})
	sem := make(chan struct{}, 100)
	done := make(chan struct{})
	go func() {
		for range n {
			select {
			case <-got:
			case <-time.After(30 * time.Second):
				t.Error("a request was not answered")
				close(done)
				return
			}
			<-sem
		}
		close(done)
	}()
	for i := range n {
		sem <- struct{}{}
		c.Publish(topic(i), 1, false, []byte(`{}`))
	}
	<-done
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", cmd.Process.Pid))
	if err != nil {
		t.Fatal(err)
	}
	return procField(status, "VmRSS:"), procField(status, "VmHWM:")
}

// jobsFlow runs the jobs service on a stock mosquitto and a real bbolt
// file, with one job on things things that one client plays through the
// device flow (jobstest.Fleet); it returns executions a second and raw
// mosquitto's messages a second on the same broker.
func jobsFlow(t *testing.T, things int) (rate, raw float64) {
	b := brokertest.StartStock(t)
	st, err := store.Open(filepath.Join(t.TempDir(), "jobs.db"), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	l, _ := link.New(link.Options{Broker: b.URL(), ClientID: "jobsvc", MinBackoff: 50 * time.Millisecond})
	js := jobs.New(jobs.Options{Root: "things/", Link: l, Store: st})
	done := make(chan struct{})
	go func() { js.Run(t.Context()); close(done) }()
	t.Cleanup(func() { <-done })
	run(t, l)
	waitUntil(t, "jobs service connected", 10*time.Second, l.Connected)
	names := jobstest.Things("j", things)
	fleet, err := jobstest.NewFleet(b.URL(), "things/", "fleet")
	if err != nil {
		t.Fatal(err)
	}
	defer fleet.Close()
	if err := jobstest.Release(t.Context(), js, "flow", `{"operation":"update"}`, names); err != nil {
		t.Fatal(err)
	}
	// A stock mosquitto queues 1000 messages for a slow subscriber: keep
	// the requests waiting under that.
	took, err := fleet.Run(t.Context(), names, 200, 60*time.Second)
	if err != nil {
		t.Fatalf("%v; jobs stats %+v", err, js.Stats())
	}
	h := &capacityHarness{t: t, broker: b, things: things}
	return float64(things) / took.Seconds(), h.rawRate(things * 4)
}

func procField(status []byte, name string) uint64 {
	for _, line := range strings.Split(string(status), "\n") {
		if v, ok := strings.CutPrefix(line, name); ok {
			var kb uint64
			fmt.Sscan(strings.TrimSuffix(strings.TrimSpace(v), " kB"), &kb)
			return kb << 10
		}
	}
	return 0
}
