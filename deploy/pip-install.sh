#!/bin/sh
# `pip install` inside the image builds: from the wheelhouse alone when one was copied into the
# build context (deploy/wheelhouse/*.whl, see scripts/swarm-smoke), else from the package index.
# The same flags reach the isolated build environment of the project's own wheel (setuptools).
set -eu
if ls /wheels/*.whl >/dev/null 2>&1; then
    PIP_NO_INDEX=1 PIP_FIND_LINKS=/wheels
    export PIP_NO_INDEX PIP_FIND_LINKS
fi
exec pip --disable-pip-version-check --no-cache-dir "$@"
