#!/usr/bin/env python3
"""Builds the trainer's binaries on a machine without Bazel by replaying
Bazel's own compile, archive and link commands (issue 16).

  bundle.py make   --aquery AQ.json --execroot DIR --out BUNDLE_DIR
  bundle.py replay --bundle BUNDLE_DIR --source REPO --libtorch DIR [--jobs N]
  bundle.py check  --bundle BUNDLE_DIR

`make` (here, after `bazel build`): reads `bazel aquery --output=jsonproto`
of the binaries, and writes BUNDLE_DIR/plan.json (every CppCompile,
CppArchive and CppLink command, in order), the generated sources those
commands read (protobuf and gRPC code under bazel-out/), the system headers
they read that a machine with only a compiler and libtorch lacks (found in
the compile commands' .d files, by the Debian package owning each one), and
the shared libraries the binaries need besides libtorch, glibc and
libstdc++ (with the names the linker looks for).

`replay` (there): runs the commands in an execroot made of the source tree
(symlinked) and the bundle's bazel-out/, against another libtorch: Debian's
libtorch include flag and libraries are replaced by the chosen libtorch's
(a CUDA build's libtorch_cuda and libc10_cuda linked with --no-as-needed),
the bundle's headers and libraries are added (with an rpath), and
compilations run in parallel. The binaries land where Bazel puts them
(execroot/bazel-out/k8-*/bin/...).

`check` (after a replay): reads the replayed compilations' .d files and
fails if any header came from a system package the target machine would
lack, or from Debian's libtorch instead of the chosen one.
"""

import argparse
import concurrent.futures
import glob
import json
import os
import shutil
import subprocess
import sys
import time

DEBIAN_TORCH_INCLUDE = "/usr/include/torch/csrc/api/include"
DEBIAN_TORCH_LIBS = ["-ltorch", "-ltorch_cpu", "-lc10"]
# Packages every machine with a C++ compiler has (or that libtorch brings).
PROVIDED_PACKAGES = ("libc6-dev", "linux-libc-dev", "libstdc++", "libgcc", "gcc-", "g++-",
                     "libtorch", "libcrypt-dev", "libnsl-dev", "libtirpc-dev")
MNEMONICS = ("CppCompile", "CppArchive", "CppLink")


def read_aquery(path):
    with open(path) as f:
        doc = json.load(f)
    fragments = {p["id"]: p for p in doc.get("pathFragments", [])}

    def path_of(fragment_id):
        parts = []
        while fragment_id:
            p = fragments[fragment_id]
            parts.append(p["label"])
            fragment_id = p.get("parentId", 0)
        return "/".join(reversed(parts))

    artifacts = {a["id"]: path_of(a["pathFragmentId"]) for a in doc.get("artifacts", [])}
    actions = []
    for a in doc.get("actions", []):
        if a.get("mnemonic") not in MNEMONICS:
            continue
        actions.append({
            "mnemonic": a["mnemonic"],
            "arguments": a["arguments"],
            "outputs": [artifacts[o] for o in a.get("outputIds", [])],
        })
    order = {m: i for i, m in enumerate(MNEMONICS)}
    actions.sort(key=lambda a: order[a["mnemonic"]])
    return actions


def drop_param_files(arguments):
    """aquery already lists a parameter file's contents in `arguments`, and
    the @file reference besides: keep the contents only."""
    return [arg for arg in arguments if not (arg.startswith("@") and arg.endswith(".params"))]


def owning_packages(paths):
    """{path: the Debian package that installed it} (one dpkg call for all;
    a path through a symlink is asked for again as its real path)."""
    def ask(batch):
        found = {}
        for i in range(0, len(batch), 500):
            result = subprocess.run(["dpkg", "-S"] + batch[i:i + 500], capture_output=True,
                                    text=True)
            for line in result.stdout.splitlines():
                package, _, path = line.partition(": ")
                found[path] = package.split(":")[0]
        return found
    found = ask(sorted(paths))
    missing = [p for p in paths if p not in found]
    real = {p: os.path.realpath(p) for p in missing}
    again = ask(sorted(set(real.values())))
    for p in missing:
        found[p] = again.get(real[p], "")
    return found


def headers_read(actions, execroot):
    """Absolute header paths the compile commands read (from their .d files)."""
    headers = set()
    for a in actions:
        if a["mnemonic"] != "CppCompile":
            continue
        args = a["arguments"]
        if "-MF" not in args:
            continue
        dfile = os.path.join(execroot, args[args.index("-MF") + 1])
        if not os.path.exists(dfile):
            sys.exit(f"bundle: {dfile} is missing: build the targets first")
        with open(dfile) as f:
            for token in f.read().replace("\\\n", " ").split():
                if token.startswith("/") and not token.endswith(":"):
                    headers.add(os.path.normpath(token))
    return headers


