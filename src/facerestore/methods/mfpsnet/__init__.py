"""FRSNet / MFPSNet (paper 001, Yu et al., "Multi-Prior Learning via Neural Architecture Search for Blind Face
Restoration"): search spaces, the DARTS-style search (Algorithm 1), decoded networks, facial priors, restorer.

- ``ops``: ConvBR, the candidate operations (skip, conv3, conv5, conv7), residual dense blocks;
- ``genotype``: module genotypes (path + cell), JSON read/write, the released presets;
- ``decode``: softmax relaxation, cell decoding, Viterbi network path;
- ``search_space``: searchable cells and super-networks (``SearchFRSNet``, ``SearchMFPSNet``);
- ``network``: ``FRSNet`` and ``MFPSNet`` built from any genotype, parameter counts;
- ``search``: Algorithm 1 (alternating first-order updates on D_A / D_B, disentanglement batches, resumable);
- ``priors``: parsing maps, 71-channel heatmaps and component dictionaries from our face pipeline;
- ``losses``: eq. 9 (L1 + perceptual, VGG19 or a stated substitute);
- ``restorer``: the "mfpsnet" method (weights trained by the user).
"""

from facerestore.methods.mfpsnet.decode import decode_cell, normalized_alphas, normalized_betas, viterbi_path
from facerestore.methods.mfpsnet.genotype import PRESETS, Genotype, ModuleGenotype, load_genotype, save_genotype
from facerestore.methods.mfpsnet.network import FRSNet, MFPSNet, SearchedModule, count_parameters
from facerestore.methods.mfpsnet.search_space import SearchFRSNet, SearchMFPSNet, SuperModule

__all__ = [
    "PRESETS",
    "FRSNet",
    "Genotype",
    "MFPSNet",
    "ModuleGenotype",
    "SearchFRSNet",
    "SearchMFPSNet",
    "SearchedModule",
    "SuperModule",
    "count_parameters",
    "decode_cell",
    "load_genotype",
    "normalized_alphas",
    "normalized_betas",
    "save_genotype",
    "viterbi_path",
]
