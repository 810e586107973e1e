"""Compiler options for targets that include libtorch's C++ headers."""

# Debian's libtorch keeps the C++ API headers outside /usr/include proper.
TORCH_COPTS = [
    "-isystem",
    "/usr/include/torch/csrc/api/include",
    "-Wno-unused-parameter",
    "-Wno-deprecated-declarations",
]
