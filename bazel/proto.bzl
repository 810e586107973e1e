"""cc_grpc_proto: one BUILD line per .proto, generating C++ messages and gRPC stubs.

Runs Debian's /usr/bin/protoc with /usr/bin/grpc_cpp_plugin (no download, no
rules_proto). Files import each other by workspace path ("protos/x.proto") and
the generated headers are included the same way ("protos/x.grpc.pb.h").
"""

def cc_grpc_proto(name, src, deps = [], grpc = True, visibility = None):
    """Generates `<name>` (a cc_library) from `src`.

    Args:
      name: the cc_library to create.
      src: the .proto file in this package.
      deps: other cc_grpc_proto targets whose .proto files `src` imports.
      grpc: also generate service stubs (.grpc.pb.*).
      visibility: visibility of the cc_library.
    """
    base = src[:-len(".proto")]
    outs = [base + ".pb.h", base + ".pb.cc"]
    if grpc:
        outs += [base + ".grpc.pb.h", base + ".grpc.pb.cc"]
    plugin = ""
    if grpc:
        plugin = "--grpc_out=$(GENDIR) --plugin=protoc-gen-grpc=/usr/bin/grpc_cpp_plugin "
    dep_protos = [d + "_proto_srcs" for d in deps]
    native.filegroup(
        name = name + "_proto_srcs",
        srcs = [src] + dep_protos,
        visibility = visibility,
    )
    native.genrule(
        name = name + "_codegen",
        srcs = [src] + dep_protos,
        outs = outs,
        cmd = ("/usr/bin/protoc -I. --cpp_out=$(GENDIR) " + plugin +
               "$(location " + src + ")"),
        message = "protoc " + src,
    )
    native.cc_library(
        name = name,
        srcs = [o for o in outs if o.endswith(".cc")],
        hdrs = [o for o in outs if o.endswith(".h")],
        deps = deps + ["//third_party:grpc", "//third_party:protobuf"],
        visibility = visibility,
    )
