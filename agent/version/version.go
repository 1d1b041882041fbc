// Package version holds the build's version, set by the Makefile's ldflags.
package version

// Version is the release this binary was built from.
var Version = "dev"
