package link

import "github.com/eclipse/paho.mqtt.golang/packets"

// noStore is a paho Store that keeps nothing, so paho never re-sends
// in-flight publishes itself on reconnect. shadowgate does not need it to:
// the outbox keeps every message until its PUBACK and publishes it again
// after a reconnect. (paho's resume also races with its own writer: it
// flags a packet as a duplicate while the packet is being written.)
type noStore struct{}

func (noStore) Open()                             {}
func (noStore) Put(string, packets.ControlPacket) {}
func (noStore) Get(string) packets.ControlPacket  { return nil }
func (noStore) All() []string                     { return nil }
func (noStore) Del(string)                        {}
func (noStore) Close()                            {}
func (noStore) Reset()                            {}
