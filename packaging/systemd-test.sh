#!/usr/bin/env bash
# make test-systemd: the .deb under a real systemd. Builds the package for
# this machine's architecture, boots a clean Debian bookworm with systemd as
# PID 1 (../shared/tools/systemd-box, systemd-nspawn), installs the package
# and checks shadowgated.service and shadowsvc.service as a user meets them:
# start, STATUS=, reload (a good config and a bad one), the watchdog, stop,
# `systemd-analyze security`, and purge.
#
# Needs root and systemd-nspawn (apt-get install systemd-container
# debootstrap); without them it prints one SKIP line and exits 0. The box's
# root file system is built once and cached in $SYSTEMD_BOX_DIR (default
# /var/tmp/shadowgate-systemd-box, ~250 MB, ~1 min to build); every run
# boots it clean. `systemd-test.sh --prepare` only builds it (CI does that
# while `make test` runs).
set -eu  # (no pipefail: grep -q ends pipes early on purpose)
cd "$(dirname "$0")/.."
BOX=${SYSTEMD_BOX:-$(cd .. && pwd)/shared/tools/systemd-box}
export SYSTEMD_BOX_DIR=${SYSTEMD_BOX_DIR:-/var/tmp/shadowgate-systemd-box}
WATCHDOG=5  # WatchdogSec of the test's drop-in
SLACK=25    # how much longer than WatchdogSec + RestartSec a restart may take

skip() { echo "test-systemd: SKIP: $*"; exit 0; }
[ "$(id -u)" = 0 ] || skip "needs root (systemd-nspawn boots the test box)"
command -v systemd-nspawn >/dev/null || skip "systemd-nspawn is not installed (apt-get install systemd-container debootstrap)"
[ -x "$BOX" ] || skip "no $BOX (the shared tools are at ../shared relative to the repository)"

T0=$(date +%s.%N)
elapsed() { awk -v a="$1" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }'; }
FAILS=0
PASSES=0
ok()   { echo "ok    $*"; PASSES=$((PASSES + 1)); }
fail() { echo "FAIL  $*"; FAILS=$((FAILS + 1)); }
box()  { "$BOX" run "$*" 9>&-; }

# One run at a time per box directory. The lock is this script's alone:
# the box's processes do not inherit it (9>&-), so that a box left running
# by a run that was killed does not hold off the next one, which takes the
# box down first.
mkdir -p "$SYSTEMD_BOX_DIR"
exec 9>"$SYSTEMD_BOX_DIR/.lock"
flock -w 600 9 || { echo "test-systemd: another run holds $SYSTEMD_BOX_DIR/.lock" >&2; exit 1; }

if [ "${1:-}" = --prepare ]; then
  "$BOX" down >/dev/null 2>&1 9>&- || true
  "$BOX" up 9>&- && "$BOX" down 9>&-
  exit
fi

# wait_for SECONDS WHAT CMD: poll CMD (run in the box) until it succeeds.
wait_for() {
  local secs=$1 what=$2; shift 2
  local start; start=$(date +%s.%N)
  while ! box "$*" >/dev/null 2>&1; do
    if awk -v a="$start" -v b="$(date +%s.%N)" -v s="$secs" 'BEGIN { exit !(b - a > s) }'; then
      fail "$what: not within ${secs}s"
      return 1
    fi
    sleep 0.2
  done
}

prop() { box "systemctl show -p $2 --value $1"; }
cursor() { box "journalctl -n 0 --show-cursor -q" | sed -n 's/^-- cursor: //p'; }
journal_after() { box "journalctl -q -o cat -u $1 --after-cursor '$2'"; }

# 1. The package for this machine.
arch=$(dpkg --print-architecture)
case "$arch" in
amd64) spec=amd64:amd64: ;;
arm64) spec=arm64:arm64: ;;
armhf) spec=armhf:arm:6 ;;
*) skip "no package for architecture $arch" ;;
esac
version=0.0.0+systemdtest
deb=dist/shadowgate_${version}_${arch}.deb
make -s deb DEB_ARCHES="$spec" VERSION="$version" >/dev/null
ok "make deb ($deb, $(elapsed "$T0")s)"

# 2. A clean box.
t=$(date +%s.%N)
"$BOX" down >/dev/null 2>&1 9>&- || true
trap '"$BOX" down >/dev/null 2>&1 9>&- || true' EXIT
"$BOX" up >/dev/null 9>&-
ok "box up: $(box 'systemctl --version | head -1') ($(elapsed "$t")s)"

