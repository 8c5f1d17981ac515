# drlb's .rpm, after installing ($1: 1 install, 2 upgrade): the pin directory, and on an
# upgrade of a running service a hand-over to the new binary (SIGUSR2: the old controller
# leaves the pinned dataplane forwarding, Restart=always starts the new one, which adopts it).
if [ -d /sys/fs/bpf ] && command -v systemd-tmpfiles >/dev/null 2>&1; then
    systemd-tmpfiles --create drlb.conf || :
fi
if [ -d /run/systemd/system ]; then
    systemctl daemon-reload || :
    if [ "$1" -ge 2 ] && systemctl is-active --quiet drlb.service; then
        systemctl kill --kill-whom=main --signal=USR2 drlb.service || :
    fi
fi
exit 0
