# drlb's .rpm, before installing: the system user.
if ! getent passwd drlb >/dev/null; then
    if getent group drlb >/dev/null; then group="-g drlb"; else group="--user-group"; fi
    useradd --system $group --no-create-home --home-dir / --shell /usr/sbin/nologin \
        --comment "drlb load balancer" drlb || exit 1
fi
exit 0