# A free port on loopback (the box shares the host's network) for the
# gateway's embedded broker, which shadowsvc uses too.
port=
for _ in $(seq 50); do
  p=$((20000 + RANDOM % 20000))
  if ! (echo >"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then port=$p; break; fi
done
[ -n "$port" ] || { echo "test-systemd: no free port" >&2; exit 1; }

gateway_config() { # the test's configuration; $1: extra actuators lines
  cat <<EOF
gateway: {thing: gw-systemd}
broker: {embedded: true, listen: "127.0.0.1:$port"}
cloud: {client_id: gw-systemd, conflict: cloud_wins}
store: {path: /var/lib/shadowgate/state.db}
api: {socket: /run/shadowgate/api.sock, group: shadowgate}
actuators:
  porch_light: {driver: sim, state: {on: false}}
${1:-}
EOF
}
put_config() { # write the gateway's config as a technician would
  gateway_config "$1" > "$SYSTEMD_BOX_DIR/shadowgate.yaml"
  "$BOX" cp "$SYSTEMD_BOX_DIR/shadowgate.yaml" 9>&-
  box "install -m 0640 -o root -g shadowgate /root/shadowgate.yaml /etc/shadowgate/shadowgate.yaml"
}

# 3. Install.
"$BOX" cp "$deb" 9>&-
if out=$(box "dpkg -i /root/$(basename "$deb") 2>&1"); then
  ok "dpkg -i $(basename "$deb")"
else
  fail "install: $out"; exit 1
fi
box "systemctl stop shadowgated"
c=$(cursor)
put_config ""
box "systemctl start shadowgated"

# 4. shadowgated: active after start, STATUS=, no warnings.
if [ "$(prop shadowgated ActiveState)" = active ]; then ok "shadowgated active after start (Type=$(prop shadowgated Type))"; else fail "shadowgated not active: $(box 'systemctl status shadowgated --no-pager' || true)"; fi
status=$(prop shadowgated StatusText)
case "$status" in *outbox*) ok "STATUS=$status" ;; *) fail "no STATUS= line: '$status'" ;; esac
wait_for 20 "shadowgated's link to its embedded broker" "shadowctl status | grep -q 'connected to tcp://127.0.0.1:$port'" && ok "shadowctl status in the box: connected"
# Start-up's memory goes back to the kernel under the hardened unit too
# (madvise MADV_PAGEOUT; a refusal would be a warning, checked below). The
# box's root is an overlay on a tmpfs (systemd-nspawn --volatile=overlay):
# what dpkg installs there lives in memory, so the binary's pages are the
# file itself and stay (RssShmem); on a disk they go.
wait_for 70 "start-up's memory given back" "shadowctl status | grep -q 'before start-up.s memory was given back'" &&
  ok "start-up's memory given back: $(box "shadowctl status | sed -n 's/^memory *//p'")"
warns=$(journal_after shadowgated "$c" | grep -E "mode is different|level=WARN|level=ERROR" || true)
if [ -z "$warns" ]; then ok "no warnings in the journal at start"; else fail "warnings at start: $warns"; fi
for d in /etc/shadowgate /var/lib/shadowgate /run/shadowgate; do
  echo "      $(box "stat -c '%n %U:%G %a' $d")"
done

# 4b. CONFIG_UPDATE can write under the unit: in the service's own mount
# namespace (ProtectSystem=strict, ReadWritePaths=/etc/shadowgate) and as its
# user, a new file renamed over shadowgate.yaml and a .previous copy work;
# root's files there (the keys) and the rest of /etc stay out of reach.
pid=$(prop shadowgated MainPID)
uid=$(box "id -u shadowgate"); gid=$(box "id -g shadowgate")
box "chown shadowgate:shadowgate /etc/shadowgate/shadowgate.yaml; install -m 0640 -o root -g shadowgate /dev/null /etc/shadowgate/private.pem.key"
as_service() { box "nsenter -t $pid -m -S $uid -G $gid sh -c '$*'"; }
if out=$(as_service "set -e; cd /etc/shadowgate; cp shadowgate.yaml .shadowgate.yaml.tmp-t; mv .shadowgate.yaml.tmp-t shadowgate.yaml; cp shadowgate.yaml shadowgate.yaml.previous; rm shadowgate.yaml.previous" 2>&1); then
  ok "the service can replace its configuration file in /etc/shadowgate (CONFIG_UPDATE)"
