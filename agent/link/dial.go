package link

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"net/url"
	"os"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
)

// Acknowledging at once: a broker with Nagle's algorithm on (mosquitto's
// default, set_tcp_nodelay false) holds a small packet back until the
// previous one is acknowledged at the TCP level, and a receiver that has
// nothing to send delays that acknowledgement by up to 40 ms. Every
// exchange in which the broker sends us two packets in a row (a PUBACK and
// then the response we wait for) would pay that wait. So the link's TCP
// connections acknowledge every segment at once (TCP_QUICKACK, re-armed
// after each read, as Linux clears it by itself), which costs one small
// packet per segment received and nothing on the broker's side.

// dialer opens the link's connections for tcp:// and tls:// brokers with
// quick acknowledgements, buffered reads and coalesced writes (bufconn.go);
// for other schemes, or behind a proxy, it returns nil and paho dials as
// usual.
func dialer(u *url.URL, timeout time.Duration) mqtt.OpenConnectionFunc {
	if os.Getenv("all_proxy") != "" || os.Getenv("ALL_PROXY") != "" {
		return nil
	}
	var secure bool
	switch u.Scheme {
	case "tcp", "mqtt":
	case "ssl", "tls", "mqtts":
		secure = true
	default:
		return nil
	}
	return func(uri *url.URL, o mqtt.ClientOptions) (net.Conn, error) {
		ctx, cancel := context.WithTimeout(context.Background(), timeout)
		defer cancel()
		var d net.Dialer
		c, err := d.DialContext(ctx, "tcp", uri.Host)
		if err != nil {
			return nil, err
		}
		conn := quickAck(c)
		if !secure {
			return newBufferedConn(conn), nil
		}
		cfg := &tls.Config{}
		if o.TLSConfig != nil {
			cfg = o.TLSConfig.Clone()
		}
		if cfg.ServerName == "" {
			cfg.ServerName = uri.Hostname()
		}
		tc := tls.Client(conn, cfg)
		if err := tc.HandshakeContext(ctx); err != nil {
			tc.Close()
			return nil, fmt.Errorf("tls handshake with %s: %w", uri.Host, err)
		}
		return newBufferedConn(tc), nil
	}
}