def ldd_closure(path):
    """The real paths of every shared library `path` loads, as ldd resolves them."""
    found = set()
    ldd = subprocess.run(["ldd", path], capture_output=True, text=True).stdout
    for line in ldd.splitlines():
        parts = line.split("=>")
        if len(parts) == 2 and parts[1].strip().startswith("/"):
            found.add(os.path.realpath(parts[1].split()[0]))
    return found


def direct_libraries(binary, skip):
    """The libraries `binary` names itself (NEEDED), less `skip`, with what
    they load in turn; libtorch's own dependencies are not followed, the
    other machine's libtorch brings its own."""
    resolved = {}
    ldd = subprocess.run(["ldd", binary], capture_output=True, text=True).stdout
    for line in ldd.splitlines():
        parts = line.split("=>")
        if len(parts) == 2 and parts[1].strip().startswith("/"):
            resolved[parts[0].strip()] = os.path.realpath(parts[1].split()[0])
    dynamic = subprocess.run(["objdump", "-p", binary], capture_output=True, text=True).stdout
    found = set()
    for line in dynamic.splitlines():
        fields = line.split()
        if len(fields) == 2 and fields[0] == "NEEDED" and fields[1] in resolved:
            if not fields[1].startswith(skip):
                found.add(resolved[fields[1]])
                found.update(ldd_closure(resolved[fields[1]]))
    return found


def make(args):
    execroot = os.path.realpath(args.execroot)
    actions = read_aquery(args.aquery)
    for a in actions:
        a["arguments"] = drop_param_files(a["arguments"])
    # Bazel also links a shared library and an archive of every cc_library;
    # the binaries link the objects themselves (between --start-lib and
    # --end-lib), so only the binaries' links are replayed.
    actions = [a for a in actions
               if not (a["mnemonic"] == "CppLink" and a["outputs"][0].endswith((".so", ".a")))]
    out = args.out
    if os.path.exists(out):
        shutil.rmtree(out)
    os.makedirs(out)

    # Generated sources and headers: every bazel-out/ input of a compile.
    generated = set()
    for a in actions:
        if a["mnemonic"] != "CppCompile":
            continue
        for arg in a["arguments"]:
            if arg.startswith("bazel-out/") and arg.endswith((".cc", ".h")):
                generated.add(arg)
    for path in glob.glob(os.path.join(execroot, "bazel-out/*/bin/**/*.pb.*"), recursive=True):
        generated.add(os.path.relpath(path, execroot))
    for rel in sorted(generated):
        src = os.path.join(execroot, rel)
        if os.path.isfile(src):
            os.makedirs(os.path.join(out, os.path.dirname(rel)), exist_ok=True)
            shutil.copy2(src, os.path.join(out, rel))

    # System headers the other machine lacks, by owning package.
    kept, packages = 0, set()
    headers = sorted(h for h in headers_read(actions, execroot) if h.startswith("/usr/include/"))
    owners = owning_packages(headers)
    for header in headers:
        package = owners.get(header, "")
        if not package or package.startswith(PROVIDED_PACKAGES):
            continue
        packages.add(package)
        # Debian's multiarch folder is a system include directory of its own:
        # its headers go to the top of the bundle's.
        rel = os.path.relpath(header, "/usr/include")
        if rel.startswith("x86_64-linux-gnu/"):
            rel = rel[len("x86_64-linux-gnu/"):]
        dest = os.path.join(out, "include", rel)
        os.makedirs(os.path.dirname(dest), exist_ok=True)
        shutil.copy2(header, dest)
        kept += 1

    # Shared libraries: what the linked -l names resolve to, and what those
    # need in turn, less glibc, libstdc++/libgcc and libtorch's own.
    names = set()
    for a in actions:
        if a["mnemonic"] == "CppLink":
            names.update(arg[2:] for arg in a["arguments"]
                         if arg.startswith("-l") and arg not in DEBIAN_TORCH_LIBS)
    libdir = "/usr/lib/x86_64-linux-gnu"
    skip = ("libc.so", "libm.so", "libstdc++", "libgcc_s", "ld-linux", "libpthread", "libdl.",
            "librt.", "libtorch", "libc10", "libgomp")
    closure = set()
    for name in sorted(names):
        dev = os.path.join(libdir, f"lib{name}.so")
        if not os.path.exists(dev):
            continue  # a static or system-provided library (pthread)
        real = os.path.realpath(dev)
        closure.add(real)
        closure.update(ldd_closure(real))
    # What the binaries Bazel linked here load, which also covers libraries
    # named on the link line by path rather than by -l (glog's libunwind,
    # curl's libssh2).
    for a in actions:
        if a["mnemonic"] == "CppLink":
            binary = os.path.join(execroot, a["outputs"][0])
            if os.path.exists(binary):
                closure.update(direct_libraries(binary, skip))
    os.makedirs(os.path.join(out, "lib"))
    for real in sorted(closure):
        base = os.path.basename(real)
        if base.startswith(skip):
            continue
        shutil.copy2(real, os.path.join(out, "lib", base))
        soname = subprocess.run(["objdump", "-p", real], capture_output=True,
                                text=True).stdout
        for line in soname.splitlines():
            if line.strip().startswith("SONAME"):
                so = line.split()[1]
                if so != base:
                    os.symlink(base, os.path.join(out, "lib", so))
    for name in sorted(names):
        dev = os.path.join(libdir, f"lib{name}.so")
        if os.path.exists(dev) and os.path.exists(os.path.join(out, "lib",
                                                                os.path.basename(os.path.realpath(dev)))):
            link = os.path.join(out, "lib", f"lib{name}.so")
            if not os.path.lexists(link):
                os.symlink(os.path.basename(os.path.realpath(dev)), link)

    with open(os.path.join(out, "plan.json"), "w") as f:
        json.dump({"actions": actions}, f, indent=0)
    counts = {m: sum(a["mnemonic"] == m for a in actions) for m in MNEMONICS}
    print(f"bundle: {counts['CppCompile']} compilations, {counts['CppArchive']} archives, "
          f"{counts['CppLink']} links; {len(generated)} generated files; {kept} headers of "
          f"{len(packages)} packages; {len(os.listdir(os.path.join(out, 'lib')))} library files")


