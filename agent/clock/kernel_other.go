//go:build !linux

package clock

func adjtimex() (KernelState, error) { return KernelState{}, errNoAdjtimex }
