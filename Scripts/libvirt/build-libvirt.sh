#!/usr/bin/env bash
# Builds libvirt from Debian's own source package (Debian 12: libvirt 9.0 with Debian's
# patches) with only what a test of cloud-hypervisor needs: the Cloud Hypervisor driver
# ("ch"), its daemon virtchd, the remote driver and virsh. No other hypervisor drivers, no
# docs, no tests. See Scripts/libvirt/README.md.
#
# Usage: Scripts/libvirt/build-libvirt.sh [--force]
#
# Installs into $CH_LIBVIRT_CACHE (default
# ${XDG_CACHE_HOME:-$HOME/.cache}/cloud-hypervisor-swift/libvirt), outside the repository:
#   prefix/      bin/virsh, sbin/virtchd, lib/..., the installed tree
#   src/         the unpacked source package (patches applied), build/ its meson build
#   stamp        this script's sha256: the cache is complete when it matches
#   build.log    the output of the last build
# Does nothing when the stamp matches and the binaries exist (--force or
# CH_LIBVIRT_REFRESH=1 rebuilds). Needs root for apt-get when build dependencies or the
# deb-src line are missing.
#
# The daemon's configuration, state, runtime and log directories are compiled in under
# /run/ch-libvirt (sysconfdir etc/, localstatedir itself, so lib/ and log/ below it, and
# runstatedir run/ = localstatedir/run, where libvirt's clients look for the system
# sockets): the nested bench's level 1 mounts the host's root tree read-only and /run is a
# writable tmpfs there. virtchd creates its subdirectories itself; /run/ch-libvirt/run must
# exist before it starts (its pid file goes there). No configuration file is required (the
# built-in defaults are used; -f FILE gives one).
set -euo pipefail

cache="${CH_LIBVIRT_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/cloud-hypervisor-swift/libvirt}"
prefix="$cache/prefix"
runtime_root=/run/ch-libvirt
say() { printf 'build-libvirt.sh: %s\n' "$*" >&2; }
die() { say "error: $*"; exit 1; }

force="${CH_LIBVIRT_REFRESH:-0}"
case "${1:-}" in
  --force) force=1 ;;
  "") ;;
  -h | --help) sed -n '2,22p' "$0"; exit 0 ;;
  *) die "unknown argument '$1' (usage: build-libvirt.sh [--force])" ;;
esac

script_hash="$(sha256sum <"${BASH_SOURCE[0]}" | cut -c1-64)"
if [[ $force != 1 && -x $prefix/sbin/virtchd && -x $prefix/bin/virsh && -f $cache/stamp &&
  $(cat "$cache/stamp") == "$script_hash" ]]; then
  say "up to date in $cache"
  exit 0
fi

start_s=$SECONDS
# Debian's tools first: a Python from pyenv or elsewhere must not stand in for the system's
# (meson, and the build's python scripts, run with the one found on PATH).
export PATH=/usr/sbin:/usr/bin:/sbin:/bin:$PATH
export LC_ALL=C.UTF-8

# ---- build dependencies (only those of this reduced configuration) ----
deps=(meson ninja-build gcc pkg-config dpkg-dev perl python3 xsltproc libxml2-utils rpcsvc-proto
  libglib2.0-dev libgnutls28-dev libxml2-dev libtirpc-dev libyajl-dev libcurl4-gnutls-dev)
missing=()
for p in "${deps[@]}"; do
  [[ $(dpkg-query -W -f='${Status}' "$p" 2>/dev/null) == "install ok installed" ]] || missing+=("$p")
