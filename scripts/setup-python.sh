#!/usr/bin/env bash
# What the Python SDK's tests need (sdk-python, run by test/e2e/python-sdk.test.ts): Debian's
# python3 with cryptography (Ed25519), and pip, setuptools and wheel to build the wheel offline.
# Idempotent: installs only what the import check finds missing. PyPI is not used.
set -euo pipefail
python="${RUNR_TEST_PYTHON:-/usr/bin/python3}"
check='import cryptography, setuptools, wheel, pip'
if [ -x "$python" ] && "$python" -c "$check" 2>/dev/null; then
  exit 0
fi
sudo=''
if [ "$(id -u)" != 0 ]; then sudo='sudo'; fi
packages='python3 python3-cryptography python3-setuptools python3-wheel python3-pip'
# A fresh machine may have no package lists yet: update once, then try again.
$sudo apt-get install -y --no-install-recommends $packages ||
  { $sudo apt-get update && $sudo apt-get install -y --no-install-recommends $packages; }
"$python" -c "$check"
