package config

import (
	"fmt"
	"io"
	"os"

	"gopkg.in/yaml.v3"
)

// Caps on what one configuration file may hold. They are far above any
// gateway (the commented example is 7 KB; a thousand actuators fit in
// 150 KB) and keep a wrong or hostile file from taking the gateway's memory:
// a 10 MB file with 250,000 actuators once took 1.2 GB to check.
const (
	MaxFileSize     = 512 << 10
	MaxActuators    = 1000
	MaxCommandTypes = 1000
	MaxArgs         = 64 // per command type
	MaxSetKeys      = 256
)

// readCapped reads a config file, refusing one over MaxFileSize before
// reading it (and never reading more than the cap from something that is
// not a regular file, such as /dev/zero).
func readCapped(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	if fi, err := f.Stat(); err == nil && fi.Mode().IsRegular() && fi.Size() > MaxFileSize {
		return nil, errTooLarge(fi.Size())
	}
	data, err := io.ReadAll(io.LimitReader(f, MaxFileSize+1))
	if err != nil {
		return nil, err
	}
	if len(data) > MaxFileSize {
		return nil, errTooLarge(-1)
	}
	return data, nil
}

type tooLargeError struct{ size int64 }

func errTooLarge(size int64) error { return &tooLargeError{size} }

func (e *tooLargeError) Error() string {
	if e.size < 0 {
		return fmt.Sprintf("the file holds more than %s, the most a configuration file may hold (is this the right file?)", ByteSize(MaxFileSize).human())
	}
	return fmt.Sprintf("the file is %s; a configuration file is at most %s (is this the right file?)", ByteSize(e.size).human(), ByteSize(MaxFileSize).human())
}

func (s ByteSize) human() string {
	switch {
	case s >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(s)/(1<<20))
	case s >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(s)/(1<<10))
	}
	return fmt.Sprintf("%d bytes", int64(s))
}

// checkCounts refuses a document with more actuators, command types, args
// or set keys than the caps, before anything is decoded or handed to the
// drivers; it reports false when it found one.
func checkCounts(doc *yaml.Node, r *Reporter) bool {
	ok := true
	over := func(n *yaml.Node, path, what string, max int) *yaml.Node {
		if n == nil || n.Kind != yaml.MappingNode {
			return nil
		}
		if count := len(n.Content) / 2; count > max {
			r.Addf(n.Line, path, "%d %s; at most %d are supported", count, what, max)
			ok = false
			return nil
		}
		return n
	}
	over(child(doc, "actuators"), "actuators", "actuators", MaxActuators)
	types := over(child(child(doc, "commands"), "types"), "commands.types", "command types", MaxCommandTypes)
	if types != nil {
		for i := 0; i+1 < len(types.Content); i += 2 {
			p := "commands.types." + types.Content[i].Value
			ct := types.Content[i+1]
			over(child(ct, "args"), p+".args", "args", MaxArgs)
			set := over(child(ct, "set"), p+".set", "keys", MaxSetKeys)
			if set != nil && child(ct, "actuator") == nil {
				for j := 0; j+1 < len(set.Content); j += 2 {
					over(set.Content[j+1], p+".set."+set.Content[j].Value, "keys", MaxSetKeys)
				}
			}
		}
	}
	return ok
}

// child is the value of key in a mapping node, or nil.
func child(n *yaml.Node, key string) *yaml.Node {
	if n == nil {
		return nil
	}
	if n.Kind == yaml.AliasNode {
		n = n.Alias
	}
	if n.Kind != yaml.MappingNode {
		return nil
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		if n.Content[i].Value == key {
			v := n.Content[i+1]
			if v.Kind == yaml.AliasNode {
				v = v.Alias
			}
			return v
		}
	}
	return nil
}
