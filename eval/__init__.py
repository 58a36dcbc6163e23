"""Evaluation: scores of trained tokenizers and pipelines; it does not train.

- ``eval/fid.py``: FID / IS / precision-recall of generated samples, reconstructions or data against a
  reference split (torch-fidelity's Inception, cached reference statistics);
- ``eval/reconstruction.py``: RMSE, PSNR, SSIM, LPIPS, perplexity and codes used of a tokenizer on a split;
- ``eval/rate_distortion.py``: distortion against codebook size or layer count (paper Figures 2, 3, 5);
- ``eval/inception.py``: the Inception feature extractor and where its weights are found offline.
"""
