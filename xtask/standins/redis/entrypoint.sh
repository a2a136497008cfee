#!/bin/sh
# What the official image's entry point does for `redis-server` without a config file: no
# protected mode (other containers connect), run as the redis user.
set -eu
if [ "${1:-}" = redis-server ]; then
    shift
    exec setpriv --reuid=redis --regid=redis --init-groups redis-server --protected-mode no "$@"
fi
exec "$@"
