#!/usr/bin/env bash
# Makes the base image debian:bookworm on a machine that reaches Debian's
# archive but no image registry: debootstrap (minbase) from the mirror that
# apt on this machine already uses, then `docker import`. Does nothing when
# the image exists. Where Docker Hub is reachable, `docker pull
# debian:bookworm` does the same job.
#
#   deploy/docker/make_base_image.sh [TAG]     # TAG defaults to debian:bookworm
set -euo pipefail
tag="${1:-debian:bookworm}"

if docker image inspect "$tag" > /dev/null 2>&1; then
  echo "make_base_image: $tag present"
  exit 0
fi
command -v debootstrap > /dev/null || {
  echo "make_base_image: needs debootstrap (apt-get install debootstrap)" >&2; exit 1; }

# The first Debian mirror in apt's sources (deb822 or one-line format).
mirror=$( { cat /etc/apt/sources.list.d/*.sources 2> /dev/null || true; } |
  sed -n 's/^URIs:[[:space:]]*\([^[:space:]]*\/debian\)\/*$/\1/p' | head -1)
if [ -z "$mirror" ]; then
  mirror=$( { cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2> /dev/null || true; } |
    awk '$1 == "deb" && $2 ~ /\/debian\/?$/ && $3 == "bookworm" {print $2; exit}')
fi
mirror="${mirror:-http://deb.debian.org/debian}"
security="${mirror%/debian}/debian-security"

root=$(mktemp -d /tmp/dd-rootfs.XXXXXX)
trap 'rm -rf "$root"' EXIT
echo "make_base_image: debootstrap bookworm from $mirror (a few minutes)"
debootstrap --variant=minbase bookworm "$root" "$mirror" > "$root.log" 2>&1 || {
  tail -20 "$root.log" >&2; rm -f "$root.log"; exit 1; }
rm -f "$root.log"
cat > "$root/etc/apt/sources.list" <<SOURCES
deb $mirror bookworm main
deb $mirror bookworm-updates main
deb $security bookworm-security main
SOURCES
# What Docker's own Debian images do: no recommends, no caches kept.
printf 'APT::Install-Recommends "false";\nAPT::Install-Suggests "false";\n' \
  > "$root/etc/apt/apt.conf.d/90-docker-minimal"
rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*
tar --numeric-owner -C "$root" -c . | docker import - "$tag" > /dev/null
echo "make_base_image: imported $tag ($(docker image inspect -f '{{.Size}}' "$tag" | numfmt --to=iec))"
