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
        if ! /usr/sbin/drlb check --handover --config /etc/drlb/drlb.yaml; then
            # A new map layout: the old dataplane goes, connections too.
            echo "drlb: the new binary cannot take the running dataplane over: restarting drlb" >&2
            systemctl restart drlb.service || :
        elif [ "${pid:-0}" -gt 0 ] && kill -USR2 "$pid"; then
            echo "drlb: handed the running dataplane over to the new binary (SIGUSR2 to $pid)"
        else
            echo "drlb: WARNING: could not signal the running controller; run: systemctl restart drlb" >&2
        fi
    fi
fi
exit 0
