package awsapi

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sort"
	"strings"
)

// Action is what a key may do.
type Action string

// Actions of the iot-data API; the jobs APIs (agent/jobs) use read for
// their Describe…, List… and Get… operations and write for the others.
const (
	ActionRead    Action = "read"    // GetThingShadow, ListNamedShadowsForThing
	ActionWrite   Action = "write"   // UpdateThingShadow, DeleteThingShadow
	ActionPublish Action = "publish" // Publish, on the topics allowed
)

var knownActions = map[Action]bool{ActionRead: true, ActionWrite: true, ActionPublish: true}

// Policy is a key's optional restrictions, from the extra keys of its
// section in the credentials file. A nil list allows everything.
type Policy struct {
	Things  []string        // thing-name patterns ('*' any run, '?' one character)
	Actions map[Action]bool // allowed actions
	Topics  []string        // topic patterns for publish
}

// Allows reports whether the policy lets a key do a on thing.
func (p *Policy) Allows(a Action, thing string) bool {
	if p.Actions != nil && !p.Actions[a] {
		return false
	}
	return p.Things == nil || matchAny(p.Things, thing)
}

// AllowsPublish reports whether the policy lets a key publish on topic. A
// topic of one thing ($aws/things/<thing>/…) also needs the thing allowed.
func (p *Policy) AllowsPublish(topic string) bool {
	if p.Actions != nil && !p.Actions[ActionPublish] {
		return false
	}
	if p.Topics != nil && !matchAny(p.Topics, topic) {
		return false
	}
	if rest, ok := strings.CutPrefix(topic, "$aws/things/"); ok && p.Things != nil {
		thing, _, _ := strings.Cut(rest, "/")
		return matchAny(p.Things, thing)
	}
	return true
}

func matchAny(patterns []string, s string) bool {
	for _, p := range patterns {
		if Match(p, s) {
			return true
		}
	}
	return false
}

// Match reports whether s matches pattern, where '*' matches any run of
// characters ('/' included, as in IAM resource patterns) and '?' one.
func Match(pattern, s string) bool {
	// Iterative wildcard matching with one backtrack point: linear enough
	// for names of at most a few hundred bytes.
	p, i, star, mark := 0, 0, -1, 0
	for i < len(s) {
		switch {
		case p < len(pattern) && (pattern[p] == '?' || pattern[p] == s[i]):
			p++
			i++
		case p < len(pattern) && pattern[p] == '*':
			star, mark = p, i
			p++
		case star >= 0:
			p = star + 1
			mark++
			i = mark
		default:
			return false
		}
	}
	for p < len(pattern) && pattern[p] == '*' {
		p++
	}
	return p == len(pattern)
}

// Key is one access key. Its secret never leaves the package: not in
// logs, not in errors.
type Key struct {
	ID      string // access key id
	Profile string // section of the credentials file
	Policy  Policy
	secret  string
}

// LogValue logs the key by id only.
func (k *Key) LogValue() slog.Value { return slog.StringValue(k.ID) }

// Credentials are the access keys the server accepts.
type Credentials struct {
	File string
	keys map[string]*Key
}

// Lookup returns the key with that id.
func (c *Credentials) Lookup(id string) (*Key, bool) {
	k, ok := c.keys[id]
	return k, ok
}

// Len is the number of keys.
func (c *Credentials) Len() int { return len(c.keys) }

// The extra keys of a section that restrict its access key.
const (
	keyThings  = "shadowgate_things"
	keyActions = "shadowgate_actions"
	keyTopics  = "shadowgate_topics"
)

// LoadCredentials reads a file in the AWS shared-credentials format
// (~/.aws/credentials): sections of aws_access_key_id and
// aws_secret_access_key, each with optional shadowgate_things,
// shadowgate_actions and shadowgate_topics (comma-separated). Other AWS
// keys (region, aws_session_token, …) are ignored, so an operator's own
// file works as it is.
func LoadCredentials(path string) (*Credentials, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read credentials: %w", err)
	}
	c, err := ParseCredentials(b)
	if err != nil {
		return nil, fmt.Errorf("credentials %s: %w", path, err)
	}
	c.File = path
	return c, nil
}

type section struct {
	name string
	line int
	vals map[string]string
}

