"""LoRA (espzoo.lora) against full fine-tuning, on a >= 100M-parameter ESPnet model, same batches.

    python bench/lora.py                   # CPU: trainable parameters, optimizer state, checkpoint size, step time
    python bench/lora.py --device cuda     # also peak GPU memory (the figures users care about)
    python bench/lora.py --steps 5 --rank 8

The model is built by ESPnet (ASRTask.build_model): a conformer encoder (d=512, 12 blocks, FFN 2048) and a
transformer decoder (6 blocks) with a 5000-token vocabulary, random weights (seeded). Each variant trains the
same random batches (speech and token ids) with Adam for `--steps` timed steps after one warm-up step, the two
variants' steps interleaved on the CPU (a shared machine's load then falls on both; on CUDA one after the other,
so that each peak memory is its own):

- full: every parameter trains (ESPnet's default fine-tuning);
- lora: espzoo.lora.apply_adapters with rank `--rank` on the attention and feed-forward Linears of encoder
  and decoder, everything else frozen, the optimizer over the trainable tensors only (what espzoo's trainer does).

Printed per variant: trainable parameters, Adam state bytes, ESPnet's checkpoint.pth size (model + optimizer,
as its trainer saves each epoch), the adapter-only file size (LoRA), median step time and, on CUDA, peak memory;
then the ratios lora/full LAST. The closing note says whether GPU figures were measured.
"""

from __future__ import annotations

import argparse
import io
import statistics
import sys
import time
from typing import Any

CONFIG: dict[str, Any] = {
    "frontend": "default",
    "frontend_conf": {"n_fft": 512, "win_length": 400, "hop_length": 160},
    "normalize": None,
    "encoder": "conformer",
    "encoder_conf": {
        "output_size": 512, "attention_heads": 8, "linear_units": 2048, "num_blocks": 12,
        "input_layer": "conv2d", "normalize_before": True, "macaron_style": True, "rel_pos_type": "latest",
        "pos_enc_layer_type": "rel_pos", "selfattention_layer_type": "rel_selfattn", "activation_type": "swish",
        "use_cnn_module": True, "cnn_module_kernel": 31,
    },
    "decoder": "transformer",
    "decoder_conf": {"attention_heads": 8, "linear_units": 2048, "num_blocks": 6},
    "model_conf": {"ctc_weight": 0.3, "lsm_weight": 0.1},
    "token_type": "word",
    "token_list": ["<blank>", "<unk>", *(f"w{i}" for i in range(4997)), "<sos/eos>"],
}


def batches(count: int, batch: int, seconds: float, vocab: int, device: str) -> list[tuple[Any, ...]]:
    import torch

    generator = torch.Generator().manual_seed(0)
    samples = int(seconds * 16000)
    out = []
    for _ in range(count):
        speech = torch.randn(batch, samples, generator=generator) * 0.1
        text = torch.randint(2, vocab - 1, (batch, 20), generator=generator)
        out.append(tuple(t.to(device) for t in (speech, torch.full((batch,), samples), text, torch.full((batch,), 20))))
    return out


class Variant:
    """One model and its optimizer, trained step by step (the variants' steps are interleaved, so a busy shared
    machine slows both alike)."""

    def __init__(self, name: str, args: argparse.Namespace) -> None:
        import torch

        from espzoo.lora.config import AdapterConfig
        from espzoo.lora.layer import apply_adapters
        from espzoo.models.build import build_model

        torch.manual_seed(0)
        self.name, self.args = name, args
        self.model = build_model(CONFIG, device="cpu")
        self.base_parameters = sum(p.numel() for p in self.model.parameters())
        self.config = AdapterConfig(rank=args.rank, alpha=2.0 * args.rank)
        if name == "lora":
            apply_adapters(self.model, self.config)
        self.model.to(args.device).train()
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.Adam(self.params, lr=1e-4)
        self.times: list[float] = []
        self.peak = 0.0

    def step(self, batch: tuple[Any, ...], timed: bool) -> None:
        import torch

        cuda = self.args.device == "cuda"
        if cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        started = time.perf_counter()
        loss = self.model(*batch)[0]
        loss.backward()
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        if cuda:
            torch.cuda.synchronize()
            self.peak = max(self.peak, float(torch.cuda.max_memory_allocated()))
        if timed:  # the first step warms up (allocations, Adam state)
            self.times.append(time.perf_counter() - started)

    def result(self) -> dict[str, float]:
        import torch

        from espzoo.lora.weights import adapter_state

        state_bytes = sum(v.numel() * v.element_size() for s in self.optimizer.state.values() for v in s.values()
                          if torch.is_tensor(v))
        checkpoint = io.BytesIO()
        torch.save({"model": self.model.state_dict(), "optimizers": [self.optimizer.state_dict()]}, checkpoint)
        result = {
            "parameters": float(sum(p.numel() for p in self.model.parameters())),
            "base_parameters": float(self.base_parameters),
            "trainable": float(sum(p.numel() for p in self.params)),
            "optimizer_state_bytes": float(state_bytes),
            "checkpoint_bytes": float(checkpoint.getbuffer().nbytes),
            "step_s": statistics.median(self.times),
        }
        if self.name == "lora":
            adapter = io.BytesIO()
            torch.save(adapter_state(self.model.state_dict(), self.config), adapter)
            result["adapter_file_bytes"] = float(adapter.getbuffer().nbytes)
        if self.args.device == "cuda":
            result["peak_memory_bytes"] = self.peak
        return result


