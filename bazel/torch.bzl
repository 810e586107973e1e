"""Compiler options for targets that include libtorch's C++ headers."""

load("@libtorch//:defs.bzl", "LIBTORCH_COPTS")

# The libtorch's own include flags (Debian's keeps the C++ API headers
# outside /usr/include proper; a LIBTORCH folder brings its headers through
# @libtorch//:torch instead: //bazel:libtorch.bzl), and warnings its headers
# set off.
TORCH_COPTS = LIBTORCH_COPTS + [
    "-Wno-unused-parameter",
    "-Wno-deprecated-declarations",
]
