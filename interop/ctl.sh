#!/usr/bin/env bash
# What the interop tests ask of SPIRE while they run (run.sh hands them this script in
# SC_INTEROP_CTL, with SC_INTEROP_WORK set):
#   ctl.sh agent-stop TD | agent-start TD     stop / (re)start trust domain TD's agent
#   ctl.sh entry-delete TD ENTRY_ID           delete a registration entry
#   ctl.sh federation-remove TD OTHER_TD      TD's server stops federating with OTHER_TD
#   ctl.sh federate-with TD OTHER_TD URL ENDPOINT_ID BUNDLE
#                                             TD's server federates with OTHER_TD (not a SPIRE
#                                             trust domain) through its bundle endpoint at URL
#                                             (https_spiffe, ENDPOINT_ID), bootstrapped with
#                                             BUNDLE (SPIFFE format) by `bundle set`
#   ctl.sh federate-with-web TD OTHER_TD URL  TD's server federates with OTHER_TD through its
#                                             https_web bundle endpoint at URL (no bootstrap)
#   ctl.sh bundle-show TD OTHER_TD            OTHER_TD's bundle as TD's server holds it (SPIFFE format)
#   ctl.sh own-bundle TD                      TD's own bundle (SPIFFE format)
#   ctl.sh mint TD SPIFFE_ID DIR              an X.509-SVID minted by TD's server: DIR/svid.pem,
#                                             DIR/key.pem, DIR/bundle.pem
#   ctl.sh entry-create TD ENTRY_ID SPIFFE_ID BINARY [FLAGS...]
#                                             a workload entry under TD's agent
set -euo pipefail
# shellcheck source=interop/lib.sh
. "$(dirname "$0")/lib.sh"

case "${1:-}" in
  agent-stop) stop "agent-${2:?TD}" ;;
  agent-start) agent_start "${2:?TD}" ;;
  entry-delete) srv "${2:?TD}" entry delete -entryID "${3:?ENTRY_ID}" ;;
  federation-remove)
    td=${2:?TD}; other=${3:?OTHER_TD}
    srv "$td" federation delete -id "$other"
    # The relationship is gone, but its bundle stays in the datastore (and in the SVID
    # responses of entries that federate with it) until deleted: remove it too.
    srv "$td" bundle delete -id "spiffe://$other" -mode dissociate
    ;;
  federate-with)
    td=${2:?TD}; other=${3:?OTHER_TD}; url=${4:?URL}; endpoint_id=${5:?ENDPOINT_ID}; bundle=${6:?BUNDLE}
    srv "$td" bundle set -id "spiffe://$other" -path "$bundle" -format spiffe >/dev/null
    srv "$td" federation create -trustDomain "$other" -bundleEndpointURL "$url" \
      -bundleEndpointProfile https_spiffe -endpointSpiffeID "$endpoint_id" >/dev/null
    ;;
  federate-with-web)
    srv "${2:?TD}" federation create -trustDomain "${3:?OTHER_TD}" -bundleEndpointURL "${4:?URL}" \
      -bundleEndpointProfile https_web >/dev/null
    ;;
  own-bundle) srv "${2:?TD}" bundle show -format spiffe ;;
  mint) mkdir -p "${4:?DIR}"; srv "${2:?TD}" x509 mint -spiffeID "${3:?SPIFFE_ID}" -write "$4" >/dev/null ;;
  bundle-show) srv "${2:?TD}" bundle list -id "spiffe://${3:?OTHER_TD}" -format spiffe ;;
  entry-create) shift; entry "$@" ;;
  *) die "usage: ctl.sh agent-stop|agent-start|entry-delete|federation-remove|federate-with|federate-with-web|bundle-show|own-bundle|mint|entry-create ..." ;;
esac
