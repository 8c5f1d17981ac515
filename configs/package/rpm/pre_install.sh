# drlb's .rpm, before installing: the system user.
getent passwd drlb >/dev/null || useradd --system --user-group --no-create-home --home-dir / \
    --shell /usr/sbin/nologin --comment "drlb load balancer" drlb
exit 0
