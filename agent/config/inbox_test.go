package config_test

import (
	"strings"
	"testing"

	"github.com/shadowgate/shadowgate/agent/config"
)

func TestInboxQuota(t *testing.T) {
	c, err := config.Parse("t.yaml", []byte(minimal))
	if err != nil {
		t.Fatal(err)
	}
	if c.Store.Inbox.MaxItems != config.DefaultInboxItems || c.Store.Inbox.MaxBytes != config.DefaultInboxBytes {
		t.Fatalf("inbox defaults: %+v", c.Store.Inbox)
	}
	c, err = config.Parse("t.yaml", []byte(minimal+"store: {inbox: {max_items: 500, max_bytes: 1MiB}}\n"))
	if err != nil || c.Store.Inbox.MaxItems != 500 || c.Store.Inbox.MaxBytes != 1<<20 {
		t.Fatalf("inbox quota: %+v %v", c.Store.Inbox, err)
	}
	_, err = config.Parse("t.yaml", []byte(minimal+"store: {inbox: {max_items: -1, max_bytes: 1KiB}}\n"))
	for _, want := range []string{"store.inbox.max_items: must be positive", "store.inbox.max_bytes: must be at least 64KiB"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("want %q in %v", want, err)
		}
	}
}
