"""A run's facts as MODEL_CARD.md (docs/model_card.md lists the sections).

Pure: no file is read here. Every number is formatted by one of the helpers below, so a test
can format summary.json's values the same way and find them in the card.
"""

from __future__ import annotations

import json
import numbers
from datetime import datetime, timezone
from typing import Any, Sequence

import numpy as np

from ddpcifar.card.facts import RunFacts
from ddpcifar.runs import states

MOST_CONFUSED = 5  # pairs listed
DASH = "—"
ENDED_AS = {states.STOPPED: "stopped", states.FAILED: "failed", states.PRUNED: "was pruned",
            states.FINISHED: "finished"}


def pct(value: Any) -> str:
    """A 0..1 fraction as a percentage with two decimals (CIFAR-10's 10,000 test images: exact)."""
    return f"{value * 100:.2f}%" if _is_number(value) else DASH


def loss(value: Any) -> str:
    return f"{value:.4f}" if _is_number(value) else DASH


def seconds(value: Any) -> str:
    """Seconds as summary.json rounds them (milliseconds)."""
    return f"{value:.3f} s" if _is_number(value) else DASH


def count(value: Any) -> str:
    return f"{int(value):,}" if _is_number(value) else DASH


def epochs(value: Any) -> str:
    """The spec's epoch count, which may be fractional (2.5), without a needless `.0`."""
    return f"{value:g}" if _is_number(value) else DASH


def _is_number(value: Any) -> bool:
    return (isinstance(value, numbers.Real) and not isinstance(value, bool)
            and value == value)  # NaN is not a number to show


def _row(*cells: Any) -> str:
    return "| " + " | ".join(str(c).replace("|", "\\|").replace("\n", " ") for c in cells) + " |"


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[str]:
    return [_row(*header), "|" + "|".join("---" for _ in header) + "|", *(_row(*r) for r in rows)]


