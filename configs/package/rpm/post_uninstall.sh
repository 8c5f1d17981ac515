# drlb's .rpm, after erasing ($1: 0 erase): what drlb wrote at run time. The drlb user stays.
if [ "$1" -eq 0 ]; then
    rm -rf /run/drlb
    rmdir /sys/fs/bpf/drlb 2>/dev/null || :
fi
if [ -d /run/systemd/system ]; then
    systemctl daemon-reload || :
fi
exit 0
