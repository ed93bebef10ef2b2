#!/usr/bin/env bash
# lab.sh: start, by hand, a lab like test/lab's, to try Outcall out; remove it.
#
#   sudo tools/lab/lab.sh up      build outcalld, outcall and tools/echo, then start
#                                 the lab and print how to use it
#   sudo tools/lab/lab.sh status  the lab's namespaces, the daemon, the endpoints
#   sudo tools/lab/lab.sh down    stop the daemon and the echo, remove everything
#
# The lab (../../../shared/TESTING.md; the same addresses as test/lab):
#
#   $P-up    upstream namespace, "the internet": 192.0.2.2 on the uplink,
#            198.51.100.10 and 203.0.113.10 on lo, each with a TCP echo on
#            :80 and :443 and a UDP echo on :9000 (tools/echo)
#   $P-host  host namespace: 192.0.2.1, default route into $P-up, outcalld
#            started with nsenter --net (never ip netns exec, which remounts
#            /sys and so hides the pins), its bridge ${P}br with the gateway
#            10.200.0.1, pins under /sys/fs/bpf/$P
#   $P-a1    agent 10.200.0.10 (02:00:0a:c8:00:0a) on port ${P}a1 of ${P}br
#   $P-a2    agent 10.200.0.11 (02:00:0a:c8:00:0b) on port ${P}a2 of ${P}br
#   $P-b1    agent 10.200.1.10 (02:00:0a:c8:01:0a) on port ${P}b1 of the
#            bridge of a second network, outcall-second (10.200.1.0/24,
#            gateway 10.200.1.1), made with `outcall network create`
#
# The agents are registered as endpoints a1, a2 and b1. The rules directory is
# the lab's own and starts empty, so everything is blocked until you add a
# grant or a rule file. Every address exists only inside these namespaces,
# so no packet of the lab leaves the machine.
#
# Environment:
#   PREFIX    name prefix of everything the lab creates (default ocl; 2-9
#             lowercase letters or digits, so interface names fit 15 bytes)
#   LAB_DIR   sockets, state, rules, logs, binaries (default /tmp/$PREFIX-lab)
#   BIN_DIR   take outcalld, outcall and echo from here instead of building
#   ECHO_FOR  how long the echo servers live (default 8h)
set -euo pipefail

PREFIX=${PREFIX:-ocl}
if ! [[ $PREFIX =~ ^[a-z][a-z0-9]{1,8}$ ]]; then
	echo "lab.sh: PREFIX must be 2-9 lowercase letters or digits, starting with a letter" >&2
	exit 2
fi
P=$PREFIX
LAB_DIR=${LAB_DIR:-/tmp/$P-lab}
PIN_DIR=/sys/fs/bpf/$P
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
export PATH="$PATH:/usr/local/go/bin:/usr/sbin:/sbin"

HOST_UPLINK=192.0.2.1
UPSTREAM_UPLINK=192.0.2.2
UPSTREAM=198.51.100.10
UPSTREAM2=203.0.113.10
GATEWAY=10.200.0.1
NAMESPACES=("$P-host" "$P-up" "$P-a1" "$P-a2" "$P-b1")

in_ns() { local ns=$1; shift; nsenter --net="/run/netns/$ns" "$@"; }

die() { echo "lab.sh: $*" >&2; exit 1; }

# stop_pid stops the process recorded in pid file $1 (its pid, then its
# binary): SIGINT, up to 10 s to exit, then SIGKILL. A pid whose process runs
# another binary (a stale file) is left alone.
stop_pid() {
	local file=$1 pid bin
	[ -f "$file" ] || return 0
	{ read -r pid; read -r bin; } <"$file"
	if [ "$(readlink "/proc/$pid/exe" 2>/dev/null)" = "$bin" ]; then
		kill -INT "$pid" 2>/dev/null || true
		for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
		kill -KILL "$pid" 2>/dev/null || true
	fi
	rm -f "$file"
}

