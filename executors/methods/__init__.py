"""Importing this package registers every method (an explicit list: the registry is an allow-list)."""

from executors.methods import baseline  # noqa: F401
from executors.methods.attn import double_sparsity  # noqa: F401
from executors.methods.deploy import amp as deploy_amp  # noqa: F401  (train.amp is also `amp`)
from executors.methods.deploy import onnxruntime, onnxruntime_int8, openvino, qat_int8  # noqa: F401
from executors.methods.diffusion import (  # noqa: F401
    adaptive_guidance,
    adaspa,
    autodiffusion,
    dpm_solver,
    harmonica,
    linear_ag,
    ptq4dm,
    speedupnet,
    static_cache,
)
from executors.methods.distill import diswot  # noqa: F401
from executors.methods.heads import gbnn  # noqa: F401
from executors.methods.prune import adapt_pruner, perp  # noqa: F401
from executors.methods.quant import (  # noqa: F401
    abq_arbitrary_bit,
    edgeqat,
    int8_dynamic,
    int8_outlier,
    q_hyvit,
    qfx,
    weight_only_int4,
)
from executors.methods.serve import chunked_prefill, continuous_batching, prefix_caching, static_batching  # noqa: F401
from executors.methods.sparse import gpusq_vit  # noqa: F401
from executors.methods.spec import (  # noqa: F401
    jacobi,
    medusa,
    parallel_prompt,  # noqa: F401
    swift,
)
from executors.methods.sys import compile  # noqa: F401
from executors.methods.tokens import globalcom2, pyramid_drop, tome, turbo  # noqa: F401
from executors.methods.train import (  # noqa: F401
    accelat,
    adabelief,
    amp,
    coat,
    cpt_subset_mix,
    efficienttrain,
    exadam,
    fira,
    galore,
    ghost_bn,
    gstack,
    multigrid,
    multisample_dropout,
    one_epoch,
    qknorm_zloss,
    quality_filter,
    reference,
    rewarm,
    vcycle,
)
