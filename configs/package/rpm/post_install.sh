# drlb's .rpm, after installing ($1: 1 install, 2 upgrade): the pin directory, and on an
# upgrade of a running service a hand-over to the new binary (SIGUSR2: the old controller
# leaves the pinned dataplane forwarding, Restart=always starts the new one under the
# reloaded unit, which adopts it).
if [ -d /sys/fs/bpf ] && command -v systemd-tmpfiles >/dev/null 2>&1; then
    systemd-tmpfiles --create drlb.conf || :
fi
if [ -d /run/systemd/system ]; then
    systemctl daemon-reload || :
    if [ "$1" -ge 2 ] && systemctl is-active --quiet drlb.service; then
        pid=$(systemctl show --property MainPID --value drlb.service 2>/dev/null || echo 0)
        rc=0
        /usr/sbin/drlb check --handover --config /etc/drlb/drlb.yaml || rc=$?
        if [ "$rc" -eq 3 ]; then
            # Valid, but not adoptable (a new map layout, or a director section changed):
            # a restart applies it; connections are dropped.
            echo "drlb: the new binary cannot take the running dataplane over: restarting drlb" >&2
            systemctl restart drlb.service || :
        elif [ "$rc" -ne 0 ]; then
            # The config does not validate: the old controller keeps forwarding, untouched.
            echo "drlb: WARNING: /etc/drlb/drlb.yaml does not validate; the running drlb is left as it is. Fix it, then: systemctl restart drlb" >&2
        elif [ "${pid:-0}" -gt 0 ] && kill -USR2 "$pid"; then
            echo "drlb: handed the running dataplane over to the new binary (SIGUSR2 to $pid)"
        else
            echo "drlb: WARNING: could not signal the running controller; run: systemctl restart drlb" >&2
        fi
    fi
fi
exit 0
