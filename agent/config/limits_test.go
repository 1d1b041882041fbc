package config_test

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/shadowgate/shadowgate/agent/config"
)

func problemsOf(t *testing.T, err error) config.Problems {
	t.Helper()
	var ps config.Problems
	if !errors.As(err, &ps) || !errors.Is(err, config.ErrInvalid) {
		t.Fatalf("want Problems, got %v", err)
	}
	return ps
}

// A file over the size cap is refused before it is read; counts over the
// caps before anything is decoded, each with a clear problem.
func TestConfigCaps(t *testing.T) {
	dir := t.TempDir()
	head := "gateway: {thing: gw}\ncloud: {broker: tcp://127.0.0.1:1883}\n"

	var big strings.Builder
	big.WriteString(head + "actuators:\n")
	for i := 0; big.Len() <= config.MaxFileSize; i++ {
		fmt.Fprintf(&big, "  a%d: {driver: sim, state: {on: false}}\n", i)
	}
	p := filepath.Join(dir, "big.yaml")
	os.WriteFile(p, []byte(big.String()), 0o600)
	_, err := config.Load(p)
	if ps := problemsOf(t, err); len(ps) != 1 || !strings.Contains(ps[0].Error(), p+": the file is 512.") || !strings.Contains(ps[0].Error(), "at most 512.0 KiB") {
		t.Fatalf("big file: %v", err)
	}

	var many strings.Builder
	many.WriteString(head + "actuators:\n")
	for i := 0; i <= config.MaxActuators; i++ {
		fmt.Fprintf(&many, "  a%d: {driver: sim}\n", i)
	}
	many.WriteString("commands:\n  types:\n")
	for i := 0; i <= config.MaxCommandTypes; i++ {
		fmt.Fprintf(&many, "    C%d: {actuator: a0, set: {on: true}}\n", i)
	}
	_, err = config.Parse("many.yaml", []byte(many.String()))
	ps := problemsOf(t, err)
	if len(ps) != 2 || !strings.Contains(ps[0].Error(), "many.yaml:4: actuators: 1001 actuators; at most 1000 are supported") ||
		!strings.Contains(ps[1].Error(), "commands.types: 1001 command types; at most 1000 are supported") {
		t.Fatalf("too many: %v", err)
	}

	var args strings.Builder
	args.WriteString(head + "actuators: {a: {driver: sim}}\ncommands:\n  types:\n    C:\n      actuator: a\n      set: {on: true}\n      args:\n")
	for i := 0; i <= config.MaxArgs; i++ {
		fmt.Fprintf(&args, "        x%d: {type: int}\n", i)
	}
	_, err = config.Parse("args.yaml", []byte(args.String()))
	if ps := problemsOf(t, err); len(ps) != 1 || !strings.Contains(ps[0].Error(), "commands.types.C.args: 65 args; at most 64") {
		t.Fatalf("too many args: %v", err)
	}

	// Something endless that is not a file is not read to its end.
	if _, err := os.Stat("/dev/zero"); err == nil {
		_, err := config.Load("/dev/zero")
		if ps := problemsOf(t, err); !strings.Contains(ps[0].Error(), "the file holds more than 512.0 KiB, the most") {
			t.Fatalf("/dev/zero: %v", err)
		}
	}
}
