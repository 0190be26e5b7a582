"""Inference outside training: the shared parts of `python -m ddpcifar.predict` and `export`.

    checkpoints.py  a checkpoint of either engine as a `Classifier` (uint8 RGB in, logits out)
    inputs.py       image files, folders and prepared splits as batches of 32x32 uint8 images
    report.py       predictions as a rich table, JSON or CSV
    graph.py        the exportable module: raw uint8 NHWC images, normalisation inside
    formats.py      writing and loading ONNX, TorchScript and torch.export files
    parity.py       exported vs eager logits, and the tolerance an export must meet
    export_log.py   `exports.json` in a run directory
    output.py       output paths checked before the work, written atomically
"""
