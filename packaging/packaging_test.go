// Tests of what reaches a gateway: the systemd units, the .deb packages,
// their installation with dpkg, and the ARM binaries.
package packaging_test

import (
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

const testVersion = "1.2.3"

func run(t *testing.T, dir string, env []string, name string, args ...string) string {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), env...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

func repoRoot(t *testing.T) string {
	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	return root
}

var (
	debsOnce sync.Once
	debsErr  string
)

// debs builds the packages once for all tests.
func debs(t *testing.T) map[string]string {
	t.Helper()
	root := repoRoot(t)
	debsOnce.Do(func() {
		os.RemoveAll(filepath.Join(root, "dist"))
		cmd := exec.Command("make", "deb", "VERSION="+testVersion)
		cmd.Dir = root
		if out, err := cmd.CombinedOutput(); err != nil {
			debsErr = err.Error() + "\n" + string(out)
		}
	})
	if debsErr != "" {
		t.Fatalf("make deb: %s", debsErr)
	}
	out := map[string]string{}
	for _, arch := range []string{"amd64", "arm64", "armhf"} {
		p := filepath.Join(root, "dist", "shadowgate_"+testVersion+"_"+arch+".deb")
		if _, err := os.Stat(p); err != nil {
			t.Fatalf("no package for %s: %v", arch, err)
		}
		out[arch] = p
	}
	return out
}

func TestSystemdUnitsVerify(t *testing.T) {
	if _, err := exec.LookPath("systemd-analyze"); err != nil {
		t.Skip("systemd-analyze is not installed (package systemd)")
	}
	root := repoRoot(t)
	bin := t.TempDir()
	run(t, root, []string{"CGO_ENABLED=0"}, "go", "build", "-o", bin+"/", "./cmd/shadowgated", "./cmd/shadowsvc", "./cmd/shadowctl")
	for _, unit := range []string{"shadowgated.service", "shadowsvc.service"} {
		data, err := os.ReadFile(filepath.Join(root, "systemd", unit))
		if err != nil {
			t.Fatal(err)
		}
		// verify checks that ExecStart exists: point it at the built binary.
		text := strings.ReplaceAll(string(data), "/usr/bin/", bin+"/")
		p := filepath.Join(t.TempDir(), unit)
		os.WriteFile(p, []byte(text), 0o644)
		cmd := exec.Command("systemd-analyze", "verify", p)
		out, err := cmd.CombinedOutput()
		if err != nil || len(strings.TrimSpace(string(out))) > 0 {
			t.Fatalf("systemd-analyze verify %s: %v\n%s", unit, err, out)
		}
	}
	unit, _ := os.ReadFile(filepath.Join(root, "systemd", "shadowgated.service"))
	for _, want := range []string{"Type=notify", "WatchdogSec=", "Restart=on-failure", "RestartPreventExitStatus=78", "User=shadowgate",
		"SupplementaryGroups=gpio i2c dialout", "StateDirectory=shadowgate", "RuntimeDirectory=shadowgate", "ConfigurationDirectory=shadowgate",
		"NoNewPrivileges=yes", "ProtectSystem=strict", "ProtectHome=yes", "PrivateTmp=yes", "ProtectKernelTunables=yes",
		"RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6 AF_NETLINK", "DevicePolicy=closed", "DeviceAllow=char-gpiochip rw",
		"DeviceAllow=char-i2c rw", "DeviceAllow=char-ttyUSB rw", "CapabilityBoundingSet=\n",
		// A reload that waits for the daemon's verdict, with a binary the
		// package ships (a minimal Debian has no /bin/kill).
		"ExecReload=/usr/bin/shadowctl reload --socket /run/shadowgate/api.sock"} {
		if !strings.Contains(string(unit), want) {
			t.Errorf("shadowgated.service lacks %q", want)
		}
	}
}

// The unit and the package make the same directories with the same owners
// and modes; systemd warns at every start otherwise ("ConfigurationDirectory
// 'shadowgate' already exists but the mode is different").
func TestUnitAndPackageAgreeOnDirectories(t *testing.T) {
	root := repoRoot(t)
	unit, err := os.ReadFile(filepath.Join(root, "systemd", "shadowgated.service"))
	if err != nil {
		t.Fatal(err)
	}
	post, err := os.ReadFile(filepath.Join(root, "packaging", "scripts", "postinst"))
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct{ unit, postinst string }{
		// ConfigurationDirectory= is made root-owned; the package gives it
		// the service's group, and the config file to the service (a
		// CONFIG_UPDATE job replaces it; the sticky bit keeps it off the
		// keys), which ProtectSystem=strict must let it write.
		{"ConfigurationDirectory=shadowgate\nConfigurationDirectoryMode=1770\nReadWritePaths=-/etc/shadowgate\n", "chown root:shadowgate /etc/shadowgate\n"},
		{"ConfigurationDirectory=shadowgate\nConfigurationDirectoryMode=1770\n", "chmod 1770 /etc/shadowgate\n"},
		{"", "chown shadowgate:shadowgate /etc/shadowgate/shadowgate.yaml\n"},
		// StateDirectory= is chowned to User=/Group= at every start.
		{"StateDirectory=shadowgate\nStateDirectoryMode=0750\n", "install -d -o shadowgate -g shadowgate -m 0750 /var/lib/shadowgate\n"},
		{"RuntimeDirectory=shadowgate\nRuntimeDirectoryMode=0750\n", ""},
		{"User=shadowgate\nGroup=shadowgate\n", ""},
	} {
		if !strings.Contains(string(unit), c.unit) {
			t.Errorf("shadowgated.service lacks %q", c.unit)
		}
		if !strings.Contains(string(post), c.postinst) {
			t.Errorf("postinst lacks %q", c.postinst)
		}
	}
}

func TestDebContents(t *testing.T) {
	for arch, deb := range debs(t) {
		if got := strings.TrimSpace(run(t, "", nil, "dpkg-deb", "-f", deb, "Architecture")); got != arch {
			t.Errorf("%s: Architecture %q", deb, got)
		}
		list := run(t, "", nil, "dpkg-deb", "-c", deb)
		for _, want := range []string{
			"-rwxr-xr-x root/root", "./usr/bin/shadowgated", "./usr/bin/shadowctl", "./usr/bin/shadowsvc",
			"./lib/systemd/system/shadowgated.service", "./lib/systemd/system/shadowsvc.service",
			"-rw-r----- root/root", "./etc/shadowgate/shadowgate.yaml", "./usr/share/doc/shadowgate/README.md",
			"drwxr-x--- root/root", "./etc/shadowgate/",
			"./usr/share/bash-completion/completions/shadowctl", "./usr/share/zsh/vendor-completions/_shadowctl",
		} {
			if !strings.Contains(list, want) {
				t.Errorf("%s lacks %q:\n%s", arch, want, list)
			}
		}
		ctl := t.TempDir()
		run(t, "", nil, "dpkg-deb", "-e", deb, ctl)
		conffiles, _ := os.ReadFile(filepath.Join(ctl, "conffiles"))
		if strings.TrimSpace(string(conffiles)) != "/etc/shadowgate/shadowgate.yaml" {
			t.Errorf("%s conffiles: %q", arch, conffiles)
		}
		for _, s := range []string{"postinst", "prerm", "postrm"} {
			p := filepath.Join(ctl, s)
			fi, err := os.Stat(p)
			if err != nil || fi.Mode().Perm()&0o111 == 0 {
				t.Errorf("%s %s: %v %v", arch, s, fi, err)
				continue
			}
			run(t, "", nil, "sh", "-n", p)
		}
		post, _ := os.ReadFile(filepath.Join(ctl, "postinst"))
		for _, want := range []string{"useradd --system", "usermod -a -G", "shadowctl config check", "systemctl daemon-reload"} {
			if !strings.Contains(string(post), want) {
				t.Errorf("postinst lacks %q", want)
			}
		}
	}
}

// TestInstallRemovePurge installs the amd64 package on this machine. It
// changes the system, so it runs only as root and when asked (CI=true, or
// SHADOWGATE_TEST_INSTALL=1).
func TestInstallRemovePurge(t *testing.T) {
	if os.Geteuid() != 0 || (os.Getenv("CI") != "true" && os.Getenv("SHADOWGATE_TEST_INSTALL") != "1") {
		t.Skip("installs a package: runs as root with CI=true or SHADOWGATE_TEST_INSTALL=1")
	}
	deb := debs(t)["amd64"]
	if st, _ := exec.Command("dpkg-query", "-W", "-f=${Status}", "shadowgate").Output(); strings.Contains(string(st), "installed") {
		t.Skip("shadowgate is installed on this machine already; not touching it")
	}
	t.Cleanup(func() { exec.Command("dpkg", "--purge", "shadowgate").Run() })
	run(t, "", nil, "dpkg", "-i", deb)

	u, err := user.Lookup("shadowgate")
	if err != nil {
		t.Fatalf("user not created: %v", err)
	}
	groups := run(t, "", nil, "id", "-nG", "shadowgate")
	for _, g := range []string{"shadowgate", "gpio", "i2c", "dialout"} {
		if !strings.Contains(" "+groups+" ", " "+g+" ") && !strings.Contains(groups, g) {
			t.Errorf("shadowgate is not in group %s: %s", g, groups)
		}
	}
	stat := func(p string) string { return strings.TrimSpace(run(t, "", nil, "stat", "-c", "%a %U %G", p)) }
	for p, want := range map[string]string{
		"/etc/shadowgate":                 "1770 root shadowgate",
		"/etc/shadowgate/shadowgate.yaml": "640 shadowgate shadowgate",
		"/var/lib/shadowgate":             "750 shadowgate shadowgate",
		"/usr/bin/shadowgated":            "755 root root",
	} {
		if got := stat(p); got != want {
			t.Errorf("%s: %s, want %s", p, got, want)
		}
	}
	if out := run(t, "", nil, "/usr/bin/shadowgated", "--version"); !strings.Contains(out, testVersion) {
		t.Errorf("installed shadowgated --version: %s", out)
	}
	if out := run(t, "", nil, "runuser", "-u", "shadowgate", "--", "/usr/bin/shadowctl", "config", "check", "/etc/shadowgate/shadowgate.yaml"); !strings.Contains(out, "OK") {
		t.Errorf("the service user cannot check the installed config: %s", out)
	}
	// The conffile is dpkg's: an edited one survives reinstalls.
	if conf := run(t, "", nil, "dpkg-query", "-W", "-f=${Conffiles}", "shadowgate"); !strings.Contains(conf, "/etc/shadowgate/shadowgate.yaml") {
		t.Errorf("conffile not registered: %s", conf)
	}
	os.WriteFile("/var/lib/shadowgate/state.db", []byte("state"), 0o600)
	run(t, "", nil, "dpkg", "-i", deb) // upgrade in place: idempotent postinst

	run(t, "", nil, "dpkg", "--remove", "shadowgate")
	if _, err := os.Stat("/usr/bin/shadowgated"); err == nil {
		t.Error("binary left after remove")
	}
	if _, err := os.Stat("/var/lib/shadowgate/state.db"); err != nil {
		t.Errorf("remove deleted the state: %v", err)
	}
	if _, err := os.Stat("/etc/shadowgate/shadowgate.yaml"); err != nil {
		t.Errorf("remove deleted the config: %v", err)
	}
	run(t, "", nil, "dpkg", "--purge", "shadowgate")
	for _, p := range []string{"/var/lib/shadowgate", "/etc/shadowgate"} {
		if _, err := os.Stat(p); err == nil {
			t.Errorf("%s left after purge", p)
		}
	}
	if _, err := user.Lookup("shadowgate"); err == nil {
		t.Error("user left after purge")
	}
	_ = u
}

// TestARMBinariesRunUnderQemu runs the packaged arm64 and armhf binaries
// (what ships, not a rebuild) under user-mode emulation.
func TestARMBinariesRunUnderQemu(t *testing.T) {
	pkgs := debs(t)
	for _, tc := range []struct{ arch, qemu string }{{"arm64", "qemu-aarch64-static"}, {"armhf", "qemu-arm-static"}} {
		q, err := exec.LookPath(tc.qemu)
		if err != nil {
			t.Fatalf("%s is missing: make test installs qemu-user-static as root (apt-get install -y qemu-user-static)", tc.qemu)
		}
		dir := t.TempDir()
		run(t, "", nil, "dpkg-deb", "-x", pkgs[tc.arch], dir)
		for _, bin := range []string{"shadowgated", "shadowctl", "shadowsvc"} {
			out := run(t, "", nil, q, filepath.Join(dir, "usr", "bin", bin), "--version")
			if strings.TrimSpace(out) != bin+" "+testVersion {
				t.Errorf("%s %s --version: %q", tc.arch, bin, out)
			}
		}
	}
}
