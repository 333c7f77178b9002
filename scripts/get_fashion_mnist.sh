#!/usr/bin/env bash
# Make Fashion-MNIST available to cnnlab (used by `make data` / `make demo`).
# Usage: scripts/get_fashion_mnist.sh PYTHON
#   1. already present and verified in a known location (see `cnnlab data list`): nothing to do;
#   2. else download it: `cnnlab data fetch fashion-mnist` (into $CNNLAB_DATA or ~/.cache/cnnlab);
#   3. else, where apt-get is usable (root or sudo), install Debian's dataset-fashion-mnist package
#      (files in /usr/share/datasets/fashion-mnist);
# then check again. Exit status 1 with a message saying what to do when everything failed.
set -u

PYTHON=${1:-python3}
cnnlab() { "$PYTHON" -m cnnlab "$@"; }

if cnnlab data check fashion-mnist >/dev/null 2>&1; then
    echo "fashion-mnist: present and verified"
    exit 0
fi

echo "fashion-mnist: not found; downloading it"
if cnnlab data fetch fashion-mnist && cnnlab data check fashion-mnist >/dev/null; then
    exit 0
fi

if command -v apt-get >/dev/null 2>&1; then
    SUDO=""
    if [ "${EUID:-$(id -u)}" -ne 0 ]; then
        if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
            SUDO="sudo -n"
        else
            SUDO="unusable"
        fi
    fi
    if [ "$SUDO" != "unusable" ]; then
        echo "fashion-mnist: download failed; installing Debian's dataset-fashion-mnist"
        if $SUDO apt-get update && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y dataset-fashion-mnist; then
            if cnnlab data check fashion-mnist; then
                exit 0
            fi
        fi
    fi
fi

{
    echo "error: could not get Fashion-MNIST. Either"
    echo "  - download it where there is network access: cnnlab data fetch fashion-mnist [--mirror URL]"
    echo "  - on Debian/Ubuntu: sudo apt-get install dataset-fashion-mnist"
    echo "  - or put the four .gz files (train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz,"
    echo "    t10k-images-idx3-ubyte.gz, t10k-labels-idx1-ubyte.gz) in <dir>/fashion-mnist/, set CNNLAB_DATA=<dir>"
    echo "    and run: cnnlab data check fashion-mnist"
} >&2
exit 1
