#!/usr/bin/env bash
# Installs what building and testing the project needs from Debian's registry, when missing.
# Needs root (or sudo) only when something is actually missing.
set -euo pipefail

packages=(gcc libc6-dev make linux-libc-dev acpica-tools qemu-utils zlib1g-dev iproute2 libseccomp-dev liburing-dev device-tree-compiler e2fsprogs)

missing=()
for package in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
done
if ((${#missing[@]})); then
  echo "install-deps: installing ${missing[*]}"
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

if ! command -v swift >/dev/null 2>&1; then
  if [ -x /opt/swift/usr/bin/swift ]; then
    echo "install-deps: swift is at /opt/swift/usr/bin; add it to PATH" >&2
  else
    echo "install-deps: a Swift 6 toolchain is needed (https://www.swift.org/install/linux/); it is not in Debian's registry" >&2
  fi
  exit 1
fi
