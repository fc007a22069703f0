#!/bin/bash
# Install the local S3-compatible object store used by tests, CI and the demo:
# OpenStack Swift with its s3api middleware, plus memcached (tempauth keeps tokens there)
# and curl (health checks). Debian/Ubuntu, as root. Idempotent: a no-op once installed.
set -euo pipefail

PACKAGES=(swift-proxy swift-account swift-container swift-object memcached curl)
NEEDED=(swift-proxy-server swift-account-server swift-container-server swift-object-server
        swift-ring-builder memcached curl)

missing=0
for cmd in "${NEEDED[@]}"; do
  command -v "$cmd" >/dev/null 2>&1 || missing=1
done
if [ "$missing" = 0 ]; then
  echo "objectstore: swift, memcached and curl already installed"
  exit 0
fi

if [ "$(id -u)" != 0 ]; then
  SUDO=sudo
else
  SUDO=
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
# The Debian packages start no daemons in a container without systemd; start.sh runs its own.
$SUDO apt-get install -y -qq --no-install-recommends "${PACKAGES[@]}"
echo "objectstore: installed ${PACKAGES[*]}"
