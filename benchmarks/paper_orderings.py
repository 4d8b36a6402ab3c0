"""Which of the papers' accuracy orderings the accuracy table reproduces.

Each claim is a chain of pairwise comparisons "A above B" taken from a
paper, checked on the accuracy table's aggregated rows (`harness.aggregate`)
at the table's sparsities:

- NeurRev (Li et al., ICLR 2024, Table 1): NeurRev >= RigL >= SET > static
  at 95% and 98% (RigL and SET are its baselines; static sparse training
  sits below them in every DST paper).
- GraNet (Liu et al., NeurIPS 2021): GraNet > GMP, with GraNet's
  paper-faithful global pruning and with per-layer (ERK) pruning.
- ToST (Jaiswal et al., "Training Your Sparse Neural Network Better with
  Any Mask", ICML 2022): every prune-at-init mask (SNIP, GraSP, SynFlow,
  random) and the lottery ticket train better with ToST.

A comparison's verdict uses the seeds' spread: with d = mean(A) - mean(B)
and se = sqrt(sd_A^2 / n_A + sd_B^2 / n_B) (the standard error of the
difference of two independent means), A is "above" when d > 2 se, "below"
when d < -2 se, and "within noise" otherwise. With 3 seeds 2 se is a
lenient threshold (a t-test would ask for roughly 2.8-4.3 se), so an
"above" is the weakest evidence worth stating, not a significance test.
Comparisons with fewer than 2 seeds on either side get "needs 2+ seeds".
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

NOISE_SE = 2.0
"""A difference counts as resolved beyond `NOISE_SE` standard errors."""


@dataclass(frozen=True)
class Claim:
    """A paper's ordering: `chain[0] > chain[1] > ...` on one model and column."""

    name: str
    source: str
    chain: tuple[str, ...]
    model: str
    sparsities: tuple[float, ...]
    distributions: tuple[str, ...]  # one per chain member, or one for all

    def distribution_of(self, i: int) -> str:
        return self.distributions[i] if len(self.distributions) > 1 else self.distributions[0]


def _tost_claims(model: str, sparsities: tuple[float, ...]) -> list[Claim]:
    """ToST > no ToST for every prune-at-init mask (ERK budgets) and for LTH (global)."""
    pairs = (("SNIP", "snip", "snip_tost"), ("GraSP", "grasp", "grasp_tost"),
             ("SynFlow", "synflow", "synflow_tost"), ("random", "random_pai", "random_tost"))
    out = [Claim(f"{label} + ToST > {label}", "ToST", (tost, plain), model, sparsities, ("erk",))
           for label, plain, tost in pairs]
    out.append(Claim("LTH + ToST > LTH", "ToST", ("lth_tost", "lth"), model, sparsities,
                     ("global",)))
    return out


CLAIMS: tuple[Claim, ...] = (
    Claim("NeurRev >= RigL >= SET > static", "NeurRev", ("neurrev", "rigl", "set", "static"),
          "small_cnn", (0.95, 0.98), ("erk",)),
    Claim("GraNet (global) > GMP", "GraNet", ("granet_global", "gmp"), "small_cnn",
          (0.9, 0.95, 0.98), ("global", "erk")),
    Claim("GraNet (per-layer ERK) > GMP", "GraNet", ("granet", "gmp"), "small_cnn",
          (0.9, 0.95, 0.98), ("erk",)),
    *_tost_claims("small_cnn", (0.95, 0.98)),
    Claim("NeurRev >= RigL >= SET > static", "NeurRev", ("neurrev", "rigl", "set", "static"),
          "resnet20", (0.95,), ("erk",)),
    Claim("GraNet (per-layer ERK) > GMP", "GraNet", ("granet", "gmp"), "resnet20", (0.95,),
          ("erk",)),
)


def verdict(a: Mapping[str, Any], b: Mapping[str, Any], noise_se: float = NOISE_SE) -> dict[str, Any]:
    """Compares two aggregated rows: the difference in points, its se, and a verdict."""
    d = 100 * (a["acc_mean"] - b["acc_mean"])
    if min(a["n"], b["n"]) < 2:
        return {"diff": d, "se": None, "verdict": "needs 2+ seeds"}
    se = 100 * math.sqrt(a["acc_std"] ** 2 / a["n"] + b["acc_std"] ** 2 / b["n"])
    if d > noise_se * se:
        word = "above"
    elif d < -noise_se * se:
        word = "below"
    else:
        word = "within noise"
    return {"diff": d, "se": se, "verdict": word}


def evaluate(rows: Sequence[Mapping[str, Any]], claims: Sequence[Claim] = CLAIMS
             ) -> list[dict[str, Any]]:
    """Every adjacent pair of every claim at every sparsity that has both rows."""
    index = {(r["method"], r["model"], float(r["sparsity"]), r["distribution"]): r
             for r in rows if r.get("n")}
    out = []
    for claim in claims:
        for s in claim.sparsities:
            for i in range(len(claim.chain) - 1):
                a = index.get((claim.chain[i], claim.model, s, claim.distribution_of(i)))
                b = index.get((claim.chain[i + 1], claim.model, s, claim.distribution_of(i + 1)))
                if a is None or b is None:
                    continue
                out.append({"claim": claim.name, "source": claim.source, "model": claim.model,
                            "sparsity": s, "higher": claim.chain[i], "lower": claim.chain[i + 1],
                            "higher_acc": a["acc_mean"], "higher_n": a["n"],
                            "lower_acc": b["acc_mean"], "lower_n": b["n"], **verdict(a, b)})
    return out


def summary(results: Sequence[Mapping[str, Any]]) -> list[str]:
    """One line per (claim, model): how many of its comparisons came out above."""
    lines = []
    groups: dict[tuple[str, str], list[Mapping[str, Any]]] = {}
    for r in results:
        groups.setdefault((r["claim"], r["model"]), []).append(r)
    for (claim, model), rs in groups.items():
        counts = {w: sum(r["verdict"] == w for r in rs)
                  for w in ("above", "within noise", "below", "needs 2+ seeds")}
        parts = [f"{n} {w}" for w, n in counts.items() if n]
        lines.append(f"{claim} ({model}): of {len(rs)} comparison(s), {', '.join(parts)}.")
    return lines


def render(results: Sequence[Mapping[str, Any]], labels: Mapping[str, str] | None = None) -> str:
    """The markdown section: a summary per claim, then every comparison."""
    from benchmarks._common import markdown_table

    if not results:
        return "No claim has both of its rows yet."
    labels = labels or {}

    def cell(method, acc, n):
        return f"{labels.get(method, method)}: {100 * acc:.2f}% (n={n})"

    body = [[r["claim"], r["model"], f"{r['sparsity']:.0%}",
             cell(r["higher"], r["higher_acc"], r["higher_n"]),
             cell(r["lower"], r["lower_acc"], r["lower_n"]),
             f"{r['diff']:+.2f}", "-" if r["se"] is None else f"{r['se']:.2f}", r["verdict"]]
            for r in results]
    head = ["claim", "model", "sparsity", "higher in the paper", "lower in the paper",
            "difference (points)", "se (points)", "verdict"]
    return "\n\n".join(["\n".join(f"- {line}" for line in summary(results)),
                        markdown_table(head, body)])
