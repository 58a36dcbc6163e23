"""Stage-two priors over HQ-VAE codes: ``from prior import MaskedTokenTransformer, RQTransformer``.

- ``MaskedTokenTransformer``: Muse/MaskGIT masked-token prior for one code level, class-conditional with a null
  class for classifier-free guidance, the finer level conditioned on the coarser levels' codes;
- ``RQTransformer``: spatial + depth transformers over the residual code stacks of an RSQ-VAE / RQ-VAE;
- ``ContextualRQTransformer`` + ``DraftAndReviseScheduler``: the bidirectional (draft-and-revise) variant;
- ``MaskedTokenScheduler``: MaskGIT's iterative parallel decoding as a diffusers scheduler;
- ``.sample(class_labels, ...)``: one entry point per prior family (``MaskedPriorStack``, ``MaskedTokenTransformer``,
  ``RQTransformer``), owning its decoding schedule; ``sample_masked`` / ``sample_rq`` are the loops underneath;
- ``CodeDataset``: codes written by ``prior/extract.py``.
"""

from .codes import CodeDataset, collate_codes
from .contextual import ContextualRQOutput, ContextualRQTransformer, DraftAndReviseScheduler
from .masked import MaskedPriorOutput, MaskedPriorStack, MaskedTokenTransformer
from .rq_transformer import RQTransformer, RQTransformerOutput
from .sampling import sample_draft_and_revise, sample_masked, sample_rq
from .scheduler import MaskedTokenScheduler, MaskedTokenSchedulerOutput

__all__ = [
    "CodeDataset",
    "collate_codes",
    "ContextualRQOutput",
    "ContextualRQTransformer",
    "DraftAndReviseScheduler",
    "MaskedPriorOutput",
    "MaskedPriorStack",
    "MaskedTokenTransformer",
    "RQTransformer",
    "RQTransformerOutput",
    "sample_draft_and_revise",
    "sample_masked",
    "sample_rq",
    "MaskedTokenScheduler",
    "MaskedTokenSchedulerOutput",
]
