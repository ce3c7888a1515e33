#!/usr/bin/env bash
# Fetches Debian's arm64 kernel and leaves its uncompressed `Image` (the file the arm64 boot
# protocol loads) in ${XDG_CACHE_HOME:-$HOME/.cache}/cloud-hypervisor-swift/arm64/Image, for the
# optional test in Tests/ArchTests that reads a real Image header. Needs root (dpkg, apt-get).
#
# Debian's arm64 `vmlinuz` is either a gzip stream of the Image or an EFI zboot PE file (an
# "MZ" header, "zimg" at offset 4, the payload offset and size at 8 and 12, the compression
# name at 24) whose payload is compressed by the named method.
set -euo pipefail

cache="${XDG_CACHE_HOME:-$HOME/.cache}/cloud-hypervisor-swift/arm64"
mkdir -p "$cache"
if [[ -s "$cache/Image" && "${1:-}" != "--force" ]]; then
  echo "already present: $cache/Image (pass --force to fetch again)"
  exit 0
fi

if ! dpkg --print-foreign-architectures | grep -qx arm64; then
  dpkg --add-architecture arm64
fi
apt-get update -q

# The newest versioned arm64 kernel package (linux-image-<abi>-arm64), not the cloud or rt flavours.
package=$(apt-cache search --names-only '^linux-image-[0-9.]+-[0-9]+-arm64$' | awk '{print $1}' | sort -V | tail -n 1)
if [[ -z "$package" ]]; then
  echo "no linux-image-<version>-arm64 package is known to apt (is arm64 in dpkg's architectures?)" >&2
  exit 1
fi
echo "downloading $package"

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
chmod 755 "$work"  # apt-get download runs as _apt where it can
(cd "$work" && apt-get download -q "$package:arm64")
dpkg-deb -x "$work"/*.deb "$work/root"
vmlinuz=$(find "$work/root/boot" -name 'vmlinuz-*' | head -n 1)
if [[ -z "$vmlinuz" ]]; then
  echo "$package has no /boot/vmlinuz-*" >&2
  exit 1
fi

magic=$(head -c 2 "$vmlinuz" | od -An -tx1 | tr -d ' \n')
if [[ "$magic" == "1f8b" ]]; then
  gzip -dc < "$vmlinuz" > "$work/Image"
elif [[ "$magic" == "4d5a" && "$(dd if="$vmlinuz" bs=1 skip=4 count=4 status=none)" == "zimg" ]]; then
  le32() { od -An -tu4 -j "$2" -N 4 --endian=little "$1" | tr -d ' '; }
  offset=$(le32 "$vmlinuz" 8)
  size=$(le32 "$vmlinuz" 12)
  method=$(dd if="$vmlinuz" bs=1 skip=24 count=8 status=none | tr -d '\0')
  payload="$work/payload"
  tail -c +"$((offset + 1))" "$vmlinuz" | head -c "$size" > "$payload"
  case "$method" in
    gzip) gzip -dc < "$payload" > "$work/Image" ;;
    xz) xz -dc < "$payload" > "$work/Image" ;;
    zstd) zstd -dc < "$payload" > "$work/Image" ;;
    lzma) xz --format=lzma -dc < "$payload" > "$work/Image" ;;
    *) echo "EFI zboot payload compressed with unsupported method '$method'" >&2; exit 1 ;;
  esac
elif [[ "$(od -An -tx1 -j 56 -N 4 "$vmlinuz" | tr -d ' \n')" == "41524d64" ]]; then
  cp "$vmlinuz" "$work/Image"
else
  echo "$vmlinuz is neither gzip, an EFI zboot image nor a plain Image (starts with $magic)" >&2
  exit 1
fi

mv "$work/Image" "$cache/Image"
echo "$package -> $cache/Image ($(stat -c %s "$cache/Image") bytes)"