else
  fail "the service cannot replace its configuration file: $out"
fi
if as_service "rm -f /etc/shadowgate/private.pem.key" >/dev/null 2>&1 || ! box "test -e /etc/shadowgate/private.pem.key"; then
  fail "the service could delete a root-owned key file in /etc/shadowgate"
elif as_service "touch /etc/shadowgate-test" >/dev/null 2>&1; then
  fail "the service could write /etc outside /etc/shadowgate"
else
  ok "root's key files in /etc/shadowgate and the rest of /etc stay read-only to the service"
fi
box "rm -f /etc/shadowgate/private.pem.key /etc/shadowgate-test"

# 5. Reload: a good config is taken, a bad one refused visibly.
pid=$(prop shadowgated MainPID)
put_config "  fan: {driver: sim, state: {on: false}}"
if out=$(box "systemctl reload shadowgated" 2>&1); then
  if box "shadowctl actuators" | grep -q '^fan '; then ok "systemctl reload with a valid config: fan added"; else fail "reload succeeded but fan is not there"; fi
else
  fail "systemctl reload with a valid config failed: $out"
fi
[ "$(prop shadowgated MainPID)" = "$pid" ] || fail "the reload restarted the daemon"
c=$(cursor)
put_config "  fan: {driver: sim, state: {on: false}}
  broken: {driver: nope}"
badline=$(grep -n 'driver: nope' "$SYSTEMD_BOX_DIR/shadowgate.yaml" | cut -d: -f1)
want="/etc/shadowgate/shadowgate.yaml:$badline: actuators.broken.driver: unknown driver \"nope\""
if out=$(box "systemctl reload shadowgated" 2>&1); then
  fail "systemctl reload with an invalid config succeeded"
else
  ok "systemctl reload with an invalid config fails: $(echo "$out" | head -1)"
fi
if journal_after shadowgated "$c" | grep -qF "$want"; then ok "the reload's output (journal) has: $want"; else fail "no '$want' in the journal: $(journal_after shadowgated "$c")"; fi
if box "systemctl status shadowgated --no-pager -n 20" | grep -qF "$want"; then ok "systemctl status shows it"; else fail "systemctl status does not show the config error"; fi
if [ "$(prop shadowgated ActiveState)" = active ] && [ "$(prop shadowgated MainPID)" = "$pid" ] \
   && box "shadowctl actuators" | grep -q '^fan ' && ! box "shadowctl actuators" | grep -q '^broken '; then
  ok "the daemon stays up on the old config (same PID $pid, fan and no broken)"
else
  fail "after the refused reload: $(prop shadowgated ActiveState) PID $(prop shadowgated MainPID), $(box 'shadowctl actuators' 2>&1 || true)"
fi
if out=$(box "shadowctl reload" 2>&1); then fail "shadowctl reload of an invalid config succeeded"; else
  case "$out" in *"$want"*) ok "shadowctl reload says it too" ;; *) fail "shadowctl reload: $out" ;; esac
fi
put_config "  fan: {driver: sim, state: {on: false}}"
box "systemctl reload shadowgated" >/dev/null || fail "reload back to a valid config"

# watchdog_restart UNIT: SIGSTOP the main process; systemd must restart the
# service within WatchdogSec (the drop-in's) + RestartSec + slack.
watchdog_restart() {
  local unit=$1 pid t
  box "mkdir -p /run/systemd/system/$unit.service.d && printf '[Service]\nWatchdogSec=${WATCHDOG}s\nRestartSec=1s\n' > /run/systemd/system/$unit.service.d/test.conf && systemctl daemon-reload && systemctl restart $unit"
  wait_for 30 "$unit active with the short watchdog" "systemctl is-active -q $unit" || return 0
  pid=$(prop "$unit" MainPID)
  t=$(date +%s.%N)
  box "systemctl kill --kill-who=main -s SIGSTOP $unit"
  if wait_for $((WATCHDOG + 1 + SLACK)) "$unit restarted after SIGSTOP" \
      "test \$(systemctl show -p MainPID --value $unit) != $pid && test \$(systemctl show -p MainPID --value $unit) != 0 && systemctl is-active -q $unit"; then
    ok "$unit: SIGSTOP → watchdog → restarted in $(elapsed "$t")s (WatchdogSec=${WATCHDOG}s, RestartSec=1s; NRestarts=$(prop "$unit" NRestarts))"
  fi
  box "rm -r /run/systemd/system/$unit.service.d && systemctl daemon-reload"
}

