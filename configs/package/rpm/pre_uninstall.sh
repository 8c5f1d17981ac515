# drlb's .rpm, before erasing ($1: 0 erase, 1 upgrade): an erase stops the service (which
# detaches XDP and removes the pinned dataplane); an upgrade leaves it to post_install.
if [ "$1" -eq 0 ] && [ -d /run/systemd/system ]; then
    systemctl disable --now drlb.service >/dev/null 2>&1 || :
fi
exit 0
