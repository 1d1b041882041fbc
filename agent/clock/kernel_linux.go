package clock

import "golang.org/x/sys/unix"

// adjtimex reads the kernel's clock state without changing it (modes 0:
// no privilege needed). The clock is synchronized while STA_UNSYNC is
// clear; the kernel sets it when no NTP daemon has corrected the clock
// for a while (the maximum error grew past 16 s) and at boot.
func adjtimex() (KernelState, error) {
	var tx unix.Timex
	state, err := unix.Adjtimex(&tx)
	if err != nil {
		return KernelState{}, err
	}
	synced := tx.Status&unix.STA_UNSYNC == 0 && state != unix.TIME_ERROR
	return KernelState{Synced: synced, MaxError: maxError(int64(tx.Maxerror)), Via: "adjtimex"}, nil
}
