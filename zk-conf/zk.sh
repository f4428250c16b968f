#!/bin/bash
# Starts and stops local ZooKeeper servers for development and tests, on
# loopback only, with the Debian `zookeeper` package (which starts nothing
# by itself).
#
#   zk.sh start DIR PORT            one server, data and log in DIR, client
#                                   port PORT; returns once it serves
#   zk.sh stop DIR                  stops it (SIGTERM, then SIGKILL)
#   zk.sh start-ensemble DIR BASE   three servers in DIR/1..3, client ports
#                                   BASE..BASE+2, quorum ports BASE+3..+5,
#                                   election ports BASE+6..+8
#   zk.sh start-ensemble DIR BASE PROXY
#                                   the same, but each server reaches each
#                                   other one only through relayed ports
#                                   PROXY..PROXY+11: server s reaches
#                                   server t (t != s, pairs in the order
#                                   1-2 1-3 2-1 2-3 3-1 3-2) at the quorum
#                                   port PROXY+2k and the election port
#                                   PROXY+2k+1 of the pair's number k. The
#                                   caller relays them to the real ports
#                                   and can cut any one server off.
#   zk.sh resume DIR PORT           starts the server of DIR (one member of
#                                   an ensemble, stopped or killed) again
#                                   on its zoo.cfg and data; returns once
#                                   it serves
#   zk.sh stop-ensemble DIR
#   zk.sh start-split DIR BASE PROXY
#                                   the same ensemble, but server 3 reaches
#                                   servers 1 and 2 only through ports
#                                   PROXY..PROXY+3 (quorum and election
#                                   ports of 1, then of 2) and they reach
#                                   it through PROXY+4, PROXY+5: a test
#                                   relays them and can cut server 3 off.
#                                   Servers 1 and 2 start first, so that
#                                   server 3 joins as a follower.
#   zk.sh probe PORT [WORD]         prints the answer to a four-letter word
#
# Environment:
#   ZK_TICK_MS     tickTime (default 2000). Session timeouts must lie
#                  within 2..20 ticks, so tests that want quick expiry use
#                  a short tick.
#   ZK_WATCH_PID   if set, a watcher stops the server once that process is
#                  gone, so a crashed test does not leave a server behind.
#   ZK_READY_SECS  how long start waits for readiness (default 30).
#   ZK_HOME        ZooKeeper installation (default /usr/share/zookeeper).
#   ZK_SUPER_DIGEST  "super:<base64 of SHA-1 of super:password>": the
#                  servers' superDigest, an identity that passes every ACL
#                  (docs/security.md, "ZooKeeper", shows how to make one).
#                  Unset: none.
#
# Each server runs in the foreground of its own background process: its
# PID (the java process, since start-foreground execs java) is written to
# DIR/zk.pid, its output to DIR/zk.out, its log to DIR/zk.log.
set -u

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ZK_HOME="${ZK_HOME:-/usr/share/zookeeper}"
TICK="${ZK_TICK_MS:-2000}"
READY_SECS="${ZK_READY_SECS:-30}"
SUPER_DIGEST="${ZK_SUPER_DIGEST:-}"
JARS=/usr/share/java
CLASSPATH_ZK="$JARS/zookeeper.jar:$JARS/slf4j-log4j12.jar:$JARS/log4j-1.2.jar"

die() {
    echo "zk.sh: $*" >&2
    exit 1
}

# probe PORT WORD: one four-letter-word exchange with a bounded read. The
# read timeout matters: a probe sent while the port is just opening can be
# accepted and never answered.
probe() {
    local port="$1" word="${2:-srvr}" line out=""
    exec 3<>"/dev/tcp/127.0.0.1/$port" 2>/dev/null || return 1
    printf '%s' "$word" >&3 2>/dev/null || { exec 3<&- 3>&-; return 1; }
    while IFS= read -r -t 2 line <&3; do
        out="$out$line"$'\n'
    done
    out="$out$line"
    exec 3<&- 3>&-
    [ -n "$out" ] || return 1
    printf '%s\n' "$out"
}

# ready PORT: the server answers srvr with its mode, which it does only
# once it is serving (a quorum member without quorum says it is not
# currently serving requests).
ready() {
    probe "$1" srvr 2>/dev/null | grep -q '^Mode:'
}

# port_free PORTS...: fails, naming the port, when something already listens
# on one. A server started there would die at its bind while the one
# already there answered the readiness probe in its place, and start
# would report a server that is not ours.
port_free() {
    local port
    for port in "$@"; do
        if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
            echo "zk.sh: port $port on 127.0.0.1 is in use (another server listens there); choose a free one" >&2
            return 1
        fi
    done
}

