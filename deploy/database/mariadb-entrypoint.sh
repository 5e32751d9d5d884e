#!/bin/sh
# Entry point of deploy/database/Dockerfile.mariadb: what the official MySQL image's entrypoint
# does for this stack. On an empty data directory: initialize it, set root's password (for
# 'root'@'localhost' and 'root'@'%') from MYSQL_ROOT_PASSWORD_FILE (or MYSQL_ROOT_PASSWORD),
# create MYSQL_DATABASE and run /docker-entrypoint-initdb.d/*.sql in it, on a server that listens
# on no TCP port meanwhile. Then run the command (mysqld / mariadbd ...) as user mysql.
set -eu

case "${1:-}" in
    mysqld|mariadbd|-*) ;;
    *) exec "$@" ;;
esac
if [ "${1#-}" != "$1" ]; then
    set -- mysqld "$@"
fi

datadir=/var/lib/mysql
mkdir -p "$datadir" /run/mysqld
chown mysql:mysql "$datadir" /run/mysqld

if [ ! -d "$datadir/mysql" ]; then
    password="${MYSQL_ROOT_PASSWORD:-}"
    if [ -n "${MYSQL_ROOT_PASSWORD_FILE:-}" ]; then
        password="$(cat "$MYSQL_ROOT_PASSWORD_FILE")"
    fi
    if [ -z "$password" ]; then
        echo "database: set MYSQL_ROOT_PASSWORD_FILE (a Docker secret) or MYSQL_ROOT_PASSWORD" >&2
        exit 1
    fi
    echo "database: initializing $datadir"
    mariadb-install-db --user=mysql --datadir="$datadir" --skip-test-db \
        --auth-root-authentication-method=normal >/dev/null
    socket=/run/mysqld/init.sock
    mariadbd --user=mysql --datadir="$datadir" --skip-networking --socket="$socket" &
    pid=$!
    for _ in $(seq 1 60); do
        mariadb-admin --socket="$socket" ping --silent >/dev/null 2>&1 && break
        sleep 1
    done
    # SQL string literal: double every backslash and quote.
    quoted="$(printf '%s' "$password" | sed -e 's/\\/\\\\/g' -e "s/'/''/g")"
    db="${MYSQL_DATABASE:-}"
    {
        echo "ALTER USER 'root'@'localhost' IDENTIFIED BY '$quoted';"
        echo "CREATE USER IF NOT EXISTS 'root'@'%' IDENTIFIED BY '$quoted';"
        echo "GRANT ALL PRIVILEGES ON *.* TO 'root'@'%' WITH GRANT OPTION;"
        if [ -n "$db" ]; then
            echo "CREATE DATABASE IF NOT EXISTS \`$db\`;"
        fi
        echo "FLUSH PRIVILEGES;"
    } | mariadb --socket="$socket" -uroot
    for f in /docker-entrypoint-initdb.d/*.sql; do
        [ -e "$f" ] || continue
        echo "database: running $f"
        MYSQL_PWD="$password" mariadb --socket="$socket" -uroot ${db:+"$db"} < "$f"
    done
    MYSQL_PWD="$password" mariadb-admin --socket="$socket" -uroot shutdown
    wait "$pid" || true
    echo "database: initialized"
fi

exec "$@" --user=mysql
