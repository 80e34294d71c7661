"""Compiler options shared by every tspipe target (one place, as abseil does)."""

TSPIPE_COPTS = [
    "-Wall",
    "-Wno-unused-parameter",
    "-Wno-sign-compare",
]

# TSPIPE_WITH_CUDA is defined only in --config=cuda builds; CPU builds never
# pretend to have CUDA.
TSPIPE_CUDA_DEFINES = select({
    "//tools:cuda_enabled": ["TSPIPE_WITH_CUDA=1"],
    "//conditions:default": [],
})

def torch_deps():
    """LibTorch for targets that use tensors: CPU, plus CUDA under --config=cuda."""
    return select({
        "//tools:cuda_enabled": [
            "@libtorch//:torch_cuda",
            "@cuda//:cuda",
        ],
        "//conditions:default": ["@libtorch//:torch_cpu"],
    })
