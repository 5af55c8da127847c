#!/usr/bin/env bash
# Builds the Debian package from a built sensor: build-deb.sh SENSOR_BIN OUT_DIR
# (`make deb` builds the release binary first). Prints the .deb's path.
# Needs dpkg-deb and dpkg-shlibdeps (dpkg-dev) and gzip; no network.
set -euo pipefail

bin=${1:?usage: build-deb.sh SENSOR_BIN OUT_DIR}
out=${2:?usage: build-deb.sh SENSOR_BIN OUT_DIR}
here=$(cd "$(dirname "$0")" && pwd)
top=$(cd "$here/../.." && pwd)

[ -x "$bin" ] || { echo "build-deb.sh: $bin is not an executable (make release?)" >&2; exit 2; }
version=$(sed -n 's/^version = "\(.*\)"$/\1/p' "$top/Cargo.toml" | head -n 1)
[ -n "$version" ] || { echo "build-deb.sh: no version in Cargo.toml" >&2; exit 2; }
revision=${DEB_REVISION:-1}
arch=$(dpkg --print-architecture)

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
root=$work/root
umask 022

install -D -m 0755 "$bin" "$root/usr/bin/sockscope"
strip --strip-unneeded "$root/usr/bin/sockscope" 2>/dev/null || true
install -d "$root/lib/systemd/system"
sed 's|/usr/local/bin/sockscope|/usr/bin/sockscope|' "$top/packaging/sockscope.service" \
	>"$root/lib/systemd/system/sockscope.service"
chmod 0644 "$root/lib/systemd/system/sockscope.service"
install -D -m 0644 "$top/packaging/sockscope.logrotate" "$root/etc/logrotate.d/sockscope"
install -D -m 0644 "$top/packaging/sockscope.default" "$root/etc/default/sockscope"
install -D -m 0644 "$top/packaging/sockscope.xml" "$root/etc/sockscope/sockscope.xml"
install -d "$root/usr/share/man/man8" "$root/usr/share/doc/sockscope"
"$root/usr/bin/sockscope" --man | gzip -9n >"$root/usr/share/man/man8/sockscope.8.gz"
chmod 0644 "$root/usr/share/man/man8/sockscope.8.gz"
cat >"$root/usr/share/doc/sockscope/copyright" <<COPYRIGHT
Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
Upstream-Name: sockscope

Files: *
License: GPL-2.0-only
 On Debian systems the full text of the GNU General Public License
 version 2 is in /usr/share/common-licenses/GPL-2.
COPYRIGHT
install -m 0644 "$top/README.md" "$root/usr/share/doc/sockscope/README.md"
gzip -9n "$root/usr/share/doc/sockscope/README.md"

# Shared-library dependencies as Debian computes them (dpkg-shlibdeps wants
# a debian/control next to it).
mkdir -p "$work/src/debian"
printf 'Source: sockscope\n\nPackage: sockscope\nArchitecture: any\n' >"$work/src/debian/control"
depends=$(cd "$work/src" && dpkg-shlibdeps -O -e "$root/usr/bin/sockscope" 2>/dev/null |
	sed -n 's/^shlibs:Depends=//p')
[ -n "$depends" ] || { echo "build-deb.sh: dpkg-shlibdeps found no dependencies" >&2; exit 1; }

install -d "$root/DEBIAN"
size=$(du -sk --exclude=DEBIAN "$root" | cut -f1)
cat >"$root/DEBIAN/control" <<CONTROL
Package: sockscope
Version: $version-$revision
Architecture: $arch
Maintainer: sockscope maintainers <root@localhost>
Installed-Size: $size
Depends: $depends, init-system-helpers (>= 1.54)
Recommends: logrotate
Section: admin
Priority: optional
Description: network connections with the process behind them (eBPF)
 sockscope reports every TCP connection and UDP flow on the host, outbound
 and inbound, IPv4 and IPv6, with the process behind it, as Sysmon for Linux
 NetworkConnect (Event ID 3) events: JSON lines or Sysmon's XML, to a file,
 the local syslog socket or a remote syslog receiver. Runs as a systemd
 service; events go to /var/log/sockscope/events.jsonl by default.
CONTROL
printf '%s\n' /etc/default/sockscope /etc/logrotate.d/sockscope /etc/sockscope/sockscope.xml \
	>"$root/DEBIAN/conffiles"
install -m 0755 "$here/postinst" "$here/prerm" "$here/postrm" "$root/DEBIAN/"

mkdir -p "$out"
deb="$out/sockscope_${version}-${revision}_${arch}.deb"
dpkg-deb --root-owner-group -Zxz --build "$root" "$deb" >/dev/null
echo "$deb"
