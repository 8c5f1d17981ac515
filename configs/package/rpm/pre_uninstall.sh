# drlb's .rpm, before erasing ($1: 0 erase, 1 upgrade): an erase stops the service (which
# detaches XDP and removes the pinned dataplane) and removes a dataplane no controller runs
# (one left by a crash); an upgrade leaves it to post_install.
if [ "$1" -eq 0 ]; then
    if [ -d /run/systemd/system ]; then
        systemctl disable --now drlb.service >/dev/null 2>&1 || :
    fi
    if [ -d /sys/fs/bpf/drlb ] && [ -n "$(ls -A /sys/fs/bpf/drlb 2>/dev/null)" ]; then
        /usr/sbin/drlb stop --config /etc/drlb/drlb.yaml || :
    fi
fi
exit 0
