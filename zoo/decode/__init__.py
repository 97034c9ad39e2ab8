"""Using a model: ESPnet's Speech2Text over an experiment, an export or a repo; decoding many utterances in
batches and workers; WER/CER as ESPnet scores them, normalized scores with intervals; reports and comparisons.

    from espzoo.decode import compare, error_rates, evaluate, transcribe

    error_rates(["the cat sat"], ["the cat sat down"]).wer.rate   # 1 insertion / 3 words = 0.333...
    report = evaluate("exp/bn_ft", "data/test")                   # an experiment dir, a pulled repo or a repo id
    print(report.wer.rate, report.cer.rate, report.utterances)
    transcribe("exp/bn_ft", ["a.wav", "b.flac"])                  # one string per file
    report.normalized.wer.rate, report.ci95["wer"]                # normalized WER (espzoo.decode.scores), 95% interval
    compare(before_report, report).to_dict()["wer"]               # {a, b, difference, ci95}: paired bootstrap
"""

from espzoo.utils.lazy import attach, faces

__getattr__, __dir__, __all__ = attach(
    __name__,
    faces(
        recognizer="DecodeOptions Recognizer load_recognizer locate_model",
        runner="transcribe decode",
        scoring="error_rates Score ErrorRates",
        report="evaluate EvalReport compare load_result before_after",
    ),
)