done
apt_updated=0
apt_update() {
  ((apt_updated)) && return 0
  ((EUID == 0)) || die "apt-get needs root"
  apt-get update -qq
  apt_updated=1
}
if ((${#missing[@]})); then
  say "installing build dependencies: ${missing[*]}"
  apt_update
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# ---- the deb-src line: a copy of this system's own Debian sources ----
# Every enabled "deb" source for this release (deb822 stanzas in *.sources, one-line
# entries in *.list) is repeated as "deb-src", with the same hosts and keys.
codename="$(. /etc/os-release && echo "${VERSION_CODENAME:-}")"
[[ -n $codename ]] || die "no VERSION_CODENAME in /etc/os-release"
has_deb_src() {
  grep -rqsE '^[[:space:]]*deb-src[[:space:]]|^Types:.*deb-src' /etc/apt/sources.list /etc/apt/sources.list.d/ 2>/dev/null
}
if ! has_deb_src; then
  ((EUID == 0)) || die "no deb-src entry in the apt sources, and adding one needs root"
  src_file=/etc/apt/sources.list.d/ch-libvirt-deb-src.sources
  for f in /etc/apt/sources.list.d/*.sources; do
    [[ -f $f ]] || continue
    # Paragraph mode: one stanza per record; keep those of type deb for this release.
    awk -v codename="$codename" 'BEGIN { RS = "" }
      {
        n = split($0, line, "\n"); types = ""; suites = ""
        for (i = 1; i <= n; i++) {
          if (line[i] ~ /^Types:/) types = line[i]
          if (line[i] ~ /^Suites:/) suites = line[i]
          if (line[i] ~ /^Enabled:[ \t]*no/) types = ""
        }
        if ((types " ") ~ /[ \t]deb[ \t]/ && index(suites, codename) > 0) {
          for (i = 1; i <= n; i++) print (line[i] ~ /^Types:/ ? "Types: deb-src" : line[i])
          print ""
        }
      }' "$f"
  done >"$src_file.tmp"
  list_lines="$(cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null |
    awk -v codename="$codename" '$1 == "deb" && index($0, codename) > 0 { $1 = "deb-src"; print }' || true)"
  if [[ -n $list_lines ]]; then
    printf '%s\n' "$list_lines" >"${src_file%.sources}.list"
  fi
  if [[ -s $src_file.tmp ]]; then mv "$src_file.tmp" "$src_file"; else rm -f "$src_file.tmp"; fi
  has_deb_src || die "found no Debian 'deb' source for $codename to derive a deb-src entry from"
  say "added deb-src entries derived from the existing apt sources"
  apt_updated=0
fi

# ---- the source package, with Debian's patches applied by dpkg-source ----
mkdir -p "$cache"
dl="$cache/download"
rm -rf "$dl" "$cache/src"
mkdir -p "$dl"
if ! (cd "$dl" && apt-get source --download-only -qq libvirt >/dev/null 2>"$dl/apt.err"); then
  apt_update
  (cd "$dl" && apt-get source --download-only -qq libvirt >/dev/null 2>"$dl/apt.err") ||
    die "apt-get source libvirt failed: $(cat "$dl/apt.err")"
fi
dsc="$(ls "$dl"/libvirt_*.dsc)"
dpkg-source --no-check -x "$dsc" "$cache/src" >/dev/null
version="$(basename "$dsc" .dsc)"
version="${version#libvirt_}"
say "source package libvirt $version unpacked"

# ---- configure: the ch driver, virtchd, remote, virsh; every optional feature off ----
src="$cache/src"
build="$src/build"
meson_opts=(
  --prefix "$prefix" --libdir lib --buildtype release
  --sysconfdir "$runtime_root/etc" --localstatedir "$runtime_root" -Drunstatedir="$runtime_root/run"
  -Dauto_features=disabled
  -Ddriver_ch=enabled -Ddriver_libvirtd=enabled -Ddriver_remote=enabled
  -Dcurl=enabled -Dyajl=enabled
  -Ddocs=disabled -Dtests=disabled -Dinit_script=none -Drpath=enabled
)
log="$cache/build.log"
{
  meson setup "${meson_opts[@]}" "$build" "$src"
  ninja -C "$build"
} >"$log" 2>&1 || die "the build failed; see $log (last lines: $(tail -n 5 "$log" | tr '\n' ' '))"

# ---- install: staged, then only the prefix is kept (the empty runtime directories that
# meson would create under /run are made by virtchd when it starts) ----
stage="$cache/stage"
rm -rf "$stage" "$prefix"
DESTDIR="$stage" ninja -C "$build" install >>"$log" 2>&1 || die "ninja install failed; see $log"
mv "$stage$prefix" "$prefix"
rm -rf "$stage"
"$prefix/bin/virsh" --version >/dev/null || die "the installed virsh does not run"
[[ -x $prefix/sbin/virtchd ]] || die "virtchd was not built (is the ch driver enabled? see $log)"
echo "$version" >"$cache/version"
echo "$script_hash" >"$cache/stamp"
say "libvirt $version (ch driver, virtchd, virsh) installed in $prefix in $((SECONDS - start_s)) s"
