"""Channel co-attention between two images of one class (PCA-Net, seed 002, sec. 3.1).

With F1', F2' the two feature maps flattened to (c, l), l = h*w:

    W = softmax_row(-(F1' F2'^T))        (c, c), eq. 1: each row sums to 1
    F_W1 = W F1',  F_W2 = W F2'          (c, l), eq. 2: ONE W, from (F1, F2), for both images

Eq. 2 applies the same W to both images, so the pair is ordered: swapping the two images
gives W' = softmax_row(-(F2' F1'^T)) = softmax_row of the transposed similarities, which is
in general a different matrix (default, `shared=True`). The authors' code instead gives
each image its own W with itself as the row image (image 2 uses softmax_row(-(F2' F1'^T))),
which makes the module symmetric under swapping (`shared=False`); it also adds the input
back, F_W = W F' + F' (`residual=True`).

Pairs come in the "halves" layout: image i and image i + B/2 of the batch are a pair.
The similarities and their softmax are computed in float32 even under autocast (fp16 or
bf16): entries are sums of h*w products of activations and overflow float16 at 448 px, and
bf16's 8-bit mantissa would flatten the softmax. W is returned in float32; eq. 2's product
then runs in the feature map's dtype (autocast's, where it is on).
"""
from __future__ import annotations

import torch


def co_attention_weights(f1: torch.Tensor, f2: torch.Tensor) -> torch.Tensor:
    """Eq. 1: (N, c, l), (N, c, l) -> W (N, c, c) float32 = softmax over rows of -(f1 f2^T)."""
    with torch.autocast(device_type=f1.device.type, enabled=False):
        sim = torch.bmm(f1.float(), f2.float().transpose(1, 2))  # (N, c, c)
        return torch.softmax(-sim, dim=-1)


def pair_weights(f: torch.Tensor, shared: bool = True) -> torch.Tensor:
    """W for every image of a halves-paired batch: f (B, c, l) -> (B, c, c).

    `shared=True` (paper eq. 2): both images of pair (i, i + B/2) use W(f_i, f_{i+B/2}).
    `shared=False` (authors' code): image i + B/2 uses W(f_{i+B/2}, f_i).
    """
    if f.shape[0] % 2:  # pragma: no mutate block
        raise ValueError(f"co-attention needs same-class pairs in halves layout (batch[i] and "
                         f"batch[i + B/2]); got an odd batch of {f.shape[0]}")
    f1, f2 = f.chunk(2)                                 # (B/2, c, l) each
    w1 = co_attention_weights(f1, f2)                   # (B/2, c, c)
    w2 = w1 if shared else co_attention_weights(f2, f1)
    return torch.cat([w1, w2])                          # (B, c, c)


def co_attend(fmap: torch.Tensor, shared: bool = True, residual: bool = False) -> torch.Tensor:
    """Eq. 2 on a halves-paired batch: fmap (B, c, h, w) -> F_W (B, c, h, w)."""
    f = fmap.flatten(2)                                 # (B, c, l)
    fw = torch.bmm(pair_weights(f, shared).to(f.dtype), f)  # (B, c, l)
    if residual:
        fw = fw + f
    return fw.view_as(fmap)
