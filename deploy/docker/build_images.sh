#!/usr/bin/env bash
# Builds the server and trainer images and prints their tags.
#
#   deploy/docker/build_images.sh [--from-source] [--tag TAG] [--trainer-base trainer-base-cuda]
#
# By default the binaries come from the host's Bazel build (staged into
# out/docker/bin/; fast, what CI uses); --from-source builds them with Bazel
# inside Docker instead. Tags: distributed-diffusion-server:TAG and
# distributed-diffusion-trainer:TAG-cpu (or -cuda), TAG defaulting to the
# git commit (never `latest`: a tag must say what runs). Needs a Docker
# engine with BuildKit and the image debian:bookworm (offline:
# deploy/docker/make_base_image.sh).
set -euo pipefail
cd "$(dirname "$0")/../.."
binaries=binaries-prebuilt
tag="$(git rev-parse --short=12 HEAD 2> /dev/null || echo dev)"
trainer_base=trainer-base-cpu
while [ $# -gt 0 ]; do
  case "$1" in
    --from-source) binaries=binaries-from-source ;;
    --tag) tag="$2"; shift ;;
    --trainer-base) trainer_base="$2"; shift ;;
    *) echo "usage: $0 [--from-source] [--tag TAG] [--trainer-base STAGE]" >&2; exit 2 ;;
  esac
  shift
done

# BuildKit is built into dockerd since 18.09; a docker CLI without the buildx
# plugin (Docker 23+ packages it separately) cannot use it, Debian's can.
docker_cli=docker
if ! docker buildx version > /dev/null 2>&1 && [ -x /usr/bin/docker ]; then
  docker_cli=/usr/bin/docker
fi

if [ "$binaries" = binaries-prebuilt ]; then
  echo "build_images: staging the Bazel outputs in out/docker/bin"
  ./deploy/docker/stage_binaries.sh out/docker/bin
fi
mkdir -p out/docker
flavour=cpu
[ "$trainer_base" = trainer-base-cuda ] && flavour=cuda
server_image="distributed-diffusion-server:$tag"
trainer_image="distributed-diffusion-trainer:$tag-$flavour"
for target in server trainer; do
  image=$server_image
  [ "$target" = trainer ] && image=$trainer_image
  echo "build_images: $image"
  DOCKER_BUILDKIT=1 "$docker_cli" build --progress=plain -f deploy/docker/Dockerfile \
    --target "$target" --build-arg BINARIES="$binaries" --build-arg TRAINER_BASE="$trainer_base" \
    --label org.opencontainers.image.revision="$tag" -t "$image" . > out/docker/build-$target.log 2>&1 || {
      tail -30 out/docker/build-$target.log >&2; exit 1; }
done
echo "server=$server_image"
echo "trainer=$trainer_image"
