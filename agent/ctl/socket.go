package ctl

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"

	"gopkg.in/yaml.v3"

	"github.com/shadowgate/shadowgate/agent/config"
)

// DemoSocket is the API socket of the demo (configs/demo.yaml, `make run`),
// relative to the directory the demo runs in.
const DemoSocket = "tmp/demo/api.sock"

// socketTarget is a socket and where shadowctl got it from.
type socketTarget struct {
	path   string
	source string
}

func (t socketTarget) String() string { return fmt.Sprintf("%s (%s)", t.path, t.source) }

// target picks the daemon's socket: --socket, else $SHADOWGATE_SOCKET,
// else the settings file's socket (or a gateway config's api.socket),
// else the first that exists of api.socket in /etc/shadowgate/shadowgate.yaml
// (or the default) and the demo's socket in this directory. also are the
// ones tried and not taken, for the error message.
func (f *localFlags) target() (t socketTarget, also []socketTarget, err error) {
	if f.socket != "" {
		return socketTarget{f.socket, "--socket"}, nil, nil
	}
	if s := os.Getenv("SHADOWGATE_SOCKET"); s != "" {
		return socketTarget{s, "$SHADOWGATE_SOCKET"}, nil, nil
	}
	st, err := readSettings(f.configFile)
	if err != nil {
		return socketTarget{}, nil, err
	}
	if st.Socket != "" {
		return socketTarget{st.Socket, st.socketSource}, nil, nil
	}
	cands := []socketTarget{systemSocket(), {DemoSocket, "the demo's socket, make run in this directory"}}
	for i, c := range cands {
		if _, err := os.Lstat(c.path); err == nil || errors.Is(err, fs.ErrPermission) {
			return c, append(append([]socketTarget{}, cands[:i]...), cands[i+1:]...), nil
		}
	}
	return cands[0], cands[1:], nil
}

// systemSocket is api.socket of the installed configuration when this
// user may read it, else the default.
func systemSocket() socketTarget {
	data, err := os.ReadFile(DefaultConfigPath)
	if err == nil {
		var c struct {
			API struct {
				Socket string `yaml:"socket"`
			} `yaml:"api"`
		}
		if yaml.Unmarshal(data, &c) == nil && c.API.Socket != "" {
			return socketTarget{c.API.Socket, "api.socket in " + DefaultConfigPath}
		}
	}
	return socketTarget{DefaultSocket, "the default"}
}

// settings is what a settings file gives shadowctl.
type settings struct {
	mqttFlags
	socketSource string
}

// defaultSettingsFile is ~/.config/shadowgate/shadowctl.yaml.
func defaultSettingsFile() string {
	home, err := os.UserHomeDir()
	if err != nil {
		return ""
	}
	return filepath.Join(home, ".config", "shadowgate", "shadowctl.yaml")
}

