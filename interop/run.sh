#!/usr/bin/env bash
# The interop suite: this crate against a real SPIRE (server + agent) and go-spiffe peers.
#
#   interop/run.sh            build (cached), start SPIRE for a.test and b.test on 127.0.0.1 and
#                             unix sockets in a temp dir, run tests/spire.rs, stop everything
#
# Needs Go (go.mod's version or newer) and the Go module proxy on a cold cache; SPIRE is pinned
# in interop/spire/go.mod (tool dependencies), go-spiffe in interop/go.mod. Binaries go to interop/.bin (git-ignored);
# Go's build and module caches make later runs incremental.
#
# Workloads are told apart by the unix workload attestor's `unix:path` selector: the Rust test
# binary is copied under several names (sc-main, sc-peer, sc-doomed, sc-fed), each registered
# with its own SPIFFE ID, and runs as separate processes (a test spawns sc-peer as its peer).
# Environment given to the tests: SPIFFE_ENDPOINT_SOCKET (a.test's agent), SC_INTEROP_AGENT_B,
# SC_INTEROP_BIN (the copies and the Go programs), SC_INTEROP_CTL (ctl.sh, to stop/start the
# agent, delete an entry, remove federation, federate with our bundle endpoint), SC_INTEROP_WORK,
# SC_INTEROP_BUNDLE_ENDPOINT_A and _B (SPIRE's bundle endpoints).
# Set SC_INTEROP_KEEP=1 to keep the temp dir (configs, logs) after a successful run.
# Every case must run and pass; the run fails otherwise.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
INTEROP=$ROOT/interop
started=$(date +%s)

command -v go >/dev/null 2>&1 || { echo "interop: go is not installed (needed for SPIRE and go-spiffe)" >&2; exit 1; }
command -v cargo >/dev/null 2>&1 || { echo "interop: cargo is not installed" >&2; exit 1; }
command -v openssl >/dev/null 2>&1 || { echo "interop: openssl is not installed (the https_web certificates)" >&2; exit 1; }

echo "== interop: go build (SPIRE, go-spiffe programs)"
# Two modules: SPIRE v1.13.3 is built with its own dependency versions (interop/spire), apart
# from our go-spiffe v2.9.0 programs (interop): in one module, go-spiffe v2.9.0's Workload API
# (with the WIT-SVID methods) would be selected for SPIRE too, and its agent does not build.
(cd "$INTEROP/spire" && go build -o ../.bin/ \
  github.com/spiffe/spire/cmd/spire-server \
  github.com/spiffe/spire/cmd/spire-agent)
(cd "$INTEROP" && go build -o .bin/ ./cmd/go-server ./cmd/go-client ./cmd/go-jwt)

echo "== interop: cargo test --all-features --test spire --no-run"
tests_exe=$(cd "$ROOT" && cargo test -q --all-features --test spire --no-run --message-format=json \
  | jq -r 'select(.reason == "compiler-artifact" and .target.name == "spire" and .executable != null) | .executable' \
  | tail -1)
[ -x "$tests_exe" ] || { echo "interop: the spire test binary was not built" >&2; exit 1; }

SC_INTEROP_WORK=$(realpath "$(mktemp -d /tmp/sc-interop.XXXXXX)")
export SC_INTEROP_WORK
# shellcheck source=interop/lib.sh
. "$INTEROP/lib.sh"
mkdir -p "$BIN" "$W/pids" "$W/a" "$W/b"