def rewrite_compile(argv, bundle, libtorch):
    out = [argv[0]]
    # The bundle's headers come first: a PyTorch wheel ships an older
    # protobuf's headers in its include/, which must not shadow the version
    # the generated sources were made with.
    extra = ["-isystem", f"{bundle}/include",
             "-isystem", f"{libtorch}/include",
             "-isystem", f"{libtorch}/include/torch/csrc/api/include"]
    if os.path.isdir("/usr/local/cuda/include"):
        extra += ["-isystem", "/usr/local/cuda/include"]
    if os.path.exists(f"{libtorch}/lib/libtorch_cuda.so"):
        extra.append("-DDD_WITH_CUDA")  # CUDA-only reporting (unet_step_bench's peak memory)
    out += extra
    i = 1
    while i < len(argv):
        if argv[i] == "-isystem" and i + 1 < len(argv) and argv[i + 1] == DEBIAN_TORCH_INCLUDE:
            i += 2
            continue
        out.append(argv[i])
        i += 1
    return out


def rewrite_link(argv, bundle, libtorch):
    cuda = os.path.exists(f"{libtorch}/lib/libtorch_cuda.so")
    torch = [f"-L{libtorch}/lib", f"-Wl,-rpath,{libtorch}/lib", "-Wl,--no-as-needed", "-ltorch"]
    if cuda:
        torch.append("-ltorch_cuda")
    torch.append("-ltorch_cpu")
    if cuda and os.path.exists(f"{libtorch}/lib/libc10_cuda.so"):
        torch.append("-lc10_cuda")
    torch += ["-lc10", "-Wl,--as-needed"]
    # DT_RPATH rather than RUNPATH: the bundle's libraries find their own
    # dependencies there too (RUNPATH applies to the binary's direct ones only).
    out, placed = [argv[0], f"-L{bundle}/lib", f"-Wl,-rpath,{bundle}/lib", "-Wl,--disable-new-dtags"], False
    for arg in argv[1:]:
        if arg in DEBIAN_TORCH_LIBS:
            if not placed:
                out += torch
                placed = True
            continue
        out.append(arg)
    return out


