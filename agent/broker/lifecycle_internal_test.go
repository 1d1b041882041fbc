package broker

import (
	"fmt"
	"io"
	"net"
	"os"
	"testing"

	"github.com/mochi-mqtt/server/v2/packets"
)

// How each end of a mochi connection maps to AWS's disconnectReason; the
// ends a loopback test cannot make (the broker shutting down, a packet too
// large, a refused publish) are here.
func TestDisconnectReasons(t *testing.T) {
	timeout := &net.OpError{Op: "read", Net: "tcp", Err: fmt.Errorf("i/o timeout: %w", os.ErrDeadlineExceeded)}
	for _, tc := range []struct {
		err, cause error
		reason     string
		byClient   bool
	}{
		{nil, packets.CodeDisconnect, ReasonClientInitiated, true},
		{packets.CodeDisconnectWillMessage, packets.CodeDisconnectWillMessage, ReasonClientInitiated, true},
		{net.ErrClosed, packets.ErrSessionTakenOver, ReasonDuplicateID, false},
		{nil, packets.ErrServerShuttingDown, ReasonServerInitiated, false},
		{timeout, timeout, ReasonKeepAlive, false},
		{io.EOF, io.EOF, ReasonConnectionLost, false},
		{packets.ErrPacketTooLarge, packets.ErrPacketTooLarge, ReasonClientError, false},
		{nil, packets.ErrProtocolViolationRequireFirstConnect, ReasonClientError, false},
		{net.ErrClosed, packets.ErrNotAuthorized, ReasonAuthError, false},
	} {
		if r, by := disconnectReason(tc.err, tc.cause); r != tc.reason || by != tc.byClient {
			t.Errorf("%v / %v: %s %v, want %s %v", tc.err, tc.cause, r, by, tc.reason, tc.byClient)
		}
	}
}