down() {
	stop_pid "$LAB_DIR/outcalld.pid"
	stop_pid "$LAB_DIR/echo.pid"
	for ns in "${NAMESPACES[@]}"; do
		[ -e "/run/netns/$ns" ] && ip netns del "$ns"
	done
	rm -rf "$PIN_DIR" "$LAB_DIR"
	echo "lab $P removed"
}

# add_agent NAME IP MAC [BRIDGE GATEWAY]: an agent namespace on the default
# network's bridge, or on BRIDGE with GATEWAY.
add_agent() {
	local name=$1 ip=$2 mac=$3 bridge=${4:-${P}br} gw=${5:-$GATEWAY} ns=$P-$1 port=$P$1
	ip netns add "$ns"
	in_ns "$ns" ip link set lo up
	ip link add "$port" netns "$P-host" type veth peer name eth0 netns "$ns"
	in_ns "$ns" ip link set eth0 address "$mac"
	in_ns "$ns" ip addr add "$ip/24" dev eth0
	in_ns "$ns" ip link set eth0 up
	in_ns "$ns" ip route add default via "$gw"
	in_ns "$P-host" ip link set "$port" master "$bridge"
	in_ns "$P-host" ip link set "$port" up
	# The port may still be joining the bridge: retry until outcalld has
	# attached its program and takes the endpoint.
	for _ in $(seq 100); do
		if "$BIN_DIR/outcall" --socket "$LAB_DIR/host.sock" endpoint add \
			--name "$name" --interface "$port" --ip "$ip" --mac "$mac" >/dev/null 2>&1; then
			return 0
		fi
		sleep 0.1
	done
	die "endpoint $name was never registered; see $LAB_DIR/outcalld.log"
}

