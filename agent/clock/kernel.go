package clock

import (
	"fmt"
	"os"
	"time"
)

// TimesyncFlag is the file systemd-timesyncd touches on every successful
// synchronization (systemd-timesyncd.service(8)); it lives in /run, so it
// is gone after a reboot until the next synchronization.
const TimesyncFlag = "/run/systemd/timesync/synchronized"

// ReadKernel says whether the system clock is synchronized: the kernel's
// own state (adjtimex, read-only), or, where a sandbox refuses adjtimex
// (systemd's ProtectClock= does), timesyncd's flag file.
func ReadKernel() (KernelState, error) {
	k, err := adjtimex()
	if err == nil {
		return k, nil
	}
	if _, ferr := os.Stat(TimesyncFlag); ferr == nil {
		return KernelState{Synced: true, MaxError: timesyncMaxError, Via: "systemd-timesyncd"}, nil
	}
	return KernelState{}, fmt.Errorf("adjtimex: %w; and %s does not exist (systemd-timesyncd has not synchronized the clock)", err, TimesyncFlag)
}

// maxError converts the kernel's maximum error (microseconds).
func maxError(us int64) time.Duration { return time.Duration(us) * time.Microsecond }
