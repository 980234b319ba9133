# apply-declared prepare|reload NAME: brings the declared container NAME to the system and
# host-side settings its unit's environment file names (NIXCELL_SYSTEM, NIXCELL_SETTINGS),
# as a new generation of its profile when they changed. The NixOS module installs it as
# /etc/nixcell/apply-declared and runs it from nixcell@NAME.service:
#   prepare (ExecStartPre): create the container, or update the stopped one;
#   reload (ExecReload): update the running container, switched in place.
# It is a file of its own, at a fixed path, so that the units do not change when it does.
set -eu
action=$1 name=$2
nixcell=${NIXCELL_BIN:-/run/current-system/sw/bin/nixcell}
: "${NIXCELL_SYSTEM:?is not set: run me from nixcell@$name.service (EnvironmentFile=/etc/nixcell/containers/$name.conf)}"
: "${NIXCELL_SETTINGS:?is not set}"
# A profile or other link given as the container's path is resolved at each use.
system=$(readlink -f "$NIXCELL_SYSTEM")

case $action in
prepare)
  code=0
  "$nixcell" state "$name" >/dev/null 2>&1 || code=$?
  case $code in
  0)
    echo "nixcell: $name is running outside its unit; stop it (nixcell stop $name), then start the unit" >&2
    exit 1
    ;;
  3) exec "$nixcell" update "$name" --system "$system" "$NIXCELL_SETTINGS" ;;
  *) exec "$nixcell" create "$name" --system "$system" "$NIXCELL_SETTINGS" ;;
  esac
  ;;
reload) exec "$nixcell" update "$name" --system "$system" "$NIXCELL_SETTINGS" ;;
*)
  echo "usage: apply-declared prepare|reload NAME" >&2
  exit 2
  ;;
esac
