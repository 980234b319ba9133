# activate.sh OLD NEW: nixcell's part of a NixOS activation. OLD and NEW are the
# etc/systemd/system directories of the running system and of the one being activated; for
# each declared container it says what switch-to-configuration is about to do with its
# unit nixcell@NAME.service, in the container's terms:
#   only X-Reload-Triggers changed (its system, its limits): reloaded, i.e. switched in place;
#   anything else changed (network, mounts, devices, privileges, store view): restarted,
#     unless the unit says X-RestartIfChanged=false;
#   a unit that is not running: the change applies at its next start;
#   a unit that is gone: the container is stopped (its state stays).
# NIXOS_ACTION=dry-activate words it as what would happen. SYSTEMCTL names systemctl.
set -u
old=$1 new=$2
[ -d "$old" ] || exit 0 # the first activation after boot: nothing runs yet
systemctl=${SYSTEMCTL:-systemctl}
will=will
[ "${NIXOS_ACTION:-}" = dry-activate ] && will=would

active() { "$systemctl" is-active --quiet "$1" 2>/dev/null; }
# lines FILE [KEY]: the file, without the lines setting KEY (shell only: no tools needed).
lines() {
  while IFS= read -r line || [ -n "$line" ]; do
    case $line in "${2:-}"=*) ;; *) printf '%s\n' "$line" ;; esac
  done <"$1"
}
say() { [ -z "$2" ] || echo "nixcell: $1:$2"; }

switched='' restarted='' later='' held='' removed=''
for unit in "$new"/nixcell@?*.service; do
  [ -e "$unit" ] || continue
  u=${unit##*/}
  name=${u#nixcell@}
  name=${name%.service}
  [ -e "$old/$u" ] || continue # new: started by its wantedBy if it has autoStart
  [ "$(lines "$old/$u")" = "$(lines "$unit")" ] && continue
  if ! active "$u"; then
    later="$later $name"
  elif [ "$(lines "$old/$u" X-Reload-Triggers)" = "$(lines "$unit" X-Reload-Triggers)" ]; then
    switched="$switched $name"
  elif [ "$(lines "$unit" X-RestartIfChanged)" != "$(lines "$unit")" ]; then # only ever =false
    held="$held $name"
  else
    restarted="$restarted $name"
  fi
done
for unit in "$old"/nixcell@?*.service; do
  [ -e "$unit" ] || continue
  u=${unit##*/}
  [ -e "$new/$u" ] && continue
  name=${u#nixcell@}
  removed="$removed ${name%.service}"
done

say "$will switch in place (its system or limits changed)" "$switched"
say "$will restart (its network, mounts, devices, privileges or store view changed)" "$restarted"
say "changed, not running: applies at its next start" "$later"
say "changed, needs a restart that restartIfChanged = false holds back" "$held"
say "no longer declared, $will stop (its state stays; nixcell destroy NAME removes it)" "$removed"
exit 0
