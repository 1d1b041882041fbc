package store_test

import (
	"strings"
	"testing"

	"github.com/shadowgate/shadowgate/store"
)

func TestNamedShadowsPrefixScan(t *testing.T) {
	s := open(t, store.Options{})
	// "gw" must not see "gw2"'s shadows, nor its own classic shadow.
	for _, k := range []store.ShadowKey{{"gw", ""}, {"gw", "b"}, {"gw", "a"}, {"gw", "c:1"}, {"gw2", "x"}, {"g", "y"}} {
		if _, err := s.PutShadow(k, []byte(`{"n":"`+k.Name+`"}`)); err != nil {
			t.Fatal(err)
		}
	}
	list := func(thing, after string, max int) string {
		var got []string
		err := s.View(func(tx *store.Tx) error {
			return tx.NamedShadows(thing, after, func(name string, doc []byte) (bool, error) {
				if !strings.Contains(string(doc), `"`+name+`"`) {
					t.Errorf("%s: document %s", name, doc)
				}
				got = append(got, name)
				return len(got) < max, nil
			})
		})
		if err != nil {
			t.Fatal(err)
		}
		return strings.Join(got, ",")
	}
	for _, c := range []struct {
		thing, after string
		max          int
		want         string
	}{
		{"gw", "", 10, "a,b,c:1"},
		{"gw", "", 2, "a,b"},
		{"gw", "b", 10, "c:1"},
		{"gw", "a0", 10, "b,c:1"},
		{"gw", "c:1", 10, ""},
		{"gw2", "", 10, "x"},
		{"nobody", "", 10, ""},
	} {
		if got := list(c.thing, c.after, c.max); got != c.want {
			t.Errorf("NamedShadows(%q, after %q, max %d) = %q, want %q", c.thing, c.after, c.max, got, c.want)
		}
	}
}
