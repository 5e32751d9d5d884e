#!/bin/sh
# Entry point of the edge and origin images: turns Docker secrets into what the Python CLIs read,
# then runs the command (the image's CMD or the stack's `command`). Nothing secret is baked in.
#
#   EDGE_PURGE_TOKEN_FILE   file holding the purge token (a Docker secret) -> EDGE_PURGE_TOKEN
#   ORIGIN_DB_HOST          when set, appends `--db mysql://USER:PASSWORD@HOST:PORT/NAME` with
#   ORIGIN_DB_PORT            ORIGIN_DB_PORT (3306), ORIGIN_DB_USER (root), ORIGIN_DB_NAME (woody)
#   ORIGIN_DB_USER            and the password read from ORIGIN_DB_PASSWORD_FILE (URL-quoted)
#   ORIGIN_DB_NAME
#   ORIGIN_DB_PASSWORD_FILE
set -eu

if [ -n "${EDGE_PURGE_TOKEN_FILE:-}" ]; then
    EDGE_PURGE_TOKEN="$(cat "$EDGE_PURGE_TOKEN_FILE")"
    export EDGE_PURGE_TOKEN
fi

if [ -n "${ORIGIN_DB_HOST:-}" ]; then
    password=""
    if [ -n "${ORIGIN_DB_PASSWORD_FILE:-}" ]; then
        password="$(python -c 'import sys, urllib.parse
print(urllib.parse.quote(open(sys.argv[1]).read().strip(), safe=""))' "$ORIGIN_DB_PASSWORD_FILE")"
    fi
    set -- "$@" --db \
        "mysql://${ORIGIN_DB_USER:-root}:${password}@${ORIGIN_DB_HOST}:${ORIGIN_DB_PORT:-3306}/${ORIGIN_DB_NAME:-woody}"
fi

exec "$@"
