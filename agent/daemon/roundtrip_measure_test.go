package daemon_test

import (
	"testing"
	"time"

	"github.com/shadowgate/shadowgate/agent/link/brokertest"
)

// TestMeasureRoundTrip is the report's round-trip rows alone: the shadow
// round trip's p50 ÷ its floor (two raw MQTT round trips and three raw
// bbolt commits, measured in the same run), for 1 and 100 shadows.
func TestMeasureRoundTrip(t *testing.T) {
	measureOnly(t)
	_, rawOps := measureStore(t, 500)
	commit := time.Duration(float64(time.Second) / (2 * rawOps))
	for _, n := range []int{1, 100} {
		r := measureRoundTrip(t, brokertest.Config{Stock: true}, n, 300)
		floor := 2*r.rawP50 + 3*commit
		t.Logf("%d shadows: p50 %.2f ms, floor %.2f ms (raw round trip %.2f ms, commit %.2f ms): %.2f× the floor",
			n, ms(r.p50), ms(floor), ms(r.rawP50), ms(commit), float64(r.p50)/float64(floor))
	}
}
