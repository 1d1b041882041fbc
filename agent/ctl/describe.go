package ctl

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"sort"
	"strconv"
	"strings"
	"sync"
)

// A command's flags are the FlagSet its run function parses. describe runs
// it with a token as its only argument: parseArgs and parseFlags see the
// token, hand the FlagSet over and return errDescribed, so nothing else of
// the command runs. Help, global flags and completion all read that one
// definition.

// errDescribed is what run returns when it was only asked for its flags.
var errDescribed = errors.New("described")

const describePrefix = "\x00shadowctl-describe-"

var descriptions struct {
	mu   sync.Mutex
	next uint64
	fs   map[string]*flag.FlagSet
}

// describe returns the FlagSet a command parses, or nil when it parses
// none.
func describe(c *cliCommand) *flag.FlagSet {
	descriptions.mu.Lock()
	if descriptions.fs == nil {
		descriptions.fs = map[string]*flag.FlagSet{}
	}
	descriptions.next++
	token := describePrefix + strconv.FormatUint(descriptions.next, 10)
	descriptions.fs[token] = nil
	descriptions.mu.Unlock()

	ctx, cancel := context.WithCancel(context.Background())
	cancel() // a command that ran anyway would stop at once
	c.run(&env{ctx: ctx, stdout: io.Discard, stderr: io.Discard}, []string{token})

	descriptions.mu.Lock()
	defer descriptions.mu.Unlock()
	fs := descriptions.fs[token]
	delete(descriptions.fs, token)
	return fs
}

// described reports whether args is a describe token, and records fs for
// it.
func described(fs *flag.FlagSet, args []string) bool {
	if len(args) != 1 || !strings.HasPrefix(args[0], describePrefix) {
		return false
	}
	descriptions.mu.Lock()
	defer descriptions.mu.Unlock()
	if _, ok := descriptions.fs[args[0]]; ok {
		descriptions.fs[args[0]] = fs
	}
	return true
}

// globalFlagSet holds the flags that mean the same in every command that
// takes them: the local API's (--socket, --json, --config) and the MQTT
// connection's (--broker, --topic-root, TLS, …), the AWS IoT API's
// (--endpoint-url, --region, --profile, --account). They may stand before the
// command too. --help is one of them.
func globalFlagSet() *flag.FlagSet {
	fs := flag.NewFlagSet("shadowctl", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	var l localFlags
	l.register(fs)
	mq := flag.NewFlagSet("", flag.ContinueOnError)
	var m mqttFlags
	m.register(mq)
	var f iotFlags
	jobs := flag.NewFlagSet("", flag.ContinueOnError)
	f.register(jobs)
	for _, more := range []*flag.FlagSet{mq, jobs} {
		more.VisitAll(func(f *flag.Flag) {
			if fs.Lookup(f.Name) == nil {
				fs.Var(f.Value, f.Name, f.Usage)
			}
		})
	}
	fs.Bool("help", false, "this help, or with a command its own")
	return fs
}

// leadingFlags splits off the flags before the command: they must be
// global flags. help is whether one of them is --help (or -h).
func leadingFlags(args []string) (lead, rest []string, help bool, err error) {
	fs := globalFlagSet()
	fs.Bool("h", false, "")
	i := 0
	for i < len(args) && strings.HasPrefix(args[i], "-") && args[i] != "-" {
		if args[i] == "--" {
			return args[:i], args[i+1:], help, nil
		}
		name, _, hasValue := strings.Cut(strings.TrimLeft(args[i], "-"), "=")
		f := fs.Lookup(name)
		if f == nil {
			return nil, nil, false, unknownLeadingFlag(name)
		}
		if name == "help" || name == "h" {
			help = true
			args = append(args[:i:i], args[i+1:]...)
			continue
		}
		if bf, ok := f.Value.(interface{ IsBoolFlag() bool }); ok && bf.IsBoolFlag() || hasValue {
			i++
			continue
		}
		if i+1 >= len(args) {
			return nil, nil, false, fmt.Errorf("flag needs an argument: %s", flagName(name))
		}
		i += 2
	}
	return args[:i], args[i:], help, nil
}

func unknownLeadingFlag(name string) error {
	var with []string
	for _, c := range commands() {
		if fs := describe(&c); fs != nil && fs.Lookup(name) != nil {
			with = append(with, c.name)
		}
	}
	if len(with) > 0 {
		return fmt.Errorf("%s is not a global flag; it belongs after the command (%s)", flagName(name), strings.Join(with, ", "))
	}
	return fmt.Errorf("unknown flag %s", flagName(name))
}

// leadApplies checks that every flag given before the command is one the
// command takes.
func leadApplies(c *cliCommand, lead []string) error {
	fs := describe(c)
	for _, a := range lead {
		if !strings.HasPrefix(a, "-") {
			continue // a flag's value
		}
		name, _, _ := strings.Cut(strings.TrimLeft(a, "-"), "=")
		if fs == nil || fs.Lookup(name) == nil {
			return usagef("%s does not apply to %s%s", flagName(name), c.name, flagHint(c, name))
		}
	}
	return nil
}

// flagHint says which commands take a flag that c does not.
func flagHint(c *cliCommand, name string) string {
	var with []string
	for _, o := range commands() {
		if o.name == c.name {
			continue
		}
		if fs := describe(&o); fs != nil && fs.Lookup(name) != nil {
			with = append(with, o.name)
		}
	}
	if len(with) == 0 {
		return ""
	}
	sort.Strings(with)
	if len(with) > 4 {
		with = append(with[:4], "…")
	}
	return fmt.Sprintf(" (%s is a flag of %s)", flagName(name), strings.Join(with, ", "))
}