# stop_clean UNIT: stop is quick, the process exits 0 by itself (no
# SIGKILL, no timeout). The journal says so: a stopped DynamicUser= unit
# is unloaded, its ExecMain* properties with it.
stop_clean() {
  local unit=$1 t c took log
  c=$(cursor)
  t=$(date +%s.%N)
  box "systemctl stop $unit"
  took=$(elapsed "$t")
  log=$(journal_after "$unit" "$c")
  if echo "$log" | grep -q "Deactivated successfully" && ! echo "$log" | grep -qiE "SIGKILL|timed out|Failed with result|status=[1-9]" \
     && awk -v s="$took" 'BEGIN { exit !(s < 10) }'; then
    ok "$unit: systemctl stop is clean and quick (${took}s, deactivated successfully)"
  else
    fail "$unit: stop took ${took}s: $log"
  fi
}

# security UNIT: systemd-analyze security at most 2.0.
security() {
  local unit=$1 line score
  line=$(box "systemd-analyze security $unit --no-pager" 2>&1 | grep 'Overall exposure level' || true)
  score=$(echo "$line" | grep -oE '[0-9]+\.[0-9]+' | head -1)
  if [ -n "$score" ] && awk -v s="$score" 'BEGIN { exit !(s <= 2.0) }'; then ok "$unit: systemd-analyze security $score (at most 2.0)"; else fail "$unit: systemd-analyze security: '$line'"; fi
}

# 6. The watchdog, stop, security.
watchdog_restart shadowgated
stop_clean shadowgated
security shadowgated
box "systemctl start shadowgated"

# 7. shadowsvc.service: on the gateway's embedded broker, under its own
# topic root. It has no configuration file, so no reload.
box "echo 'SHADOWSVC_OPTS=\"--broker tcp://127.0.0.1:$port --topic-root svc-things/\"' > /etc/default/shadowsvc && systemctl start shadowsvc"
if [ "$(prop shadowsvc ActiveState)" = active ]; then ok "shadowsvc active after start (Type=$(prop shadowsvc Type))"; else fail "shadowsvc not active: $(box 'systemctl status shadowsvc --no-pager' || true)"; fi
status=$(prop shadowsvc StatusText)
case "$status" in *requests*) ok "shadowsvc STATUS=$status" ;; *) fail "shadowsvc: no STATUS= line: '$status'" ;; esac
watchdog_restart shadowsvc
wait_for 20 "shadowsvc connected (STATUS)" "systemctl show -p StatusText --value shadowsvc | grep -q 'connected to tcp://127.0.0.1:$port'" && ok "shadowsvc STATUS=$(prop shadowsvc StatusText)"
stop_clean shadowsvc
security shadowsvc
box "systemctl start shadowsvc"
box "test -e /var/lib/private/shadowsvc/shadows.db" || fail "shadowsvc has no store in /var/lib/private/shadowsvc"

# 8. Purge: the user, the state and the config go.
box "dpkg --purge shadowgate >/dev/null 2>&1"
left=$(box 'getent passwd shadowgate; getent group shadowgate; for p in /var/lib/shadowgate /etc/shadowgate /var/lib/shadowsvc /var/lib/private/shadowsvc /run/shadowgate /usr/bin/shadowgated /lib/systemd/system/shadowgated.service; do [ -e $p ] && echo $p; done; systemctl is-active shadowgated shadowsvc | grep -vx -e inactive -e unknown' || true)
if [ -z "$left" ]; then ok "purge removes the user, the state, the config and the units"; else fail "left after purge: $left"; fi

if [ "$FAILS" -gt 0 ]; then
  echo "--- journal of shadowgated and shadowsvc (last 60 lines)"
  box "journalctl -q -n 60 -u shadowgated -u shadowsvc --no-pager" || true
  echo "test-systemd: $FAILS check(s) failed ($(elapsed "$T0")s)"
  echo "test-systemd: $PASSES passed, $FAILS failed"
  exit 1
fi
echo "test-systemd: all checks passed ($(elapsed "$T0")s)"
echo "test-systemd: $PASSES passed, $FAILS failed"