up() {
	[ "$(id -u)" = 0 ] || die "run as root (namespaces, BPF, nftables)"
	mountpoint -q /sys/fs/bpf || die "bpffs is not mounted at /sys/fs/bpf"
	for ns in "${NAMESPACES[@]}"; do
		[ -e "/run/netns/$ns" ] && die "namespace $ns exists: run '$0 down' first (PREFIX=$P)"
	done
	mkdir -p "$LAB_DIR/rules.d" "$LAB_DIR/state"
	if [ -z "${BIN_DIR:-}" ]; then
		BIN_DIR=$LAB_DIR/bin
		echo "building into $BIN_DIR"
		(cd "$ROOT" && CGO_ENABLED=0 go build -o "$BIN_DIR/" ./cmd/outcalld ./cmd/outcall ./tools/echo)
	fi
	# Whatever fails from here on, remove what was made.
	trap 'rc=$?; if [ $rc != 0 ]; then echo "lab.sh: start failed; removing the lab" >&2; down; fi' EXIT

	ip netns add "$P-host"
	ip netns add "$P-up"
	in_ns "$P-host" ip link set lo up
	in_ns "$P-up" ip link set lo up
	ip link add "${P}h" netns "$P-host" type veth peer name "${P}u" netns "$P-up"
	in_ns "$P-host" ip addr add "$HOST_UPLINK/24" dev "${P}h"
	in_ns "$P-host" ip link set "${P}h" up
	in_ns "$P-host" ip route add default via "$UPSTREAM_UPLINK"
	in_ns "$P-host" sysctl -qw net.ipv4.ip_forward=1
	in_ns "$P-up" ip addr add "$UPSTREAM_UPLINK/24" dev "${P}u"
	in_ns "$P-up" ip link set "${P}u" up
	in_ns "$P-up" ip addr add "$UPSTREAM/32" dev lo
	in_ns "$P-up" ip addr add "$UPSTREAM2/32" dev lo
	in_ns "$P-up" ip route add 10.200.0.0/16 via "$HOST_UPLINK"

	# nsenter, not in_ns: a function run with & is a subshell, and $! must
	# be the server itself (nsenter execs it in place).
	nsenter --net="/run/netns/$P-up" "$BIN_DIR/echo" -for "${ECHO_FOR:-8h}" \
		-tcp "$UPSTREAM:80,$UPSTREAM:443,$UPSTREAM2:80,$UPSTREAM2:443" \
		-udp "$UPSTREAM:9000,$UPSTREAM2:9000" >"$LAB_DIR/echo.log" 2>&1 &
	printf '%s\n%s\n' $! "$(readlink -f "$BIN_DIR/echo")" >"$LAB_DIR/echo.pid"

	nsenter --net="/run/netns/$P-host" "$BIN_DIR/outcalld" --bridge "${P}br" --socket "$LAB_DIR/host.sock" \
		--state-dir "$LAB_DIR/state" --pin-dir "$PIN_DIR" --rules-dir "$LAB_DIR/rules.d" \
		--metrics-addr 127.0.0.1:9469 --log-level debug --no-docker >"$LAB_DIR/outcalld.log" 2>&1 &
	printf '%s\n%s\n' $! "$(readlink -f "$BIN_DIR/outcalld")" >"$LAB_DIR/outcalld.pid"
	for _ in $(seq 150); do
		[ -S "$LAB_DIR/host.sock" ] && break
		kill -0 "$(head -1 "$LAB_DIR/outcalld.pid")" 2>/dev/null || die "outcalld exited; see $LAB_DIR/outcalld.log"
		sleep 0.1
	done
	[ -S "$LAB_DIR/host.sock" ] || die "outcalld's socket never appeared; see $LAB_DIR/outcalld.log"

	add_agent a1 10.200.0.10 02:00:0a:c8:00:0a
	add_agent a2 10.200.0.11 02:00:0a:c8:00:0b
	"$BIN_DIR/outcall" --socket "$LAB_DIR/host.sock" network create --name second >/dev/null
	# A network's bridge is ocbr- and 10 hex digits of sha256(name).
	add_agent b1 10.200.1.10 02:00:0a:c8:01:0a "ocbr-$(printf %s outcall-second | sha256sum | cut -c1-10)" 10.200.1.1
	trap - EXIT

	cat <<EOF
lab $P is up (logs in $LAB_DIR). Everything is blocked until you open it:

  outcall() { $BIN_DIR/outcall --socket $LAB_DIR/host.sock "\$@"; }
  outcall endpoint list
  outcall network list                                      # outcall-default and outcall-second (b1)
  outcall grant add --endpoint a1 --dst $UPSTREAM --proto tcp --port 80
  # a TCP echo through the grant, then one that no grant opens (it times out):
  timeout 3 nsenter --net=/run/netns/$P-a1 bash -c 'exec 3<>/dev/tcp/$UPSTREAM/80; echo hi >&3; head -1 <&3'
  timeout 3 nsenter --net=/run/netns/$P-a1 bash -c 'exec 3<>/dev/tcp/$UPSTREAM/443; echo hi >&3; head -1 <&3'
  ls $LAB_DIR/rules.d                                       # rule files go here
  nsenter --net=/run/netns/$P-host curl -s 127.0.0.1:9469/metrics | grep outcall_datapath
  bpftool map dump pinned $PIN_DIR/counters

Remove it with: sudo PREFIX=$P $0 down
EOF
}

status() {
	ip netns list | awk -v p="$P-" 'index($1, p) == 1'
	if [ -f "$LAB_DIR/outcalld.pid" ] && kill -0 "$(head -1 "$LAB_DIR/outcalld.pid")" 2>/dev/null; then
		echo "outcalld running, pid $(head -1 "$LAB_DIR/outcalld.pid")"
		"${BIN_DIR:-$LAB_DIR/bin}/outcall" --socket "$LAB_DIR/host.sock" endpoint list || true
	else
		echo "outcalld not running"
	fi
}

case "${1:-}" in
up) up ;;
down) down ;;
status) status ;;
*) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2; exit 2 ;;
esac
