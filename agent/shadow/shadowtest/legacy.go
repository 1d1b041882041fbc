package shadowtest

import (
	"testing"

	"github.com/shadowgate/shadowgate/agent/shadow"
)

// Exchange sends one request and returns the responses it caused, by
// suffix; want is how many the corpus expects. It is the older form of a
// door, kept for its callers; new code implements Door.
type Exchange func(t *testing.T, topic shadow.Topic, payload []byte, want int) map[shadow.Suffix][]byte

// Case is a corpus entry with its thing name fixed (older form of Entry).
type Case struct{ Entry }

// Cases is the whole corpus as Cases, thing names "conf-NNN".
var Cases = func() []Case {
	var out []Case
	for i, e := range Entries() {
		e.Thing = ThingFor("conf-", i, e)
		out = append(out, Case{e})
	}
	return out
}()

// Run runs cases through exchange with the corpus's comparison (the older
// form of RunCorpus).
func Run(t *testing.T, cases []Case, exchange Exchange) {
	t.Helper()
	for _, c := range cases {
		t.Run(c.Name, func(t *testing.T) {
			for n, st := range c.Steps {
				payload, err := st.Bytes()
				if err != nil {
					t.Fatal(err)
				}
				topic := shadow.Topic{Thing: c.Thing, Name: c.Shadow, Op: st.Op}
				var got []Response
				for sfx, p := range exchange(t, topic, payload, len(st.Expect)) {
					got = append(got, Response{Suffix: sfx, Payload: p})
				}
				if err := CheckStep(st, got, c.Thing, c.Shadow); err != nil {
					t.Fatalf("%s\nstep %d: %s %s\n%v", c.describe(), n, st.Op, abbrev(payload), err)
				}
			}
		})
	}
}

// SameJSON compares two JSON documents as the corpus does (numeric
// timestamps match any number).
func SameJSON(got, want []byte) error { return Match(got, want, "", "") }
