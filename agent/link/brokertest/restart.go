package brokertest

import (
	"os"
	"path/filepath"
)

// RestartEmpty stops mosquitto and starts it again on the same port with
// its persistence file gone: every session, subscription and queued
// message is lost, as after a broker without persistence restarts (or one
// whose disk was replaced). Clients must subscribe again, and the first to
// reconnect publishes to nobody.
func (b *Broker) RestartEmpty() {
	b.t.Helper()
	b.Stop()
	if err := os.Remove(filepath.Join(b.dir, "mosquitto.db")); err != nil && !os.IsNotExist(err) {
		b.t.Fatalf("remove mosquitto's persistence file: %v", err)
	}
	b.start()
}
