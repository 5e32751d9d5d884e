#!/bin/sh
# Run at build time by the nginx images (front, proxy). On the official nginx image it does
# nothing; on a plain Debian base (scripts/swarm-smoke's, no registry there) it installs Debian's
# nginx and wget and shapes the image like the official one: a user `nginx`, logs to the
# container's stdout and stderr.
set -eu
if command -v nginx >/dev/null 2>&1; then
    exit 0
fi
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends nginx-light wget >/dev/null
rm -rf /var/lib/apt/lists/* /etc/nginx/sites-enabled/*
id nginx >/dev/null 2>&1 || useradd --system --no-create-home --shell /usr/sbin/nologin nginx
ln -sf /dev/stdout /var/log/nginx/access.log
ln -sf /dev/stderr /var/log/nginx/error.log
