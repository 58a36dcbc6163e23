"""Two-stage sampling pipelines: ``from pipelines import HQVAEPipeline``.

``HQVAEPipeline.from_pretrained(folder)`` loads a folder written by ``save_pretrained`` or by
``python pipelines/assemble.py``. The tokenizer and prior packages are imported here so that diffusers can
resolve the components' classes (``tokenizer.HQVAE``, ``prior.MaskedPriorStack``, ...) in a fresh process.
"""

import prior  # noqa: F401  (component classes for from_pretrained)
import tokenizer  # noqa: F401

from .pipeline_hqvae import HQVAEPipeline, HQVAEPipelineOutput, check_components

__all__ = ["HQVAEPipeline", "HQVAEPipelineOutput", "check_components"]
