#!/usr/bin/env bash
# What the interop tests ask of SPIRE while they run (run.sh hands them this script in
# SC_INTEROP_CTL, with SC_INTEROP_WORK set):
#   ctl.sh agent-stop TD | agent-start TD     stop / (re)start trust domain TD's agent
#   ctl.sh entry-delete TD ENTRY_ID           delete a registration entry
#   ctl.sh federation-remove TD OTHER_TD      TD's server stops federating with OTHER_TD
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
  *) die "usage: ctl.sh agent-stop|agent-start|entry-delete|federation-remove ..." ;;
esac
