# drlb's .rpm, after erasing ($1: 0 erase): what drlb wrote at run time and the package's
# directories (rpm owns only files; /etc/drlb stays if it holds a saved config). The drlb
# user stays.
if [ "$1" -eq 0 ]; then
    rm -rf /run/drlb
    rmdir /sys/fs/bpf/drlb /usr/share/drlb/grafana /usr/share/drlb/prometheus /usr/share/drlb \
        /usr/share/doc/drlb/examples /usr/share/doc/drlb /etc/drlb 2>/dev/null || :
fi
if [ -d /run/systemd/system ]; then
    systemctl daemon-reload || :
fi
exit 0
