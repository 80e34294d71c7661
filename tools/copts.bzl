"""Compiler options shared by every tspipe target (one place, as abseil does)."""

TSPIPE_COPTS = [
    "-Wall",
    "-Wno-unused-parameter",
    "-Wno-sign-compare",
]

# TSPIPE_WITH_CUDA is defined only in --config=cuda builds, and only for the
# translation units that test it (as local_defines: a propagated define
# would change every dependent's compile command). CPU builds never pretend
# to have CUDA.
TSPIPE_CUDA_DEFINES = select({
    "//tools:cuda_enabled": ["TSPIPE_WITH_CUDA=1"],
    "//conditions:default": [],
})

def torch_deps():
    """LibTorch for targets that use tensors.

    Every translation unit compiles against the same LibTorch headers in
    both configurations; --config=cuda only adds libtorch_cuda, c10_cuda and
    the CUDA runtime and NCCL to the link (targets without headers, so no
    dependent's compile command changes). That keeps a CUDA build from
    recompiling the code that does not differ under CUDA: only the files
    that use TSPIPE_WITH_CUDA or CUDA headers do (cuda_headers_copts).
    """
    return ["@libtorch//:torch_cpu"] + select({
        "//tools:cuda_enabled": [
            "@libtorch//:torch_cuda_libs",
            "//third_party:cuda_link",
        ],
        "//conditions:default": [],
    })

def cuda_header_srcs():
    """The CUDA toolkit's headers as private sources.

    In every configuration: private headers are inputs of the dependents'
    compiles too, and a select here would change all of their action keys
    under --config=cuda (a full recompile). Only CUDA_HEADER_COPTS, which
    does not propagate, differs.
    """
    return ["@cuda//:headers"]

# Where those headers are, for the one target that includes them (copts do
# not propagate).
CUDA_HEADER_COPTS = select({
    "//tools:cuda_enabled": [
        "-isystem",
        "external/cuda/include",
        "-isystem",
        "external/cuda/include/cccl",
    ],
    "//conditions:default": [],
})
