#!/bin/sh
# Installs the shared libraries the project's binaries link, and nothing
# else, in a Debian 12 image (run by deploy/docker/Dockerfile as root).
#
#   install_runtime.sh server      # services and tools: gRPC, RocksDB, image codecs (the
#                                  # coordinator decodes uploaded sample grids)
#   install_runtime.sh trainer     # + Debian's CPU libtorch and the trainer's image/text libs
#   install_runtime.sh trainer-cuda  # the trainer without Debian's libtorch: the image
#                                    # brings a CUDA libtorch in /opt/libtorch
# The lists come from `ldd` on the binaries (docs/deploy.md says how to
# check them again); the compose test runs every binary in the images.
set -eu
server="libgrpc++1.51 libprotobuf32 libabsl20220623 librocksdb7.8 libgflags2.2 \
  libgoogle-glog0v6 libre2-9 libssl3 libpng16-16 libturbojpeg0 libwebp7 libexif12 libatomic1 \
  libcpp-httplib0.11"
trainer_extra="libopenblas0-pthread libutf8proc2 libjpeg62-turbo libcurl4"
case "${1:-}" in
  server) packages="$server" ;;
  trainer) packages="$server $trainer_extra libtorch1.13" ;;
  trainer-cuda) packages="$server $trainer_extra libgomp1" ;;
  *) echo "usage: $0 server|trainer|trainer-cuda" >&2; exit 2 ;;
esac
export DEBIAN_FRONTEND=noninteractive
apt-get update -q
# shellcheck disable=SC2086
apt-get install -y -q --no-install-recommends $packages
apt-get clean
rm -rf /var/lib/apt/lists/*
