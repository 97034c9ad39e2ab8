"""Guards that make a batch decode like one utterance at a time: padding must not leak into a row's
encoder output or CTC (ESPnet's batched forward assumes the padded frames are harmless; some layers are not).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:

    pass


@contextmanager
def _padding_guards(model: Any) -> Iterator[None]:
    """Make a padded batch give each row what it gives alone, where ESPnet lets padding leak in:

    * the frontend (STFT: a row's last window reads the next row's zeros instead of its own reflection)
      runs row by row on each row's own length, then is padded again;
    * the convolutional subsampling's output mask counts each row's frames as the row alone has them
      (ESPnet slices the padded input mask, which counts up to two frames more per row: frames that then
      take part in every attention and CTC of that row);
    * a conformer block's depthwise convolution (no mask in ESPnet) reads zeros past each row's end, as a
      row alone does from the convolution's own zero padding, instead of the padded frames' activations.
    """
    import torch

    handles = []
    frontend = getattr(model, "frontend", None)
    if frontend is not None:

        def per_row(module: Any, args: tuple[Any, ...], output: Any) -> Any:
            speech, lengths = args[0], args[1]
            rows = [module.forward(speech[i : i + 1, : int(n)], lengths[i : i + 1]) for i, n in enumerate(lengths)]
            feats_lengths = torch.cat([r[1] for r in rows])
            feats = output[0].new_zeros(len(rows), int(feats_lengths.max()), output[0].size(-1))
            for i, (row, _) in enumerate(rows):
                feats[i, : row.size(1)] = row[0]
            return feats, feats_lengths

        handles.append(frontend.register_forward_hook(per_row))
    embed = getattr(model.encoder, "embed", None)
    convs = [m for m in getattr(embed, "conv", []) if isinstance(m, torch.nn.Conv2d)]
    if convs:

        def own_lengths(module: Any, args: tuple[Any, ...], output: Any) -> Any:
            mask = output[1] if isinstance(output, tuple) and len(output) == 2 else None
            if not isinstance(mask, torch.Tensor) or len(args) < 2 or args[1] is None:
                return None
            lengths = args[1].sum(dim=-1).view(-1)
            for conv in convs:  # the time axis through each convolution, as for a row alone
                lengths = (lengths + 2 * conv.padding[0] - conv.kernel_size[0]) // conv.stride[0] + 1
            frames = torch.arange(mask.size(-1), device=mask.device)
            return output[0], (frames[None, :] < lengths[:, None]).unsqueeze(1) & mask.bool()

        handles.append(embed.register_forward_hook(own_lengths))
    for layer in model.encoder.modules():
        depthwise = getattr(getattr(layer, "conv_module", None), "depthwise_conv", None)
        if depthwise is None:
            continue
        state: dict[str, Any] = {}

        def keep_mask(module: Any, args: tuple[Any, ...], state: dict[str, Any] = state) -> None:
            mask = args[1] if len(args) > 1 else None
            state["mask"] = mask if isinstance(mask, torch.Tensor) and mask.dim() == 3 else None

        def zero_padding(module: Any, args: tuple[Any, ...], state: dict[str, Any] = state) -> Any:
            mask = state.get("mask")
            if mask is None or mask.size(-1) != args[0].size(-1):
                return None
            return (args[0].masked_fill(~mask.bool(), 0.0),)

        handles.append(layer.register_forward_pre_hook(keep_mask))
        handles.append(depthwise.register_forward_pre_hook(zero_padding))
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


@contextmanager
def _nothing() -> Iterator[None]:
    yield
