"""Pretrained tensors into a new model: the spec grammar, sources, the per-tensor plan (ESPnet's --init_param
semantics), the new vocabulary and its shared rows, and the init checkpoint written from the plan.
"""

from espzoo.utils.lazy import attach, faces

__getattr__, __dir__, __all__ = attach(
    __name__,
    faces(
        spec="TransferSpec parse_spec",
        sources="Source open_source",
        plan="TransferPlan TransferOptions PlanRow plan_transfer make_plan",
        apply="apply_plan TransferResult",
        vocab="Vocabulary build_vocabulary parse_vocab_spec",
    ),
)
