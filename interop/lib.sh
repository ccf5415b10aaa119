# Shared by run.sh and ctl.sh: start and stop SPIRE servers and agents under $SC_INTEROP_WORK.
# Every process started here writes its pid to $SC_INTEROP_WORK/pids/NAME.pid, so that run.sh's
# exit trap stops it whoever started it (run.sh itself, or a test through ctl.sh).
# shellcheck shell=bash

W=${SC_INTEROP_WORK:?SC_INTEROP_WORK is not set}
BIN=$W/bin

log() { echo "interop: $*" >&2; }
die() { log "$*"; exit 1; }

# srv TD ARGS...: spire-server CLI against trust domain TD's server
srv() { local td=$1; shift; "$BIN/spire-server" "$1" "${@:2}" -socketPath "$W/$td/server.sock"; }

# wait_for WHAT CMD...: polls CMD (every 0.2 s, up to 60 s) until it succeeds
wait_for() {
  local what=$1; shift
  local i
  for i in $(seq 300); do
    if "$@" >/dev/null 2>&1; then return 0; fi
    sleep 0.2
  done
  die "timed out waiting for $what"
}

# entry TD ENTRY_ID SPIFFE_ID BINARY [more spire-server entry create flags]: a workload entry
# under TD's agent, selected by the binary's path
entry() {
  local td=$1 id=$2 spiffe_id=$3 exe=$4; shift 4
  srv "$td" entry create -entryID "$id" -parentID "spiffe://$td.test/agent" -spiffeID "$spiffe_id" \
    -selector "unix:path:$BIN/$exe" -x509SVIDTTL 30 "$@" >/dev/null
}

running() { [ -f "$W/pids/$1.pid" ] && kill -0 "$(cat "$W/pids/$1.pid")" 2>/dev/null; }

server_start() {
  local td=$1
  running "server-$td" && return 0
  "$BIN/spire-server" run -config "$W/$td/server.conf" >>"$W/$td/server.log" 2>&1 &
  echo $! >"$W/pids/server-$td.pid"
  wait_for "spire-server $td" "$BIN/spire-server" healthcheck -socketPath "$W/$td/server.sock"
}

# agent_start TD: the first start attests with a join token; later starts reuse the agent's SVID
# kept in its data dir (KeyManager "disk").
agent_start() {
  local td=$1
  running "agent-$td" && return 0
  local token=()
  if [ ! -f "$W/$td/agent-data/agent-data.json" ] && [ -f "$W/$td/join-token" ]; then
    token=(-joinToken "$(cat "$W/$td/join-token")")
  fi
  "$BIN/spire-agent" run -config "$W/$td/agent.conf" "${token[@]}" >>"$W/$td/agent.log" 2>&1 &
  echo $! >"$W/pids/agent-$td.pid"
  wait_for "spire-agent $td" "$BIN/spire-agent" healthcheck -socketPath "$W/$td/agent.sock"
}

# stop NAME: SIGTERM, then SIGKILL after 10 s
stop() {
  local name=$1 pid i
  [ -f "$W/pids/$name.pid" ] || return 0
  pid=$(cat "$W/pids/$name.pid")
  if kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid" 2>/dev/null || true
    for i in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
    kill -KILL "$pid" 2>/dev/null || true
  fi
  rm -f "$W/pids/$name.pid"
}

stop_all() {
  local f
  for f in "$W"/pids/*.pid; do
    [ -e "$f" ] || continue
    stop "$(basename "$f" .pid)"
  done
}
