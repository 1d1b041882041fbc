// Package all registers every shadowgate driver. Import it for its side
// effect: import _ "github.com/shadowgate/shadowgate/drivers/all".
package all

import (
	_ "github.com/shadowgate/shadowgate/drivers/gpio"   // gpio.relay, gpio.lock
	_ "github.com/shadowgate/shadowgate/drivers/i2c"    // i2c.pca9685
	_ "github.com/shadowgate/shadowgate/drivers/serial" // serial.line, serial.modbus
	_ "github.com/shadowgate/shadowgate/drivers/sim"    // sim
)