# render DIR PORT SERVERS MYID: writes DIR/zoo.cfg (and DIR/data/myid).
render() {
    local dir="$1" port="$2" servers="$3" myid="$4"
    mkdir -p "$dir/data" || die "cannot create $dir/data"
    local super="# no superDigest (ZK_SUPER_DIGEST unset)"
    if [ -n "$SUPER_DIGEST" ]; then
        case "$SUPER_DIGEST" in
        *[!A-Za-z0-9+/=:._-]* | *:*:* | :* | *:) die "bad ZK_SUPER_DIGEST" ;;
        *:*) ;;
        *) die "bad ZK_SUPER_DIGEST (user:digest)" ;;
        esac
        super="DigestAuthenticationProvider.superDigest=$SUPER_DIGEST"
    fi
    sed -e "s|@TICK@|$TICK|" -e "s|@DATADIR@|$dir/data|" \
        -e "s|@PORT@|$port|" -e "s|@SERVERS@|$servers|" \
        -e "s|@SUPERDIGEST@|$super|" \
        "$HERE/zoo.cfg.in" | tr '\001' '\n' >"$dir/zoo.cfg" ||
        die "cannot write $dir/zoo.cfg"
    if [ -n "$myid" ]; then
        echo "$myid" >"$dir/data/myid"
    fi
}

# launch DIR: starts the server of DIR/zoo.cfg in the background.
launch() {
    local dir="$1" pid
    if [ -f "$dir/zk.pid" ] && kill -0 "$(cat "$dir/zk.pid")" 2>/dev/null; then
        die "a server already runs for $dir (pid $(cat "$dir/zk.pid"))"
    fi
    # zkEnv.sh fixes a class path without an SLF4J binding, so the server
    # would log nothing; the later -cp here wins and adds log4j's.
    JMXDISABLE=true \
    SERVER_JVMFLAGS="-cp $CLASSPATH_ZK -Dlog4j.configuration=file:$HERE/log4j.properties -Dkeel.zk.log=$dir/zk.log -Xms16m -Xmx1g -XX:+UseSerialGC -XX:TieredStopAtLevel=1" \
        "$ZK_HOME/bin/zkServer.sh" start-foreground "$dir/zoo.cfg" \
        >"$dir/zk.out" 2>&1 </dev/null &
    pid=$!
    echo "$pid" >"$dir/zk.pid"
    if [ -n "${ZK_WATCH_PID:-}" ]; then
        (
            trap '' HUP
            while kill -0 "$ZK_WATCH_PID" 2>/dev/null && kill -0 "$pid" 2>/dev/null; do
                sleep 1
            done
            kill -TERM "$pid" 2>/dev/null
        ) >/dev/null 2>&1 </dev/null &
    fi
}

# await DIR PORT: waits (bounded) for readiness; fails if the server died.
await() {
    local dir="$1" port="$2" pid deadline
    pid="$(cat "$dir/zk.pid")"
    deadline=$((SECONDS + READY_SECS))
    while [ "$SECONDS" -lt "$deadline" ]; do
        if ! kill -0 "$pid" 2>/dev/null; then
            echo "zk.sh: server for $dir exited during start; its output:" >&2
            tail -n 30 "$dir/zk.out" "$dir/zk.log" >&2 2>/dev/null
            return 1
        fi
        ready "$port" && return 0
        sleep 0.1
    done
    echo "zk.sh: server for $dir not ready after ${READY_SECS}s" >&2
    tail -n 30 "$dir/zk.log" >&2 2>/dev/null
    return 1
}

# halt DIR: SIGTERM, wait up to 15 s, then SIGKILL.
halt() {
    local dir="$1" pid i
    [ -f "$dir/zk.pid" ] || return 0
    pid="$(cat "$dir/zk.pid")"
    if kill -TERM "$pid" 2>/dev/null; then
        for i in $(seq 150); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        if kill -0 "$pid" 2>/dev/null; then
            echo "zk.sh: server $pid ignored SIGTERM; killing it" >&2
            kill -KILL "$pid" 2>/dev/null
        fi
    fi
    rm -f "$dir/zk.pid"
}

check_port() {
    case "$1" in
    '' | *[!0-9]*) die "bad port '$1'" ;;
    esac
    if [ "$1" -lt 1 ] || [ "$1" -gt 65535 ]; then
        die "bad port '$1'"
    fi
}

absdir() {
    mkdir -p "$1" || die "cannot create $1"
    (cd "$1" && pwd)
}

