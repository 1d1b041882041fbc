package main_test

import (
	"os/exec"
	"strings"
	"testing"
)

// The gateway links no AWS SDK service client and no SDK config loader:
// those are shadowctl's (shadowctl job), several MB the gateway never uses.
// It verifies SigV4 with the signer alone.
func TestNoSDKServiceClients(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", ".").CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, out)
	}
	for _, pkg := range strings.Fields(string(out)) {
		if strings.HasPrefix(pkg, "github.com/aws/aws-sdk-go-v2/service/") || strings.HasPrefix(pkg, "github.com/aws/aws-sdk-go-v2/config") ||
			strings.HasPrefix(pkg, "github.com/aws/aws-sdk-go-v2/credentials") {
			t.Errorf("shadowgated links %s", pkg)
		}
	}
}
