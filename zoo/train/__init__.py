"""Training with ESPnet's own trainer: the options and the ESPnet command line made of them, the child process and
its supervision, OUT (lock, resume, assembly), and the fine-tuning recipe that puts it all together.
"""

from espzoo.utils.lazy import attach, faces

__getattr__, __dir__, __all__ = attach(
    __name__,
    faces(
        options="TrainOptions TrainResult EpochReport",
        driver="run",
        child="warm_start",
        outdir="lock_out",
        recipe="finetune FinetuneRequest prepare_finetune",
    ),
)