cmd="${1:-}"
case "$cmd" in
start)
    [ $# -eq 3 ] || die "usage: zk.sh start DIR PORT"
    check_port "$3"
    dir="$(absdir "$2")"
    # A server of DIR's own: launch names it.
    if ! { [ -f "$dir/zk.pid" ] && kill -0 "$(cat "$dir/zk.pid")" 2>/dev/null; }; then
        port_free "$3" || exit 1
    fi
    render "$dir" "$3" "" ""
    launch "$dir"
    await "$dir" "$3" || { halt "$dir"; exit 1; }
    ;;
stop)
    [ $# -eq 2 ] || die "usage: zk.sh stop DIR"
    halt "$2"
    ;;
start-ensemble)
    [ $# -eq 3 ] || [ $# -eq 4 ] ||
        die "usage: zk.sh start-ensemble DIR BASEPORT [PROXYPORT]"
    check_port "$3"
    check_port "$(($3 + 8))"
    base="$3"
    proxy="${4:-}"
    if [ -n "$proxy" ]; then
        check_port "$proxy"
        check_port "$((proxy + 11))"
    fi
    port_free $(seq "$base" "$((base + 8))") || exit 1
    dir="$(absdir "$2")"
    # The server lines go through sed on one line; \001 becomes a newline.
    # Each server's own line has its real ports (it binds them); with
    # PROXY, the others' lines have the relayed ones.
    k=0
    for i in 1 2 3; do
        servers=""
        for j in 1 2 3; do
            if [ -z "$proxy" ] || [ "$i" -eq "$j" ]; then
                servers="${servers}server.$j=127.0.0.1:$((base + 2 + j)):$((base + 5 + j))"$'\001'
            else
                servers="${servers}server.$j=127.0.0.1:$((proxy + 2 * k)):$((proxy + 2 * k + 1))"$'\001'
                k=$((k + 1))
            fi
        done
        render "$dir/$i" "$((base + i - 1))" "$servers" "$i"
    done
    for i in 1 2 3; do
        launch "$dir/$i"
    done
    for i in 1 2 3; do
        if ! await "$dir/$i" "$((base + i - 1))"; then
            for j in 1 2 3; do halt "$dir/$j"; done
            exit 1
        fi
    done
    ;;
start-split)
    [ $# -eq 4 ] || die "usage: zk.sh start-split DIR BASEPORT PROXYPORT"
    check_port "$3"
    check_port "$(($3 + 8))"
    check_port "$4"
    check_port "$(($4 + 5))"
    base="$3"
    proxy="$4"
    # The relayed ports are the test's own; the servers' are checked.
    port_free $(seq "$base" "$((base + 8))") || exit 1
    dir="$(absdir "$2")"
    near=""
    far=""
    for i in 1 2; do
        near="${near}server.$i=127.0.0.1:$((base + 2 + i)):$((base + 5 + i))"$'\001'
        far="${far}server.$i=127.0.0.1:$((proxy + 2 * i - 2)):$((proxy + 2 * i - 1))"$'\001'
    done
    near="${near}server.3=127.0.0.1:$((proxy + 4)):$((proxy + 5))"$'\001'
    far="${far}server.3=127.0.0.1:$((base + 5)):$((base + 8))"$'\001'
    render "$dir/1" "$base" "$near" 1
    render "$dir/2" "$((base + 1))" "$near" 2
    render "$dir/3" "$((base + 2))" "$far" 3
    launch "$dir/1"
    launch "$dir/2"
    for i in 1 2; do
        if ! await "$dir/$i" "$((base + i - 1))"; then
            for j in 1 2; do halt "$dir/$j"; done
            exit 1
        fi
    done
    launch "$dir/3"
    if ! await "$dir/3" "$((base + 2))"; then
        for j in 1 2 3; do halt "$dir/$j"; done
        exit 1
    fi
    ;;
resume)
    [ $# -eq 3 ] || die "usage: zk.sh resume DIR PORT"
    check_port "$3"
    dir="$(absdir "$2")"
    [ -f "$dir/zoo.cfg" ] || die "no $dir/zoo.cfg: nothing to resume"
    port_free "$3" || exit 1
    launch "$dir"
    await "$dir" "$3" || { halt "$dir"; exit 1; }
    ;;
stop-ensemble)
    [ $# -eq 2 ] || die "usage: zk.sh stop-ensemble DIR"
    for i in 1 2 3; do
        halt "$2/$i" &
    done
    wait
    ;;
probe)
    [ $# -ge 2 ] || die "usage: zk.sh probe PORT [WORD]"
    check_port "$2"
    probe "$2" "${3:-srvr}"
    ;;
*)
    die "usage: zk.sh {start DIR PORT|stop DIR|start-ensemble DIR BASEPORT [PROXYPORT]|resume DIR PORT|start-split DIR BASEPORT PROXYPORT|stop-ensemble DIR|probe PORT [WORD]}"
    ;;
esac