def measure(args: argparse.Namespace) -> dict[str, dict[str, float]]:
    data = batches(args.steps + 1, args.batch, args.seconds, len(CONFIG["token_list"]), args.device)
    if args.device == "cuda":  # one model on the GPU at a time: each one's peak memory is its own
        results = {}
        for name in ("full", "lora"):
            variant = Variant(name, args)
            for i, batch in enumerate(data):
                variant.step(batch, timed=i > 0)
            results[name] = variant.result()
            del variant
        return results
    variants = [Variant(name, args) for name in ("full", "lora")]
    for i, batch in enumerate(data):
        for variant in variants if i % 2 == 0 else variants[::-1]:
            variant.step(batch, timed=i > 0)
    return {v.name: v.result() for v in variants}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--steps", type=int, default=3, help="timed steps per variant (after one warm-up step)")
    parser.add_argument("--rank", type=int, default=8)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=4.0, help="length of each utterance in the batch")
    args = parser.parse_args(argv)
    import torch

    if args.device == "cuda" and not torch.cuda.is_available():
        sys.exit("--device cuda: no GPU is visible to torch here; run on the CPU (the default).")
    torch.set_num_threads(max(1, torch.get_num_threads()))
    results = measure(args)
    print(f"model: {results['full']['base_parameters'] / 1e6:.1f}M parameters (ESPnet conformer/transformer, "
          f"random weights), batch {args.batch} x {args.seconds:g} s, Adam, {args.steps} timed steps on {args.device}")
    for name, r in results.items():
        line = (f"{name:5s} trainable {r['trainable'] / 1e6:8.2f}M ({r['trainable'] / r['parameters']:6.2%})  "
                f"optimizer state {r['optimizer_state_bytes'] / 2**20:8.1f} MiB  "
                f"checkpoint.pth {r['checkpoint_bytes'] / 2**20:8.1f} MiB  step {r['step_s'] * 1000:8.1f} ms")
        if "adapter_file_bytes" in r:
            line += f"  adapter.pth {r['adapter_file_bytes'] / 2**20:.1f} MiB"
        if "peak_memory_bytes" in r:
            line += f"  peak GPU memory {r['peak_memory_bytes'] / 2**30:.2f} GiB"
        print(line)
    full, lora = results["full"], results["lora"]
    if args.device == "cuda":
        print("GPU figures measured on this run's GPU.")
    else:
        print("GPU figures (peak memory, GPU step time) NOT measured: CPU run; use --device cuda where a GPU is lent.")
    ratios = [f"trainable {lora['trainable'] / full['trainable']:.3f}x",
              f"optimizer state {lora['optimizer_state_bytes'] / full['optimizer_state_bytes']:.3f}x",
              f"checkpoint {lora['checkpoint_bytes'] / full['checkpoint_bytes']:.3f}x",
              f"step time {lora['step_s'] / full['step_s']:.2f}x"]
    if "peak_memory_bytes" in full:
        ratios.append(f"peak memory {lora['peak_memory_bytes'] / full['peak_memory_bytes']:.2f}x")
    print("lora/full: " + ", ".join(ratios))


if __name__ == "__main__":
    main()