ok=0
cleanup() {
  stop_all
  if [ "$ok" = 1 ] && [ -z "${SC_INTEROP_KEEP:-}" ]; then
    rm -rf "$W"
  else
    echo "interop: logs kept in $W (server.log, agent.log, tests.log under a/ b/ and $W)" >&2
  fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

cp "$INTEROP"/.bin/{spire-server,spire-agent,go-server,go-client,go-jwt} "$BIN/"
for name in sc-main sc-peer sc-doomed sc-fed; do cp "$tests_exe" "$BIN/$name"; done

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
declare -A port fed_port
for td in a b w; do port[$td]=$(free_port); fed_port[$td]=$(free_port); done

for td in a b; do
  cat >"$W/$td/server.conf" <<CONF
server {
  bind_address = "127.0.0.1"
  bind_port = "${port[$td]}"
  socket_path = "$W/$td/server.sock"
  trust_domain = "$td.test"
  data_dir = "$W/$td/server-data"
  log_level = "INFO"
  # Short SVIDs so that the agent rotates them within a test (at half their lifetime).
  default_x509_svid_ttl = "30s"
  default_jwt_svid_ttl = "5m"
  # The agent's own SVID outlives the "agent gone" test, so a restarted agent needs no new token.
  agent_ttl = "1h"
  ca_ttl = "24h"
  federation {
    bundle_endpoint {
      address = "127.0.0.1"
      port = ${fed_port[$td]}
      refresh_hint = "5s"
      profile "https_spiffe" {}
    }
  }
}
plugins {
  DataStore "sql" {
    plugin_data {
      database_type = "sqlite3"
      connection_string = "$W/$td/server-data/datastore.sqlite3"
    }
  }
  NodeAttestor "join_token" {
    plugin_data {}
  }
  KeyManager "memory" {
    plugin_data {}
  }
}
CONF
  cat >"$W/$td/agent.conf" <<CONF
agent {
  data_dir = "$W/$td/agent-data"
  log_level = "INFO"
  server_address = "127.0.0.1"
  server_port = "${port[$td]}"
  socket_path = "$W/$td/agent.sock"
  trust_bundle_path = "$W/$td/bootstrap.pem"
  trust_domain = "$td.test"
}
plugins {
  NodeAttestor "join_token" {
    plugin_data {}
  }
  KeyManager "disk" {
    plugin_data {
      directory = "$W/$td/agent-data"
    }
  }
  WorkloadAttestor "unix" {
    plugin_data {
      discover_workload_path = true
      # never hash the (large) workload binaries
      workload_size_limit = -1
    }
  }
}
CONF
done

# w.test: a third SPIRE server (no agent) whose bundle endpoint has the https_web profile, with
# a WebPKI certificate for 127.0.0.1 from a CA made here; the server trusts that CA as a system
# root (SSL_CERT_FILE), so that it can also fetch our https_web bundle endpoint, which presents
# the same certificate.
mkdir -p "$W/web" "$W/w"
openssl req -x509 -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
  -subj "/O=interop web CA" -keyout "$W/web/ca.key" -out "$W/web/ca.pem" \
  -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign" 2>/dev/null
openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/O=interop web" \
  -keyout "$W/web/server.key" -out "$W/web/server.csr" 2>/dev/null
printf '%s\n' "basicConstraints=critical,CA:FALSE" "keyUsage=critical,digitalSignature" \
  "extendedKeyUsage=serverAuth" "subjectAltName=IP:127.0.0.1" >"$W/web/server.ext"
openssl x509 -req -in "$W/web/server.csr" -CA "$W/web/ca.pem" -CAkey "$W/web/ca.key" \
  -CAcreateserial -days 2 -sha256 -extfile "$W/web/server.ext" -out "$W/web/server.pem" 2>/dev/null
cat >"$W/w/server.conf" <<CONF
server {
  bind_address = "127.0.0.1"
  bind_port = "${port[w]}"
  socket_path = "$W/w/server.sock"
  trust_domain = "w.test"
  data_dir = "$W/w/server-data"
  log_level = "INFO"
  ca_ttl = "24h"
  federation {
    bundle_endpoint {
      address = "127.0.0.1"
      port = ${fed_port[w]}
      refresh_hint = "5s"
      profile "https_web" {
        serving_cert_file {
          cert_file_path = "$W/web/server.pem"
          key_file_path = "$W/web/server.key"
          file_sync_interval = "1m"
        }
      }
    }
  }
}
plugins {
  DataStore "sql" {
    plugin_data {
      database_type = "sqlite3"
      connection_string = "$W/w/server-data/datastore.sqlite3"
    }
  }
  NodeAttestor "join_token" {
    plugin_data {}
  }
  KeyManager "memory" {
    plugin_data {}
  }
}
CONF

echo "== interop: SPIRE servers a.test and b.test (and w.test, https_web)"
SSL_CERT_FILE="$W/web/ca.pem" server_start w
for td in a b; do
  server_start "$td"
  srv "$td" bundle show -format pem >"$W/$td/bootstrap.pem"
  srv "$td" bundle show -format spiffe >"$W/$td/bundle.spiffe"
done
# Federation a.test <-> b.test through each other's bundle endpoint (https_spiffe profile),
# bootstrapped with the other's current bundle.
for pair in "a b" "b a"; do
  set -- $pair
  srv "$1" federation create -trustDomain "$2.test" \
    -bundleEndpointURL "https://127.0.0.1:${fed_port[$2]}" \
    -bundleEndpointProfile https_spiffe -endpointSpiffeID "spiffe://$2.test/spire/server" \
    -trustDomainBundlePath "$W/$2/bundle.spiffe" -trustDomainBundleFormat spiffe >/dev/null
done

echo "== interop: SPIRE agents (join token, unix workload attestor)"
for td in a b; do
  srv "$td" token generate -spiffeID "spiffe://$td.test/agent" | sed -n 's/^Token: //p' >"$W/$td/join-token"
  [ -s "$W/$td/join-token" ] || die "no join token for $td.test"
  agent_start "$td"
done

entry a main spiffe://a.test/rust/main sc-main
entry a peer spiffe://a.test/rust/peer sc-peer
entry a doomed spiffe://a.test/rust/doomed sc-doomed
entry a fed spiffe://a.test/rust/fed sc-fed -federatesWith spiffe://b.test
entry a go-server spiffe://a.test/go/server go-server
entry a go-client spiffe://a.test/go/client go-client
entry a go-jwt spiffe://a.test/go/jwt go-jwt
entry b go-client spiffe://b.test/go/client go-client -federatesWith spiffe://a.test
entry b go-jwt spiffe://b.test/go/jwt go-jwt

export SPIFFE_ENDPOINT_SOCKET="unix:$W/a/agent.sock"
export SC_INTEROP_AGENT_B="unix:$W/b/agent.sock"
export SC_INTEROP_BIN=$BIN
export SC_INTEROP_CTL=$INTEROP/ctl.sh
# SPIRE's own bundle endpoints (https_spiffe, endpoint IDs spiffe://TD/spire/server), for our
# bundle endpoint client; each trust domain's bundle as SPIRE first served it is in
# $SC_INTEROP_WORK/TD/bundle.spiffe.
export SC_INTEROP_BUNDLE_ENDPOINT_A="https://127.0.0.1:${fed_port[a]}"
export SC_INTEROP_BUNDLE_ENDPOINT_B="https://127.0.0.1:${fed_port[b]}"
# w.test's https_web endpoint, the web CA that vouches for it, and the same certificate for our
# own https_web endpoint.
export SC_INTEROP_BUNDLE_ENDPOINT_W="https://127.0.0.1:${fed_port[w]}"
export SC_INTEROP_WEB_CA="$W/web/ca.pem" SC_INTEROP_WEB_CERT="$W/web/server.pem" SC_INTEROP_WEB_KEY="$W/web/server.key"
export RUST_LOG=${RUST_LOG:-secure_channel=info}

# The cases, in order, each with the binary (hence the SPIFFE ID) it runs as.
cases=(
  "sc-main sources_deliver_svid_bundles_and_jwt"
  "sc-main rotation_under_traffic"
  "sc-main agent_restart_under_traffic"
  "sc-main agent_gone_fails_closed_at_expiry"
  "sc-doomed deleted_entry"
  "sc-main jwt_svids"
  "sc-main go_spiffe_peers"
  "sc-fed federation"
  "sc-main bundle_endpoint_client_against_spire"
  "sc-main spire_federates_with_our_bundle_endpoint"
  "sc-main https_web_both_ways_with_spire"
)
# Every ignored test of tests/spire.rs but the helper must be in the list above.
listed=$("$BIN/sc-main" --list --ignored 2>/dev/null | sed -n 's/: test$//p' | grep -vx helper | sort)
wanted=$(for c in "${cases[@]}"; do echo "${c#* }"; done | sort)
[ "$listed" = "$wanted" ] || die "tests/spire.rs and run.sh's case list differ: $(diff <(echo "$listed") <(echo "$wanted") | tr '\n' ' ')"

# For working on one case: SC_INTEROP_FROM=NAME skips the cases before it (and so fails the run).
from=${SC_INTEROP_FROM:-}
passed=0
for c in "${cases[@]}"; do
  exe=${c%% *} name=${c#* }
  if [ -n "$from" ] && [ "$name" != "$from" ]; then echo "== interop: $name skipped"; continue; fi
  from=
  agent_start a
  agent_start b
  echo "== interop: $name (as $exe)"
  if ! (cd "$W" && "$BIN/$exe" --exact "$name" --ignored --test-threads=1 --nocapture) >"$W/$name.log" 2>&1; then
    tail -n 60 "$W/$name.log" >&2
    die "$name failed (log: $W/$name.log)"
  fi
  grep -q "^test result: ok. 1 passed" "$W/$name.log" || { tail -n 20 "$W/$name.log" >&2; die "$name did not run"; }
  passed=$((passed + 1))
done
[ "$passed" -eq "${#cases[@]}" ] || die "$passed of ${#cases[@]} cases ran"
ok=1
echo "interop: $passed cases passed in $(( $(date +%s) - started )) s"
