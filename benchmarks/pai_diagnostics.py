"""What a prune-at-init mask does to the network before training starts.

The accuracy table has GraSP masks on the small CNN (no normalization) that
never train (loss stays at ln 10), while random, SNIP and SynFlow masks of
the same per-layer budgets do. This script looks at the masks themselves,
at initialization, with the accuracy harness's masks (`accuracy.make_pai_mask`:
ERK per-layer budgets, SNIP on 256 training images, GraSP on 10 per class,
SynFlow 100 iterations; GraSP with the library default, temperature 200 on
the logits as in the authors' code), plus GraSP at temperature 1 (the
library's earlier default, with which the table's GraSP rows were first
run: `benchmarks/results/archive/accuracy_grasp_t1.jsonl`):

- the share of *negative* weights among the kept entries of each layer
  (a random mask keeps ~50%);
- the dormant-channel fraction at init (`keras_sparse.diagnostics`);
- the standard deviation of the initial logits on a fixed batch of 512
  training images (how far the untrained network's outputs already are
  from uniform);
- the share of each layer's output units (Dense units, conv output
  channels, the last kernel axis) left with no kept incoming weight: a
  logit unit in that state is a constant, its class can only be predicted
  through the bias.

    python -m benchmarks.pai_diagnostics                  # both models, seeds 0-2, ERK
    python -m benchmarks.pai_diagnostics --models small_cnn --seeds 0
    python -m benchmarks.pai_diagnostics --models resnet20 --distribution uniform

Writes benchmarks/results/pai_diagnostics.{json,md} (ERK) or
pai_diagnostics_uniform.{json,md}. Nothing is trained.
"""

from __future__ import annotations

import argparse
import os
import sys
import warnings
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
warnings.filterwarnings("ignore", message="The structure of `inputs` doesn't match")

import numpy as np  # noqa: E402

from benchmarks import accuracy, harness  # noqa: E402
from benchmarks._common import RESULTS_DIR, machine_info, machine_markdown, markdown_table, write_json  # noqa: E402

SPARSITY = 0.9
DISTRIBUTION = "erk"
MASKS = ("random", "snip", "grasp", "grasp_t1", "synflow")
LABELS = {"random": "random", "snip": "SNIP", "grasp": "GraSP (T=200 on logits, default)",
          "grasp_t1": "GraSP (T=1)", "synflow": "SynFlow"}


def make_mask(name: str, model, data, seed: int, distribution: str = DISTRIBUTION):
    """The sparse model of mask `name` (the accuracy harness's, or GraSP at T=1)."""
    from keras_sparse import pruning

    if name != "grasp_t1":
        return accuracy.make_pai_mask(name, model, SPARSITY, distribution, data, seed)
    budgets = harness.layer_budgets(model, SPARSITY, distribution, seed)
    return pruning.prune_at_init(model, "grasp", SPARSITY, scope="layer", distribution=budgets,
                                 data=accuracy._grasp_batch(data, seed), loss=accuracy._loss(),
                                 temperature=1.0)


def negative_share(sparse) -> dict[str, float]:
    """`{layer/weight: share of negative values among kept entries}`."""
    from keras_sparse.pruning.core import masked_weight_table

    out = {}
    for key, (_, weight, mask) in masked_weight_table(sparse).items():
        kept = np.asarray(weight.numpy())[np.asarray(mask.numpy()) > 0]
        out[key] = float(np.mean(kept < 0)) if kept.size else float("nan")
    return out


def unconnected_share(sparse) -> dict[str, float]:
    """`{layer/weight: share of output units (last kernel axis) with no kept weight}`."""
    from keras_sparse.pruning.core import get_masks

    out = {}
    for key, mask in get_masks(sparse).items():
        per_unit = np.asarray(mask).reshape(-1, np.shape(mask)[-1]).sum(axis=0)
        out[key] = float(np.mean(per_unit == 0))
    return out


def measure(model_name: str, mask: str, seed: int, data, probe,
            distribution: str = DISTRIBUTION) -> dict[str, Any]:
    import keras

    from keras_sparse import diagnostics

    keras.utils.clear_session()
    keras.utils.set_random_seed(seed)
    sparse = make_mask(mask, accuracy.build_model(model_name, seed), data, seed, distribution)
    logits = keras.ops.convert_to_numpy(sparse(probe, training=False))
    return {"model": model_name, "mask": mask, "seed": seed, "distribution": distribution,
            "negative_share": negative_share(sparse),
            "unconnected_share": unconnected_share(sparse),
            "dormant_at_init": diagnostics.dormant_fraction(sparse, probe)["all"],
            "logit_std_at_init": float(logits.std())}