def replay(args):
    bundle = os.path.realpath(args.bundle)
    source = os.path.realpath(args.source)
    libtorch = os.path.realpath(args.libtorch)
    for required in ("include/ATen/ATen.h", "lib/libtorch.so", "lib/libc10.so"):
        if not os.path.exists(os.path.join(libtorch, required)):
            sys.exit(f"replay: {libtorch} is not a libtorch folder ({required} is missing)")
    with open(os.path.join(bundle, "plan.json")) as f:
        actions = json.load(f)["actions"]
    execroot = os.path.join(bundle, "execroot")
    os.makedirs(execroot, exist_ok=True)
    for entry in os.listdir(source):
        link = os.path.join(execroot, entry)
        if entry.startswith((".", "bazel-", "out")) or os.path.lexists(link):
            continue
        os.symlink(os.path.join(source, entry), link)
    if not os.path.lexists(os.path.join(execroot, "bazel-out")):
        os.symlink(os.path.join(bundle, "bazel-out"), os.path.join(execroot, "bazel-out"))

    def run(action):
        for output in action["outputs"]:
            os.makedirs(os.path.join(execroot, os.path.dirname(output)), exist_ok=True)
        argv = action["arguments"]
        if action["mnemonic"] == "CppCompile":
            argv = rewrite_compile(argv, bundle, libtorch)
        elif action["mnemonic"] == "CppLink":
            argv = rewrite_link(argv, bundle, libtorch)
        result = subprocess.run(argv, cwd=execroot, capture_output=True, text=True)
        if result.returncode != 0:
            lines = result.stderr.splitlines()
            errors = [l for l in lines if "error" in l][:20] or lines[-20:]
            return f"{action['outputs'][0]}:\n{' '.join(argv)}\n" + "\n".join(errors)
        return None

    done, start = 0, time.monotonic()
    for mnemonic in MNEMONICS:
        batch = [a for a in actions if a["mnemonic"] == mnemonic]
        errors = []
        with concurrent.futures.ThreadPoolExecutor(max_workers=args.jobs) as pool:
            for error in pool.map(run, batch):
                done += 1
                if error:
                    errors.append(error)
                elapsed = time.monotonic() - start
                rate = done / elapsed if elapsed > 0 else 0
                eta = (len(actions) - done) / rate if rate > 0 else 0
                print(f"\rreplay: {done}/{len(actions)} commands, {rate:.1f}/s, ETA {eta:.0f} s ",
                      end="", flush=True)
        # Every failure of a stage at once: a device run is too short to
        # learn them one by one.
        if errors:
            print()
            for error in errors:
                print(f"replay: failed: {error}", file=sys.stderr)
            sys.exit(f"replay: {len(errors)} of {len(batch)} {mnemonic} commands failed")
    print()
    for a in actions:
        if a["mnemonic"] == "CppLink" and not a["outputs"][0].endswith((".so", ".a")):
            print(os.path.join(execroot, a["outputs"][0]))


def check(args):
    """Fails when a replayed compilation read a header from /usr/include that
    the target machine would not have (a package other than the C library's,
    the compiler's and the kernel's): the bundle would be incomplete there.
    Reads the .d files the replay wrote."""
    bundle = os.path.realpath(args.bundle)
    execroot = os.path.join(bundle, "execroot")
    with open(os.path.join(bundle, "plan.json")) as f:
        actions = json.load(f)["actions"]
    read = headers_read(actions, execroot)
    system = sorted(h for h in read if h.startswith("/usr/include/"))
    owners = owning_packages(system)
    foreign = [h for h in system
               if owners.get(h, "") and not owners[h].startswith(PROVIDED_PACKAGES)]
    torch_from_usr = [h for h in system if owners.get(h, "").startswith("libtorch")]
    from_bundle = sum(h.startswith(bundle + "/include/") for h in read)
    print(f"check: {len(read)} headers read: {from_bundle} from the bundle, {len(system)} from "
          f"/usr/include ({len(foreign)} of packages the target lacks, {len(torch_from_usr)} of "
          f"Debian's libtorch)")
    for h in (foreign + torch_from_usr)[:20]:
        print(f"  {h} ({owners.get(h)})")
    if foreign or torch_from_usr:
        sys.exit(1)


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    m = sub.add_parser("make")
    m.add_argument("--aquery", required=True)
    m.add_argument("--execroot", required=True)
    m.add_argument("--out", required=True)
    r = sub.add_parser("replay")
    r.add_argument("--bundle", required=True)
    r.add_argument("--source", required=True)
    r.add_argument("--libtorch", required=True)
    r.add_argument("--jobs", type=int, default=os.cpu_count())
    c = sub.add_parser("check")
    c.add_argument("--bundle", required=True)
    args = parser.parse_args()
    {"make": make, "replay": replay, "check": check}[args.command](args)


if __name__ == "__main__":
    main()