def _utc(unix: Any) -> str:
    if not _is_number(unix):
        return DASH
    return datetime.fromtimestamp(float(unix), timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def render(facts: RunFacts, images: dict[str, str]) -> str:
    """The card's markdown; `images` maps chart names to their paths relative to the run."""
    parts = [
        f"# Model card: {facts.name}",
        "",
        "Written by `python -m ddpcifar.card` from the files of this run directory"
        + (f"; its metrics are copied from {facts.final_source}, not recomputed."
           if facts.final else "."),
        "",
        *_ending(facts),
        *_model(facts),
        *_results(facts),
        *_classes(facts),
        *_images(facts, images),
        *_data(facts),
        *_exports(facts),
        *_limitations(facts),
        *_spec(facts),
    ]
    return "\n".join(parts).rstrip() + "\n"


def _ending(facts: RunFacts) -> list[str]:
    state, error = facts.state, facts.status.get("error")
    final = facts.final
    if state == states.FINISHED:
        return []
    why = f": {error}" if error else ""
    if state in states.ENDED:
        last = (f"The metrics below are from its last evaluation (epoch {final.get('epoch')} of "
                f"{facts.status.get('epochs')} planned), not from a finished training."
                if final else "It ended before its first evaluation: there are no metrics.")
        return [f"> **The run {ENDED_AS.get(state, state)}**{why.rstrip('.')}. {last}", ""]
    return [f"> **The run is {state}** (epoch {facts.status.get('epoch')} of "
            f"{facts.status.get('epochs')}): this card is a snapshot, written again when the run "
            "ends.", ""]


def _device(facts: RunFacts) -> str:
    status = facts.status
    if status.get("engine") == "numpy":
        return "cpu (NumPy)"
    device = status.get("device")
    if not isinstance(device, str):
        return "not recorded (status.json predates the device field)"
    name = status.get("device_name")
    backend = status.get("backend")
    return (f"{device}: {name}" if name else device) + (f", {backend} backend" if backend else "")


def _model(facts: RunFacts) -> list[str]:
    status, summary, spec = facts.status, facts.summary or {}, facts.spec or {}
    parameters = summary.get("parameters", status.get("parameters"))
    train = spec.get("train") if isinstance(spec.get("train"), dict) else {}
    epochs_done = summary.get("epochs_done", status.get("epoch"))
    rows = [
        ("model", f"`{status.get('model', '?')}`"),
        ("parameters", count(parameters) if _is_number(parameters) else "not recorded"),
        ("engine", status.get("engine", "?")),
        ("world size", count(status.get("world_size"))),
        ("device", _device(facts)),
        ("epochs", f"{count(epochs_done)} of {epochs(summary.get('epochs', status.get('epochs')))}"
                   + (f" ({count(summary['steps'])} steps)" if _is_number(summary.get("steps"))
                      else "")),
        ("global batch size", count(train.get("global_batch_size"))),
        ("state", facts.state),
        ("started", _utc(status.get("started"))),
        ("last written", _utc(status.get("updated"))),
    ]
    best = summary.get("best") if isinstance(summary.get("best"), dict) else None
    if summary.get("checkpoint"):
        rows.append(("final weights", f"`{summary['checkpoint']}`"))
    if best and best.get("checkpoint"):
        rows.append(("best weights", f"`{best['checkpoint']}` (epoch {best.get('epoch')}, "
                                     f"lowest {_selected_by(best)})"))
    return ["## Model", "", *_table(("", ""), rows), ""]


def _selected_by(best: dict[str, Any]) -> str:
    return "validation loss" if best.get("selected_by") == "val_loss" else "test loss"


def _results(facts: RunFacts) -> list[str]:
    final = facts.final
    summary = facts.summary or {}
    if not final:
        return ["## Results", "", "No evaluation yet.", ""]
    best = summary.get("best") if isinstance(summary.get("best"), dict) else None
    val = facts.val or {}
    header = ["metric", f"final (epoch {final.get('epoch')})"]
    if best:
        header.append(f"best (epoch {best.get('epoch')}, lowest {_selected_by(best)})")
    elif _is_number(facts.status.get("best_top1")):
        header.append("best so far")
        best = {"top1": facts.status["best_top1"]}

    def row(name: str, fmt, final_value: Any, best_value: Any = None) -> list[str]:
        return [name, fmt(final_value), *([fmt(best_value)] if best else [])]

    rows = [row("test top-1", pct, final.get("top1"), best and best.get("top1")),
            row("test top-5", pct, final.get("top5"), best and best.get("top5"))]
    if _is_number(final.get("top1_tta")) or (best and _is_number(best.get("top1_tta"))):
        rows.append(row(f"test top-1 with TTA (level {final.get('tta', best and best.get('tta'))})",
                        pct, final.get("top1_tta"), best and best.get("top1_tta")))
    rows.append(row("test loss", loss, final.get("loss"), best and best.get("loss")))
    if val:
        rows += [row("validation top-1", pct, val.get("top1"), best and best.get("val_top1")),
                 row("validation top-5", pct, val.get("top5"), best and best.get("val_top5")),
                 row("validation loss", loss, val.get("loss"), best and best.get("val_loss"))]
    out = ["## Results", "", *_table(header, rows), ""]
    if _is_number(final.get("count")):
        counts = f"{count(final['count'])} test images"
        if _is_number(val.get("count")):
            counts += f" and {count(val['count'])} validation images"
        out += [f"Evaluated on {counts}.", ""]
    timing = summary.get("timing") if isinstance(summary.get("timing"), dict) else None
    if timing:
        parts = [("whitening", "whitening_s"), ("training", "train_s"),
                 ("final evaluation", "final_eval_s")]
        split = ", ".join(f"{label} {seconds(timing[k])}" for label, k in parts if k in timing)
        rows = [("time to accuracy", f"{seconds(timing.get('time_to_accuracy_s'))} ({split})"),
                ("wall time", seconds(summary.get("wall_time_s"))),
                ("training throughput", f"{summary['images_per_s']:,.0f} images/s"
                 if _is_number(summary.get("images_per_s")) else DASH)]
        out += ["### Time", "", *_table(("", ""), rows), "",
                "Time to accuracy follows airbench: the training steps, the stem whitening (for "
                "a model that has one) and the final evaluation; start-up, data loading and the "
                "other evaluations are excluded.", ""]
    return out


def _classes(facts: RunFacts) -> list[str]:
    final = facts.final or {}
    per_class, confusion = final.get("per_class"), final.get("confusion")
    if not isinstance(per_class, list) or not isinstance(confusion, list):
        return []
    classes = facts.classes
    m = np.asarray(confusion, dtype=np.int64)
    if m.ndim != 2 or m.shape[0] != m.shape[1] or m.shape[0] != len(per_class):
        return []

    def name(i: int) -> str:
        return classes[i] if i < len(classes) else f"class {i}"

    off = m.copy()
    np.fill_diagonal(off, 0)
    rows = []
    for i, acc in enumerate(per_class):
        mistaken = (f"{name(int(off[i].argmax()))} ({count(off[i].max())})" if off[i].max()
                    else DASH)
        rows.append((name(i), pct(acc), f"{count(m[i, i])} / {count(m[i].sum())}", mistaken))
    out = [f"## Per class (test split, epoch {final.get('epoch')})", "",
           *_table(("class", "top-1", "correct / images", "most often predicted instead"), rows),
           ""]
    pairs = sorted(((int(off[i, j]), i, j) for i in range(len(m)) for j in range(len(m))
                    if off[i, j] > 0), key=lambda p: (-p[0], p[1], p[2]))[:MOST_CONFUSED]
    if pairs:
        rows = [(name(i), name(j), count(n), pct(n / m[i].sum())) for n, i, j in pairs]
        out += ["### Most confused pairs", "",
                *_table(("true class", "predicted as", "images", "of the true class"), rows), ""]
    return out


def _images(facts: RunFacts, images: dict[str, str]) -> list[str]:
    out = []
    curves = [f"![{name}]({images[name]})" for name in ("loss", "accuracy") if name in images]
    if curves:
        out += ["## Curves", "", *curves, ""]
    if "confusion" in images:
        out += ["## Confusion matrix", "", f"![confusion]({images['confusion']})", ""]
    if "misclassified" in images and facts.samples is not None:
        shown = min(len(facts.samples.true), 40)
        out += ["## Misclassified test images", "",
                f"The first {shown} of the {len(facts.samples.true)} kept after the evaluation "
                f"of epoch {facts.samples.epoch} (true → predicted, confidence).", "",
                f"![misclassified]({images['misclassified']})", ""]
    for note in facts.notes:
        out += [f"Not shown: {note}.", ""]
    return out


def _data(facts: RunFacts) -> list[str]:
    data, spec = facts.data, facts.spec or {}
    section = spec.get("data") if isinstance(spec.get("data"), dict) else {}
    out = ["## Data", ""]
    if data.meta is None:
        out += [f"> **Data source unknown**: {data.problem}. The source and the checksums of "
                "the data this model was trained on cannot be shown.", ""]
        return out + _subset_lines(section)
    meta = data.meta
    source = meta.get("source") if isinstance(meta.get("source"), dict) else {}
    counts = meta.get("counts") if isinstance(meta.get("counts"), dict) else {}
    verified = "md5 verified" if source.get("md5_verified") else "md5 not verified"
    rows = [("data directory", f"`{data.path}`"),
            ("source", f"{source.get('kind', '?')}: `{source.get('path', '?')}`"),
            ("checks", f"{verified}; {source.get('note', '')}".rstrip("; ")),
            ("images", f"train {count(counts.get('train'))}, test {count(counts.get('test'))}")]
    sha = meta.get("sha256") if isinstance(meta.get("sha256"), dict) else {}
    rows += [(f"sha256 `{name}`", f"`{digest}`") for name, digest in sha.items()]
    out += [*_table(("", ""), rows), "",
            "Checksums as meta.json recorded them when the directory was prepared (the training "
            "run checked them before it started).", ""]
    return out + _subset_lines(section)


def _subset_lines(section: dict[str, Any]) -> list[str]:
    lines = []
    if _is_number(section.get("max_samples")):
        lines.append(f"- Trained and evaluated on a subset: at most {count(section['max_samples'])}"
                     " images per split (`data.max_samples`).")
    if _is_number(section.get("val_size")) and section["val_size"]:
        lines.append(f"- Validation split: {count(section['val_size'])} training images held "
                     f"out, stratified, seed {section.get('val_seed')} (`validation.json`).")
    return [*lines, ""] if lines else []


def _exports(facts: RunFacts) -> list[str]:
    if not facts.exports:
        return []
    rows = []
    for entry in facts.exports:
        parity = entry.get("parity") if isinstance(entry.get("parity"), dict) else {}
        diff = parity.get("max_abs_logit_diff")
        check = (f"{count(parity.get('images'))} images ({parity.get('source', '?')}): "
                 f"max abs logit difference {diff:.2e} (allowed "
                 f"{parity.get('max_abs_diff_allowed')}), top-1 agreement "
                 f"{pct(parity.get('top1_agreement'))} (at least "
                 f"{pct(parity.get('min_top1_agreement'))}), "
                 f"{'passed' if parity.get('passed') else 'FAILED'}"
                 if _is_number(diff) else "not recorded")
        size = f"{count(entry.get('bytes'))} bytes, sha256 `{str(entry.get('sha256'))[:12]}…`"
        rows.append((entry.get("format", "?"), f"`{entry.get('path', '?')}`", size,
                     f"`{entry.get('checkpoint', '?')}`", check, entry.get("time", DASH)))
    return ["## Exports", "", "From `exports.json` (`python -m ddpcifar.export`); each file takes "
            "raw uint8 NHWC images and was checked against PyTorch before it was written.", "",
            *_table(("format", "file", "size", "from", "parity", "written"), rows), ""]


def _limitations(facts: RunFacts) -> list[str]:
    classes = ", ".join(facts.classes) or "the CIFAR-10 classes"
    items = [f"Classifies 32x32 RGB images into the {len(facts.classes) or 10} CIFAR-10 classes "
             f"only ({classes}). Any other image is resized to 32x32 and still gets one of them: "
             "there is no \"none of these\"."]
    source = (facts.data.meta or {}).get("source")
    source = source if isinstance(source, dict) else {}
    if source.get("kind") == "image-folder":
        if facts.data.image_format == "PNG":
            items.append(f"Trained on an image-folder copy of CIFAR-10 (PNG files in "
                         f"`{source.get('path')}`), not the official files: no checksum ties it "
                         "to the official release.")
        else:
            items.append(f"Trained on the JPEG copy: the data came from an image-folder copy "
                         f"(`{source.get('path')}`), not the official files; its pixels carry "
                         "JPEG compression artefacts, so results on the official images may "
                         "differ.")
    elif source.get("kind") == "synthetic":
        items.append("Trained on synthetic images: its accuracy says nothing about CIFAR-10.")
    elif source and not source.get("md5_verified"):
        items.append(f"The source was not verified as the official CIFAR-10 release: "
                     f"{source.get('note') or 'md5 not verified'}.")
    if facts.data.meta is None:
        items.append(f"The training data cannot be checked now: {facts.data.problem}.")
    if facts.state in (states.STOPPED, states.FAILED, states.PRUNED):
        final = facts.final
        when = (f"its last evaluation (epoch {final.get('epoch')})" if final
                else "no evaluation (it ended before the first)")
        items.append(f"The run {ENDED_AS[facts.state]} "
                     f"({facts.status.get('error') or 'no reason recorded'})"
                     f": the metrics are from {when}, not from the end of its planned "
                     f"{facts.status.get('epochs')} epochs.")
    elif facts.state not in states.ENDED:
        items.append(f"The run is {facts.state}: the metrics are a snapshot.")
    if facts.final and _is_number(facts.final.get("count")) and facts.final["count"] < 10000:
        items.append(f"Evaluated on {count(facts.final['count'])} test images, fewer than "
                     "CIFAR-10's 10,000: the accuracies are coarse.")
    return ["## Limitations", "", *(f"- {item}" for item in items), ""]


def _spec(facts: RunFacts) -> list[str]:
    if facts.spec is None:
        return ["## Spec", "", "No spec.json in the run directory.", ""]
    return ["## Spec", "", "<details><summary>spec.json: the resolved spec</summary>", "",
            "```json", json.dumps(facts.spec, indent=2), "```", "", "</details>", ""]