// readSettings reads the settings file: path, or the default one when path
// is empty (a missing default file is no settings). It is either
// shadowctl's own (its keys are the flags: socket, broker, topic_root, ca,
// …) or a gateway's configuration (it has gateway:), of which the API
// socket, the broker, the topic root and the presence topic are taken. A gateway file is read
// leniently: `shadowctl --config FILE reload` must reach the daemon to be
// told what is wrong with FILE. (Its TLS files are the device's own, not
// an operator's, and are not taken.)
func readSettings(path string) (settings, error) {
	explicit := path != ""
	if !explicit {
		path = defaultSettingsFile()
	}
	var out settings
	if path == "" {
		return out, nil
	}
	data, err := os.ReadFile(path)
	switch {
	case err != nil && explicit:
		return out, usagef("settings file: %v", err)
	case err != nil:
		return out, nil
	}
	var top map[string]any
	if err := yaml.Unmarshal(data, &top); err != nil {
		return out, usagef("settings file %s: %v", path, err)
	}
	if _, ok := top["gateway"]; ok {
		var g struct {
			API struct {
				Socket string `yaml:"socket"`
			} `yaml:"api"`
			Cloud struct {
				Broker        string `yaml:"broker"`
				TopicRoot     string `yaml:"topic_root"`
				PresenceTopic string `yaml:"presence_topic"`
			} `yaml:"cloud"`
			Broker struct {
				Embedded bool   `yaml:"embedded"`
				Listen   string `yaml:"listen"`
			} `yaml:"broker"`
		}
		if err := yaml.Unmarshal(data, &g); err != nil {
			return out, usagef("gateway configuration %s: %v", path, err)
		}
		out.Socket, out.socketSource = g.API.Socket, "api.socket in "+path
		if out.Socket == "" {
			out.Socket, out.socketSource = config.DefaultSocket, "the default of "+path
		}
		out.Broker, out.TopicRoot, out.Presence = g.Cloud.Broker, g.Cloud.TopicRoot, g.Cloud.PresenceTopic
		if out.Broker == "" && g.Broker.Embedded {
			out.Broker = "tcp://" + cmpOr(g.Broker.Listen, config.DefaultListen)
		}
		return out, nil
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(&out.mqttFlags); err != nil && !errors.Is(err, io.EOF) {
		return out, usagef("settings file %s: %v", path, err)
	}
	out.socketSource = "socket in " + path
	return out, nil
}

func cmpOr(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

// dialProblem explains why the socket of t could not be reached: missing,
// permission, or no daemon behind it. also are sockets tried before.
func dialProblem(t socketTarget, also []socketTarget, err error) string {
	var b strings.Builder
	fmt.Fprintf(&b, "cannot reach shadowgated at %s: %s", t, why(t.path, err))
	for _, a := range also {
		_, serr := os.Lstat(a.path)
		fmt.Fprintf(&b, "\nalso tried %s: %s", a, why(a.path, serr))
	}
	switch {
	case errors.Is(err, fs.ErrPermission):
		b.WriteString("\n" + permissionHint(t.path))
	case errors.Is(err, syscall.ECONNREFUSED):
		b.WriteString("\nThe daemon is down. Check: systemctl status shadowgated (or is make run still running?)")
	default:
		b.WriteString("\nIs it running? Check: systemctl status shadowgated, or start the demo: make run." +
			"\nElsewhere: shadowctl --socket PATH, or export SHADOWGATE_SOCKET=PATH (make run prints the line).")
	}
	return b.String()
}

// why is one socket's problem in a few words.
func why(path string, err error) string {
	switch {
	case err == nil:
		return "exists"
	case errors.Is(err, fs.ErrNotExist):
		return "no such socket"
	case errors.Is(err, fs.ErrPermission):
		return "permission denied"
	case errors.Is(err, syscall.ECONNREFUSED):
		if fi, serr := os.Lstat(path); serr == nil && fi.Mode()&fs.ModeSocket == 0 {
			return "not a socket"
		}
		return "the socket is there but no daemon listens on it"
	}
	return err.Error()
}

// permissionHint names the group that would let this user in.
func permissionHint(path string) string {
	deny := path
	var fi fs.FileInfo
	for p := path; ; p = filepath.Dir(p) {
		st, err := os.Stat(p)
		if err == nil {
			fi = st
			break
		}
		deny = filepath.Dir(p)
		if p == filepath.Dir(p) {
			break
		}
	}
	if fi == nil {
		return "Run it as a user that may open the socket."
	}
	gid := fi.Sys().(*syscall.Stat_t).Gid
	group := strconv.Itoa(int(gid))
	if g, err := user.LookupGroupId(group); err == nil {
		group = g.Name
	}
	me := "your user"
	member := false
	if u, err := user.Current(); err == nil {
		me = u.Username
		if ids, err := u.GroupIds(); err == nil {
			for _, id := range ids {
				member = member || id == strconv.Itoa(int(gid))
			}
		}
	}
	where := fmt.Sprintf("%s is mode %#o, group %s", deny, fi.Mode().Perm(), group)
	if member {
		return fmt.Sprintf("%s; %s is in group %s but this login session began before: log in again (or: newgrp %s)", where, me, group, group)
	}
	return fmt.Sprintf("%s; %s is not in it: sudo usermod -aG %s %s, then log in again (or use sudo)", where, me, group, me)
}