def render(records: list[dict[str, Any]], machine: dict[str, Any]) -> str:
    distribution = records[0].get("distribution", DISTRIBUTION) if records else DISTRIBUTION
    parts = ["## Prune-at-init masks at initialization (nothing trained)",
             machine_markdown(machine),
             f"- {SPARSITY:.0%} sparsity, {distribution.upper()} per-layer budgets, masks as in the "
             "accuracy harness (`accuracy.make_pai_mask`; GraSP: temperature 200 on the logits, "
             "the authors' code), and GraSP at temperature 1. Mean over seeds "
             f"{sorted({r['seed'] for r in records})}.",
             "- `neg %`: share of negative weights among the kept entries of each layer (a random "
             "mask keeps about 50%). `dormant`: ReLU channels zero on >= 99% of 512 fixed training "
             "images. `logit std`: standard deviation of the initial logits on them. "
             "`unconnected`: share of output units with no kept incoming weight, for the logits "
             "layer and the worst other layer."]
    for model in sorted({r["model"] for r in records}):
        rows = [r for r in records if r["model"] == model]
        layers = list(rows[0]["negative_share"])
        summarize = len(layers) > 8  # ResNet-20: the range over its 22 layers
        body = []
        for mask in MASKS:
            sel = [r for r in rows if r["mask"] == mask]
            if not sel:
                continue
            neg = [100 * np.mean([r["negative_share"][k] for r in sel]) for k in layers]
            cells = [f"{min(neg):.0f}-{max(neg):.0f}"] if summarize else [f"{v:.0f}" for v in neg]
            cut = {k: 100 * np.mean([r["unconnected_share"][k] for r in sel if "unconnected_share" in r] or [np.nan])
                   for k in layers}
            worst = max((k for k in layers if k != layers[-1]), key=lambda k: cut[k])
            body.append([LABELS[mask]] + cells + [
                f"{100 * np.mean([r['dormant_at_init'] for r in sel]):.1f}%",
                f"{np.mean([r['logit_std_at_init'] for r in sel]):.3g}",
                f"{cut[layers[-1]]:.0f}%", f"{cut[worst]:.0f}% ({worst.split('/')[0]})"])
        heads = (["mask", "neg % of kept (range over layers)"] if summarize else
                 ["mask"] + [f"neg % {k.split('/')[0]}" for k in layers]) + [
                     "dormant", "logit std", f"unconnected {layers[-1].split('/')[0]}",
                     "unconnected, worst other layer"]
        parts.append(f"#### {model}\n\n" + markdown_table(heads, body))
    return "\n\n".join(parts) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", nargs="+", default=list(accuracy.MODELS), choices=accuracy.MODELS)
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--masks", nargs="+", default=list(MASKS), choices=MASKS)
    p.add_argument("--distribution", default=DISTRIBUTION, choices=accuracy.DISTRIBUTIONS,
                   help="per-layer budgets (default erk; uniform writes pai_diagnostics_uniform.*)")
    p.add_argument("--out-dir", type=Path, default=RESULTS_DIR)
    args = p.parse_args(argv)
    from tqdm.auto import tqdm

    data = accuracy.load_data(accuracy.TABLE_TRAIN_SIZE)
    probe = harness.probe_batch(data)
    records = []
    items = [(m, k, s) for m in args.models for k in args.masks for s in args.seeds]
    for model, mask, seed in tqdm(items, unit="mask"):
        records.append(measure(model, mask, seed, data, probe, args.distribution))
    machine = machine_info()
    stem = "pai_diagnostics" + ("" if args.distribution == DISTRIBUTION else f"_{args.distribution}")
    write_json(args.out_dir / f"{stem}.json", {"machine": machine, "sparsity": SPARSITY,
                                               "distribution": args.distribution,
                                               "records": records})
    md = render(records, machine)
    (args.out_dir / f"{stem}.md").write_text(md, encoding="utf-8")
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
