"""Augmentation for fine-tuning (`--augment`), put together from ESPnet's own parts: speed perturbation of the
training data as asr.sh does it (espzoo.data.augment), ESPnet's SpecAugment (`specaug: specaug` in the training
config) and ESPnet's preprocessor mixing in noise (`noise_scp`).

    --augment none                    nothing (the default, for now: see below)
    --augment speed                   0.9/1.0/1.1 speed perturbation of the training set (asr.sh's default)
    --augment speed=0.95/1.0/1.05     other factors
    --augment specaug                 SpecAugment, when the pretrained config has none, masks sized to the front end
    --augment noise:DIR               noise from the recordings in DIR, mixed in by ESPnet's preprocessor
    --augment all                     speed and specaug
    --augment speed,specaug,noise:DIR several, comma-separated

Nothing is on unless asked: which parts help at convergence is for bench/transfer_quality.py (`--variants`) to say
on a machine that can run it at full size; the defaults move only with its numbers.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from espzoo.errors import AugmentError

PARTS = ("speed", "specaug", "noise")
DEFAULT_SPEEDS = (0.9, 1.0, 1.1)
NOISE_APPLY_PROB = 0.5  # half the utterances get noise: the clean speech stays in the mix
NOISE_DB_RANGE = "10_20"  # SNR in dB, ESPnet's `noise_db_range` (its own default 13_15)


@dataclass(frozen=True)
class AugmentOptions:
    """What `--augment` asked for."""

    speed: tuple[float, ...] = ()  # speed perturbation factors ((): none)
    specaug: bool = False
    noise: str | None = None  # a folder of noise recordings

    @property
    def off(self) -> bool:
        return not (self.speed or self.specaug or self.noise)

    def describe(self) -> str:
        parts = []
        if self.speed:
            parts.append("speed " + "/".join(f"{f:.1f}" if f == round(f, 1) else f"{f:g}" for f in self.speed))
        if self.specaug:
            parts.append("specaug")
        if self.noise:
            parts.append(f"noise from {self.noise}")
        return ", ".join(parts) or "none"


def parse_augment(spec: str | None) -> AugmentOptions:
    """`--augment`'s value as AugmentOptions; AugmentError (one sentence) for anything else."""
    text = (spec or "none").strip()
    if text in ("", "none"):
        return AugmentOptions()
    speed: tuple[float, ...] = ()
    specaug = False
    noise = None
    for item in (p.strip() for p in text.split(",")):
        name, _, value = item.partition(":") if item.startswith("noise") else item.partition("=")
        if item == "all":
            speed, specaug = speed or DEFAULT_SPEEDS, True
        elif name == "speed":
            speed = _factors(value) if value else DEFAULT_SPEEDS
        elif item == "specaug":
            specaug = True
        elif name == "noise" and value:
            noise = value
        elif item == "none":
            raise AugmentError(f"--augment {spec}: none cannot be combined with other parts; give one or the other.")
        else:
            raise AugmentError(
                f"--augment {spec}: {item!r} is not an augmentation; use none, all, speed[=0.9/1.0/1.1], specaug or "
                "noise:DIR, comma-separated."
            )
    return AugmentOptions(speed=speed, specaug=specaug, noise=noise)


def _factors(value: str) -> tuple[float, ...]:
    try:
        factors = tuple(sorted({float(v) for v in value.split("/") if v.strip()}))
    except ValueError:
        raise AugmentError(f"--augment speed={value}: the factors are numbers separated by '/', e.g. "
                           "speed=0.9/1.0/1.1.") from None
    if not factors or any(not 0.5 <= f <= 2.0 for f in factors):
        raise AugmentError(f"--augment speed={value}: each factor must be within 0.5..2.0, e.g. speed=0.9/1.0/1.1.")
    return factors


def check_augment(options: AugmentOptions) -> None:
    """Refuse what cannot work before any data or model work (a missing or empty noise folder)."""
    if options.noise:
        from espzoo.data.augment import noise_files

        noise_files(options.noise)


def specaug_conf(config: dict[str, Any]) -> dict[str, Any] | None:
    """Conservative SpecAugment masks for `config`'s front end (ESPnet's SpecAug arguments), None when the front
    end's feature size is not in the config (an SSL or Whisper front end): then it is left off, and said so.
    Two frequency masks of up to 1/8 of the mel bins (10 of 80; LibriSpeech recipes use 27), two time masks of up
    to 5% of the utterance, ESPnet's default time warp (window 5)."""
    frontend = config.get("frontend") or "default"
    if frontend != "default":
        return None
    n_mels = int((config.get("frontend_conf") or {}).get("n_mels") or 80)
    return {
        "apply_time_warp": True,
        "time_warp_window": 5,
        "time_warp_mode": "bicubic",
        "apply_freq_mask": True,
        "freq_mask_width_range": [0, max(1, n_mels // 8)],
        "num_freq_mask": 2,
        "apply_time_mask": True,
        "time_mask_width_ratio_range": [0.0, 0.05],
        "num_time_mask": 2,
    }


def augment_config(config: dict[str, Any], options: AugmentOptions, noise_scp: Path | None = None
                   ) -> tuple[dict[str, Any], list[str]]:
    """`config` with the augmentation ESPnet applies itself (SpecAug, noise), and what was done, one line each.
    With nothing asked, `config` comes back as it is (the same object)."""
    notes: list[str] = []
    if not (options.specaug or noise_scp):
        return config, notes
    config = copy.deepcopy(config)
    if options.specaug:
        if config.get("specaug"):
            notes.append(f"specaug: the pretrained config's own ({config['specaug']}) kept as it is")
        elif (conf := specaug_conf(config)) is None:
            notes.append(f"specaug left off: the {config.get('frontend')} front end's feature size is not in its "
                         "config (set it with --conf specaug=specaug --conf specaug_conf...)")
        else:
            config["specaug"], config["specaug_conf"] = "specaug", conf
            notes.append(f"specaug: {conf['num_freq_mask']} frequency masks up to {conf['freq_mask_width_range'][1]} "
                         f"bins, {conf['num_time_mask']} time masks up to 5%, time warp 5")
    if noise_scp:
        config.update(noise_scp=str(Path(noise_scp).resolve()), noise_apply_prob=NOISE_APPLY_PROB,
                      noise_db_range=NOISE_DB_RANGE)
        notes.append(f"noise: {noise_scp} mixed into {NOISE_APPLY_PROB:.0%} of the training utterances at "
                     f"{NOISE_DB_RANGE.replace('_', '-')} dB SNR (ESPnet's preprocessor)")
    return config, notes
