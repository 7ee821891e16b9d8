"""Paper 004: RLS (regularized latent search with a normalizing-flow W prior) and RLS+ (L1-ball fine-tuning).

    from facerestore.methods.rls import RLSRestorer, RLSPlusRestorer
    r = RLSPlusRestorer(weights="stylegan2-ffhq-config-f.pt", preset="paper")
    hr = r.restore(lr)

The flow prior is ours (the authors did not release theirs): ``facerestore train-flow --generator PATH``.
"""

from facerestore.methods.rls.flow_prior import (
    find_flow,
    flow_paths,
    load_generator_flow,
    save_generator_flow,
    train_generator_flow,
)
from facerestore.methods.rls.restorer import RLSPlusRestorer, RLSRestorer
from facerestore.methods.rls.rls import (
    LR_SPREAD,
    PRESETS,
    RLSConfig,
    RLSPlusResult,
    RLSResult,
    config,
    cross_term,
    fidelity_term,
    logp_term,
    mean_w,
    one_cycle_factor,
    pn_term,
    project_l1_ball,
    rls_loss,
    rls_plus,
    rls_search,
    search_lr,
    w_spread,
)

__all__ = [
    "LR_SPREAD",
    "PRESETS",
    "RLSConfig",
    "RLSPlusRestorer",
    "RLSPlusResult",
    "RLSRestorer",
    "RLSResult",
    "config",
    "cross_term",
    "fidelity_term",
    "find_flow",
    "flow_paths",
    "load_generator_flow",
    "logp_term",
    "mean_w",
    "one_cycle_factor",
    "pn_term",
    "project_l1_ball",
    "rls_loss",
    "rls_plus",
    "rls_search",
    "save_generator_flow",
    "search_lr",
    "train_generator_flow",
    "w_spread",
]
