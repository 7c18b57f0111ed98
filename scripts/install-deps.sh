#!/usr/bin/env bash
# Installs what imageio needs to build, test and run its demo, when missing:
# qemu-utils (qemu-img, qemu-nbd), nbdkit, libnbd-bin (nbdcopy, for the
# benchmark) through apt-get, and the Go modules through the module proxy.
set -euo pipefail

need=()
command -v qemu-img >/dev/null 2>&1 || need+=(qemu-utils)
command -v qemu-nbd >/dev/null 2>&1 || need+=(qemu-utils)
command -v nbdkit   >/dev/null 2>&1 || need+=(nbdkit)
command -v nbdcopy  >/dev/null 2>&1 || need+=(libnbd-bin)
command -v make     >/dev/null 2>&1 || need+=(make)
command -v git      >/dev/null 2>&1 || need+=(git)

if [ ${#need[@]} -gt 0 ]; then
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    echo "install-deps: installing ${need[*]}" >&2
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

if ! command -v go >/dev/null 2>&1; then
    if [ -x /usr/local/go/bin/go ]; then
        export PATH="/usr/local/go/bin:$PATH"
    else
        echo "install-deps: Go is not installed; install Go 1.24 or newer" >&2
        exit 1
    fi
fi

cd "$(dirname "$0")/.."
go mod download
