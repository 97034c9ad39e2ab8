"""Load a model with ESPnet's own Speech2Text, check its tensors strictly, decode: in whichever venv runs it.

    OTHER/bin/python tests/espnet_load.py --config C --model M [--cwd DIR] [WAV ...]

Prints one JSON line: {"espnet": release, "missing": [...], "unexpected": [...], "texts": [...]}. `missing` and
`unexpected` are what `load_state_dict(strict=True)` would refuse (ESPnet itself loads checkpoints non-strictly and
says nothing: a tensor under a name this release does not know stays at random). The cross-generation tests run it
with the other ESPnet generation's Python (tests/test_generations.py), so it imports nothing of espzoo's but the
offline NLTK setup ESPnet 202511's import chain needs.
"""

from __future__ import annotations

import argparse
import json
import os
import sys


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--config", required=True)
    parser.add_argument("--model", required=True)
    parser.add_argument("--cwd", help="resolve the config's relative paths from here (an exported repo's root)")
    parser.add_argument("wavs", nargs="*")
    args = parser.parse_args()
    wavs = [os.path.abspath(w) for w in args.wavs]
    if args.cwd:
        os.chdir(args.cwd)

    from espzoo.models.espnet_env import import_asr_task  # g2p_en's import-time download, pointed at placeholders

    import_asr_task()
    import espnet
    import soundfile
    import torch
    from espnet2.bin.asr_inference import Speech2Text

    speech2text = Speech2Text(
        asr_train_config=args.config, asr_model_file=args.model, device="cpu", beam_size=2, ctc_weight=0.3, nbest=1
    )
    state = torch.load(args.model, map_location="cpu", weights_only=True)
    loaded = speech2text.asr_model.load_state_dict(state, strict=False)
    texts = []
    for wav in wavs:
        audio, _ = soundfile.read(wav, dtype="float32")
        texts.append(speech2text(torch.from_numpy(audio))[0][0])
    json.dump(
        {"espnet": espnet.__version__, "missing": list(loaded.missing_keys),
         "unexpected": list(loaded.unexpected_keys), "texts": texts},
        sys.stdout,
    )
    print()


if __name__ == "__main__":
    main()
