"""The libtorch the build uses, chosen by the environment.

    bazel build --repo_env=LIBTORCH=/path/to/libtorch //trainer:train

LIBTORCH names a folder with include/ and lib/: an official libtorch zip
unpacked (libtorch/), or a PyTorch wheel's torch/ folder (for example
/opt/torch/.venv/lib/python3.12/site-packages/torch). Unset, the build uses
Debian's CPU libtorch from /usr (the default, and what tests run against).

The rule checks the folder, finds out whether it is a CUDA build (a
lib/libtorch_cuda.so) and which C++ ABI it was built with, and writes
@libtorch//:torch (headers, the libraries to link, an rpath to its lib/ so
the binaries find it at run time; libtorch_cuda is linked with
--no-as-needed, or its kernels would never register) and
@libtorch//:defs.bzl (LIBTORCH_INFO, LIBTORCH_COPTS for //bazel:torch.bzl).

Only the C++11 ABI is accepted: Debian's gRPC, Abseil and RocksDB, which
the same binaries link, use it; a libtorch built with the old ABI
(_GLIBCXX_USE_CXX11_ABI=0, the "pre-cxx11" zips) could not be mixed with
them, so the rule stops and says which zip to take.
"""

_DEBIAN_BUILD = """# Debian's libtorch (CPU), from /usr (written by //bazel:libtorch.bzl).
package(default_visibility = ["//visibility:public"])

# Its headers are in /usr/include, which the compiler searches anyway; the
# C++ API's are added by LIBTORCH_COPTS.
cc_library(
    name = "torch",
    linkopts = [
        "-ltorch",
        "-ltorch_cpu",
        "-lc10",
    ],
)
"""

_CUSTOM_BUILD = """# libtorch from {root} (written by //bazel:libtorch.bzl).
package(default_visibility = ["//visibility:public"])

cc_library(
    name = "torch",
    hdrs = glob([
        "include/ATen/**",
        "include/c10/**",
        "include/caffe2/**",
        "include/torch/**",
    ]),
    includes = [
        "include",
        "include/torch/csrc/api/include",
    ],
    defines = ["_GLIBCXX_USE_CXX11_ABI=1"],
    linkopts = {linkopts},
)
"""

_REQUIRED = [
    "include/ATen/ATen.h",
    "include/torch/csrc/api/include/torch/version.h",
    "lib/libtorch.so",
    "lib/libtorch_cpu.so",
    "lib/libc10.so",
]

def _defs(root, cuda, abi, version, copts):
    return """# Written by //bazel:libtorch.bzl.
LIBTORCH_INFO = struct(
    root = "{root}",
    cuda = {cuda},
    cxx11_abi = {abi},
    version = "{version}",
)

LIBTORCH_COPTS = {copts}
""".format(root = root, cuda = cuda, abi = abi, version = version, copts = copts)

def _version(ctx, header):
    """MAJOR.MINOR.PATCH from torch/version.h, or "unknown"."""
    if not ctx.path(header).exists:
        return "unknown"
    parts = {}
    for line in ctx.read(header).splitlines():
        fields = [f for f in line.replace("\t", " ").split(" ") if f]
        if len(fields) == 3 and fields[0] == "#define" and fields[1].startswith("TORCH_VERSION_"):
            parts[fields[1][len("TORCH_VERSION_"):]] = fields[2]
    if not all([k in parts for k in ("MAJOR", "MINOR", "PATCH")]):
        return "unknown"
    return "%s.%s.%s" % (parts["MAJOR"], parts["MINOR"], parts["PATCH"])

def _cxx11_abi(ctx, libc10):
    """1 when libc10's std::string symbols are the C++11 ABI's, 0 when not."""
    result = ctx.execute(["nm", "-D", "--defined-only", libc10], quiet = True)
    if result.return_code != 0:
        fail("LIBTORCH: cannot read the symbols of %s (nm: %s)" % (libc10, result.stderr))
    if "__cxx11" in result.stdout:
        return 1
    return 0

def _libtorch_repository_impl(ctx):
    root = ctx.os.environ.get("LIBTORCH", "").rstrip("/")
    if not root:
        ctx.file("BUILD.bazel", _DEBIAN_BUILD)
        ctx.file("defs.bzl", _defs(
            root = "/usr",
            cuda = False,
            abi = 1,
            version = _version(ctx, "/usr/include/torch/csrc/api/include/torch/version.h"),
            copts = ["-isystem", "/usr/include/torch/csrc/api/include"],
        ))
        return
    if not root.startswith("/"):
        fail("LIBTORCH must be an absolute path, not %s" % root)
    for required in _REQUIRED:
        if not ctx.path(root + "/" + required).exists:
            fail(("LIBTORCH=%s is not a libtorch folder: %s is missing. Point it at an " +
                  "unpacked official libtorch zip (libtorch/) or a PyTorch wheel's torch/ " +
                  "folder.") % (root, required))
    lib = root + "/lib"
    abi = _cxx11_abi(ctx, lib + "/libc10.so")
    if abi != 1:
        fail(("LIBTORCH=%s was built with the pre-C++11 ABI (_GLIBCXX_USE_CXX11_ABI=0); " +
              "Debian's gRPC, Abseil and RocksDB, linked into the same binaries, use the " +
              "C++11 ABI. Take the \"cxx11 ABI\" libtorch zip, or a PyTorch wheel " +
              "(built with the C++11 ABI since 2.7).") % root)
    cuda = ctx.path(lib + "/libtorch_cuda.so").exists
    ctx.symlink(root + "/include", "include")
    libs = ["-ltorch"]
    if cuda:
        libs += ["-ltorch_cuda"]
    libs += ["-ltorch_cpu"]
    if cuda and ctx.path(lib + "/libc10_cuda.so").exists:
        libs += ["-lc10_cuda"]
    libs += ["-lc10"]

    # --no-as-needed around the libraries: a CUDA libtorch registers its
    # kernels from libtorch_cuda's static initialisers, and no symbol of it
    # is referenced directly, so --as-needed would drop it.
    linkopts = ["-L" + lib, "-Wl,-rpath," + lib, "-Wl,--no-as-needed"] + libs + ["-Wl,--as-needed"]
    ctx.file("BUILD.bazel", _CUSTOM_BUILD.format(root = root, linkopts = repr(linkopts)))
    ctx.file("defs.bzl", _defs(
        root = root,
        cuda = cuda,
        abi = abi,
        version = _version(ctx, root + "/include/torch/csrc/api/include/torch/version.h"),
        copts = [],
    ))

libtorch_repository = repository_rule(
    implementation = _libtorch_repository_impl,
    environ = ["LIBTORCH"],
    local = True,
)