// ParseCredentials reads the contents of a credentials file.
func ParseCredentials(b []byte) (*Credentials, error) {
	var sections []*section
	var cur *section
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	var errs []error
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || line[0] == '#' || line[0] == ';' {
			continue
		}
		if line[0] == '[' {
			if !strings.HasSuffix(line, "]") {
				errs = append(errs, fmt.Errorf("line %d: section header %q lacks ']'", n, line))
				continue
			}
			name := strings.TrimSpace(line[1 : len(line)-1])
			name = strings.TrimSpace(strings.TrimPrefix(name, "profile "))
			cur = &section{name: name, line: n, vals: map[string]string{}}
			sections = append(sections, cur)
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			errs = append(errs, fmt.Errorf("line %d: want key = value", n))
			continue
		}
		if cur == nil {
			errs = append(errs, fmt.Errorf("line %d: %q outside a [section]", n, strings.TrimSpace(k)))
			continue
		}
		k = strings.ToLower(strings.TrimSpace(k))
		if _, dup := cur.vals[k]; dup {
			errs = append(errs, fmt.Errorf("line %d: [%s]: %s given twice", n, cur.name, k))
		}
		cur.vals[k] = strings.TrimSpace(v)
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	c := &Credentials{keys: map[string]*Key{}}
	for _, s := range sections {
		k, err := s.key()
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if k == nil {
			continue // a section without keys, such as region settings
		}
		if prev, dup := c.keys[k.ID]; dup {
			errs = append(errs, fmt.Errorf("line %d: [%s]: access key %s is also in [%s]", s.line, s.name, k.ID, prev.Profile))
			continue
		}
		c.keys[k.ID] = k
	}
	if len(errs) == 0 && len(c.keys) == 0 {
		errs = append(errs, errors.New("no access keys (aws_access_key_id and aws_secret_access_key) in any section"))
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return c, nil
}

func (s *section) key() (*Key, error) {
	id, secret := s.vals["aws_access_key_id"], s.vals["aws_secret_access_key"]
	where := fmt.Sprintf("line %d: [%s]", s.line, s.name)
	var unknown []string
	for k := range s.vals {
		if strings.HasPrefix(k, "shadowgate_") && k != keyThings && k != keyActions && k != keyTopics {
			unknown = append(unknown, k)
		}
	}
	if len(unknown) > 0 {
		sort.Strings(unknown)
		return nil, fmt.Errorf("%s: unknown key %s (known: %s, %s, %s)", where, strings.Join(unknown, ", "), keyThings, keyActions, keyTopics)
	}
	switch {
	case id == "" && secret == "":
		if s.vals[keyThings] != "" || s.vals[keyActions] != "" || s.vals[keyTopics] != "" {
			return nil, fmt.Errorf("%s: restrictions without aws_access_key_id and aws_secret_access_key", where)
		}
		return nil, nil
	case id == "":
		return nil, fmt.Errorf("%s: aws_secret_access_key without aws_access_key_id", where)
	case secret == "":
		return nil, fmt.Errorf("%s: aws_access_key_id %s without aws_secret_access_key", where, id)
	case strings.ContainsAny(id, "/ ,="):
		return nil, fmt.Errorf("%s: aws_access_key_id %q may not hold '/', ',', '=' or spaces", where, id)
	}
	k := &Key{ID: id, Profile: s.name, secret: secret}
	if v, ok := s.vals[keyThings]; ok {
		k.Policy.Things = list(v)
		if len(k.Policy.Things) == 0 {
			return nil, fmt.Errorf("%s: %s is empty (leave it out to allow every thing)", where, keyThings)
		}
	}
	if v, ok := s.vals[keyActions]; ok {
		k.Policy.Actions = map[Action]bool{}
		for _, a := range list(v) {
			if !knownActions[Action(a)] {
				return nil, fmt.Errorf("%s: %s: unknown action %q (want read, write or publish)", where, keyActions, a)
			}
			k.Policy.Actions[Action(a)] = true
		}
		if len(k.Policy.Actions) == 0 {
			return nil, fmt.Errorf("%s: %s is empty (leave it out to allow every action)", where, keyActions)
		}
	}
	if v, ok := s.vals[keyTopics]; ok {
		k.Policy.Topics = list(v)
		if len(k.Policy.Topics) == 0 {
			return nil, fmt.Errorf("%s: %s is empty (leave it out to allow every topic)", where, keyTopics)
		}
	}
	return k, nil
}

func list(v string) []string {
	var out []string
	for _, f := range strings.Split(v, ",") {
		if f = strings.TrimSpace(f); f != "" {
			out = append(out, f)
		}
	}
	return out
}
