//go:build !linux

package clock

import "errors"

func adjtimex() (KernelState, error) {
	return KernelState{}, errors.New("adjtimex is not available on this platform")
}
