#!/usr/bin/env bash
# Runs inside a freshly booted box, fed over SSH by image/lab and image/build:
#   ssh root@BOX bash -s TIMEOUT < image/box-settle.sh
# Waits at most TIMEOUT seconds for systemd to finish booting, so Ansible meets a running system, not one
# still starting units. Prints one line: `running`, or `degraded: failed units: ...` (settled, some unit
# failed; exit 0). When boot did not settle it prints what it saw instead: the state, the failed units,
# the jobs still queued and the journal's end, and exits 1.
timeout=${1:-90}
state=$(timeout "$timeout" systemctl is-system-running --wait 2>/dev/null)
case "$state" in
  running) echo running; exit 0 ;;
  degraded) echo "degraded: failed units: $(systemctl --failed --no-legend --plain | awk '{print $1}' | tr '\n' ' ')"; exit 0 ;;
esac
echo "boot did not settle within ${timeout}s (systemctl is-system-running: '$(systemctl is-system-running 2>/dev/null)')"
echo "failed units:"
systemctl --failed --no-legend --plain
echo "jobs still queued:"
systemctl list-jobs --no-legend
echo "journal (last 30 lines):"
journalctl -b --no-pager -n 30
exit 1
