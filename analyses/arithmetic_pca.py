"""``hub analyze arithmetic-pca``: the paper's arithmetic PCA (Wu et al. 2024; ``paper-protocols.md`` §A6).

The paper's ``arithmetic/pca.py:24-105``: for the 846 ``+`` items of its arithmetic data the prompt
is ``f"{result}={other}+"`` (``8=5+``); the hidden states at the last token, layers 0..L (the
embeddings included, layer ``L`` after the final norm as transformers' ``hidden_states[L]``),
form one ``(L+1, d)`` matrix per example, which is standardised on its own
(``StandardScaler().fit_transform``: each hidden dimension to mean 0, variance 1 across that
example's L+1 layers). A 2-component PCA is fit on the **20 unembedding rows** of ``"0".."9"`` (no
space) and ``" zero".." nine"`` (with a space) only, then every standardised trajectory is
projected with it. The plot draws 100 random examples (``random.seed(0)``) as polylines coloured
by layer, with the 20 anchors as labels.

Traces: the residual stream at the last token of every prompt, layers 0..L.
Reduces (inside the trace): nothing beyond that selection: ``[layers+1, rows, d_model]``
(float32; layer ``L`` through the final norm with ``final_norm="last"``, the default), and the 20
anchor rows of ``W_U`` ``[20, d_model]``.
Computes (in :meth:`ArithmeticPCA.rows`, per batch, plain numpy + scikit-learn as the paper):
the per-example standardisation, the PCA fit on the anchors (the same in every batch) and the
projection. Stores: ``trajectories.parquet`` (prompt, other, target, result, layer, pc1, pc2) and
``anchors.parquet`` (batch, label, token, kind, pc1, pc2; the anchors' own projection, one copy
per batch); ``pca_layers.parquet`` (per layer: mean position, and our own summary, the share of
examples nearer the missing operand's word anchor than its digit anchor, 95% CI); the runner adds ``prompts.parquet`` and ``manifest.json`` (with the PCA's explained
variance ratio of the anchors). Draws: the trajectories plot.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

from analyses.arithmetic_lens import paper_token_id
from hubclient.analysis import Analysis, Batch
from hubclient.errors import HubError
from hubclient.inputs.tasks import arithmetic
from hubclient.science.lens import norm_mode

#: Examples drawn in the plot and the seed of the draw (``pca.py``: ``random.seed(0)``, 100).
PLOT_EXAMPLES, PLOT_SEED = 100, 0


def anchor_words() -> list[tuple[str, bool]]:
    """The 20 anchors in the paper's order: ``("0", False), ("zero", True), ("1", False), …``
    (text, with a leading space?) (``pca.py:46-60``)."""
    out = []
    for value in range(10):
        out.append((str(value), False))
        out.append((arithmetic.paper_number_words(value), True))
    return out


def standardize(states: Any) -> Any:
    """``StandardScaler().fit_transform`` of one example's ``[L+1, d]`` states: each column
    minus its mean over the rows, divided by its population standard deviation (columns with
    zero variance are only centred, as scikit-learn does). Float64 ``[L+1, d]``."""
    from sklearn.preprocessing import StandardScaler

    return StandardScaler().fit_transform(states.astype("float64"))


def fit_anchor_pca(anchors: Any) -> Any:
    """``sklearn.decomposition.PCA(n_components=2)`` fit on the ``[20, d]`` anchor rows
    (float64), as ``pca.py:62-64``."""
    from sklearn.decomposition import PCA

    return PCA(n_components=2).fit(anchors.astype("float64"))


@dataclass
class ArithmeticPCAOptions:
    """Options of the arithmetic PCA (recorded in the manifest).

    Attributes:
        final_norm: ``"last"`` (default: layer L after the final norm, the paper's
            ``hidden_states``), ``False`` (every layer raw) or ``True`` (every layer normed).
        n: ``None`` (all 846 ``+`` items, the paper) or a seeded subset.
        data_seed: seed of that subset.
    """

    final_norm: "bool | str" = "last"
    n: int | None = None
    data_seed: int = 0


class ArithmeticPCA(Analysis):
    """The paper's arithmetic PCA (see the module docstring).

    Args:
        options: :class:`ArithmeticPCAOptions`.
        items: the ``+`` items; prompt ``i`` is ``items[i].lens_prompt``.

    Raises:
        HubError: an item that is not ``+``, fewer than 2 items, an unknown ``final_norm``.
    """

    name = "arithmetic-pca"
    tables = {"trajectories": ["prompt", "layer"], "anchors": ["batch", "label"]}

    def __init__(self, options: ArithmeticPCAOptions, items: list[arithmetic.PaperItem]):
        options.final_norm = norm_mode(options.final_norm)
        if len(items) < 2:
            raise HubError("the arithmetic PCA needs at least 2 items")
        for item in items:
            if item.op != "+":
                raise HubError(f"the paper's PCA uses the '+' items only, got {item.lens_prompt!r}")
        super().__init__(options)
        self.items = list(items)
        self.anchor_ids: list[int] = []
        self.anchor_labels: list[str] = []

    def prepare(self, model: Any, prompts: list[str], tokens: list[list[int]]) -> None:
        """Resolve the 20 anchor token ids (``first_token_id_for_string`` as the paper).

        Raises:
            HubError: a digit or number word that is not in the vocabulary.
        """
        self.anchor_ids, self.anchor_labels = [], []
        for text, space in anchor_words():
            token, _ = paper_token_id(model.tokenizer, text, space)
            self.anchor_ids.append(token)
            self.anchor_labels.append(("␣" if space else "") + text)

    def describe_run(self) -> dict[str, Any]:
        """The manifest's ``anchor_ids`` (label -> token id)."""
        return {"anchor_ids": dict(zip(self.anchor_labels, self.anchor_ids))}

    # ------------------------------------------------------------------ inside the trace
    def trace(self, model: Any, batch: Batch) -> dict[str, Any]:
        """``{"states": [layers+1, rows, d_model], "anchors": [20, d_model]}`` float32: the last
        token's residual stream at every layer (layer L normed with ``final_norm="last"``) and
        the anchors' rows of ``W_U`` (the ``lm_head`` weight)."""
        import torch

        rows_b = batch.row_batch.to(model.device)
        rows_p = batch.row_position.to(model.device)
        final_norm = self.options.final_norm
        top = model.n_layers
        states = []
        for layer, hidden in model.hidden_states():
            picked = hidden[rows_b, rows_p]
            if final_norm is True or (final_norm == "last" and layer == top):
                picked = model.final_norm(picked)
            states.append(picked.float())
        weight = model.lm_head.weight
        ids = torch.tensor(self.anchor_ids, dtype=torch.long).to(weight.device)
        return {"states": torch.stack(states), "anchors": weight[ids].float()}

    # ------------------------------------------------------------------ rows
    def rows(self, model: Any, batch: Batch, saved: dict[str, Any]) -> dict[str, Any]:
        """Standardise each example, project it with the PCA fit on the anchors."""
        import numpy as np
        import polars as pl

        states = saved["states"].double().numpy()  # [layers, rows, d]
        anchors = saved["anchors"].double().numpy()  # [20, d]
        pca = fit_anchor_pca(anchors)
        n_layers = states.shape[0]
        cols: dict[str, list[Any]] = {k: [] for k in ("prompt", "other", "target", "result", "layer", "pc1", "pc2")}
        for r, prompt in enumerate(batch.prompt_index):
            projected = pca.transform(standardize(states[:, r, :]))  # [layers, 2]
            item = self.items[prompt]
            for layer in range(n_layers):
                cols["prompt"].append(prompt)
                cols["other"].append(item.other)
                cols["target"].append(item.target)
                cols["result"].append(item.result)
                cols["layer"].append(layer)
                cols["pc1"].append(float(projected[layer, 0]))
                cols["pc2"].append(float(projected[layer, 1]))
        own = pca.transform(anchors)
        decode = model.tokenizer.convert_ids_to_tokens
        anchor_rows = pl.DataFrame(
            {
                "batch": np.full(len(self.anchor_ids), batch.index, dtype=np.int32),
                "label": self.anchor_labels,
                "token": [str(t) for t in decode(self.anchor_ids)],
                "kind": ["digit" if label[-1].isdigit() else "word" for label in self.anchor_labels],
                "pc1": own[:, 0],
                "pc2": own[:, 1],
                "explained_1": np.full(len(self.anchor_ids), pca.explained_variance_ratio_[0]),
                "explained_2": np.full(len(self.anchor_ids), pca.explained_variance_ratio_[1]),
            }
        )
        traj = pl.DataFrame(cols, schema={"prompt": pl.Int64, "other": pl.Int32, "target": pl.Int32, "result": pl.Int32, "layer": pl.Int32, "pc1": pl.Float64, "pc2": pl.Float64})
        return {"trajectories": traj, "anchors": anchor_rows}

    def finish(self, run: Any) -> dict[str, Any]:
        """``pca_layers``: per layer, the mean projected position and (our summary, not the
        paper's, which only plots) the share of examples whose projection is nearer (2-D
        Euclidean) to the unembedding of the missing operand as an English word (``␣three``) than
        as a digit (``3``), with a 95% percentile-bootstrap CI over examples (seed 0)."""
        return {"pca_layers": layer_summary(run.table("trajectories"), run.table("anchors"))}

    def summary(self, run: Any) -> str:
        """Explained variance of the anchors' PCA and the mean position per layer band."""
        return summary_lines(run)

    @classmethod
    def plots(cls, run: Any) -> dict[str, Any]:
        """The trajectories of :data:`PLOT_EXAMPLES` random examples (``random.Random(0)``, as the
        paper's ``random.seed(0)``), one segment per layer step coloured by layer (viridis), and
        the 20 anchors as labels (digits and words in two colours)."""
        import altair as alt
        import polars as pl

        traj = run.table("trajectories")
        anchors = run.table("anchors")
        anchors = anchors.filter(pl.col("batch") == anchors["batch"].min())
        prompts = sorted(traj["prompt"].unique().to_list())
        shown = sorted(random.Random(PLOT_SEED).sample(prompts, min(PLOT_EXAMPLES, len(prompts))))
        part = traj.filter(pl.col("prompt").is_in(shown)).sort("prompt", "layer")
        segments = (
            part.with_columns(pc1_next=pl.col("pc1").shift(-1).over("prompt"), pc2_next=pl.col("pc2").shift(-1).over("prompt"))
            .filter(pl.col("pc1_next").is_not_null())
        )
        n_layers = int(traj["layer"].max())
        o = run.manifest["options"]
        model_id = run.manifest["model"]["model_id"]
        ev = anchors.row(0, named=True)
        lines = (
            alt.Chart(segments)
            .mark_rule(opacity=0.25, strokeWidth=1.2)
            .encode(
                x=alt.X("pc1:Q", title=f"PC1 of the 20 anchors ({ev['explained_1']:.0%} of their variance)"),
                y=alt.Y("pc2:Q", title=f"PC2 ({ev['explained_2']:.0%})"),
                x2="pc1_next:Q",
                y2="pc2_next:Q",
                color=alt.Color("layer:Q", scale=alt.Scale(scheme="viridis", domain=[0, n_layers]), title="layer"),
                tooltip=["prompt", "other", "target", "result", "layer"],
            )
        )
        labels = (
            alt.Chart(anchors)
            .mark_text(fontSize=13, fontWeight="bold")
            .encode(
                x="pc1:Q", y="pc2:Q", text="label:N",
                color=alt.value("black"),
                opacity=alt.value(1.0),
                tooltip=["label", "token", "kind"],
            )
        )
        norm = {"last": "layer L after the final norm (paper)", True: "every layer through the final norm", False: "raw residual at every layer"}[o.get("final_norm", "last")]
        title = [f"Arithmetic PCA (paper A6): last token of '8=5+' prompts, layers 0..{n_layers} · {model_id}",
                 f"{len(shown)} of {len(prompts)} examples; each standardised over its layers; PCA fit on the 20 anchors only; {norm}"]
        means = traj.group_by("layer").agg(pl.col("pc1").mean(), pl.col("pc2").mean()).sort("layer")
        path = (
            alt.Chart(means)
            .mark_line(point=True, color="gray", strokeDash=[3, 3])
            .encode(x=alt.X("pc1:Q", title="PC1"), y=alt.Y("pc2:Q", title="PC2"), order="layer:Q", tooltip=["layer", "pc1", "pc2"])
        )
        dots = alt.Chart(means).mark_circle(size=70).encode(
            x="pc1:Q", y="pc2:Q", color=alt.Color("layer:Q", scale=alt.Scale(scheme="viridis", domain=[0, n_layers]), title="layer"), tooltip=["layer", "pc1", "pc2"],
        )
        words = alt.Chart(anchors).mark_text(fontSize=12, dy=-8).encode(
            x="pc1:Q", y="pc2:Q", text="label:N", color=alt.Color("kind:N", scale=alt.Scale(domain=["digit", "word"], range=["#d62728", "#1f77b4"]), title="anchor"),
        )
        zoom_title = [f"The 20 anchors and the mean position per layer (over all {len(prompts)} examples) · {model_id}", "same projection as arithmetic_pca; ␣ = leading space"]
        return {
            "arithmetic_pca": (lines + labels).properties(width=520, height=420, title=title),
            "arithmetic_pca_anchors": (path + dots + words).resolve_scale(color="independent").properties(width=520, height=420, title=zoom_title),
        }


def layer_summary(trajectories: Any, anchors: Any) -> Any:
    """See :meth:`ArithmeticPCA.finish`. Returns polars rows ``layer, pc1, pc2, nearer_word,
    ci_low, ci_high, n`` (``nearer_word`` is a share in [0, 1])."""
    import numpy as np
    import polars as pl

    from hubclient.science.stats import bootstrap_ci

    first = anchors.filter(pl.col("batch") == anchors["batch"].min())
    where = {row["label"]: np.array([row["pc1"], row["pc2"]]) for row in first.iter_rows(named=True)}
    out: dict[str, list[Any]] = {k: [] for k in ("layer", "pc1", "pc2", "nearer_word", "ci_low", "ci_high", "n")}
    for (layer,), rows in trajectories.sort("layer", "prompt").group_by("layer", maintain_order=True):
        xy = rows.select("pc1", "pc2").to_numpy()
        digit = np.stack([where[str(t)] for t in rows["target"].to_list()])
        word = np.stack([where["␣" + arithmetic.paper_number_words(t)] for t in rows["target"].to_list()])
        nearer = (np.linalg.norm(xy - word, axis=1) < np.linalg.norm(xy - digit, axis=1)).astype(np.float64)
        low, high = bootstrap_ci(nearer)
        for key, value in (("layer", int(layer)), ("pc1", float(xy[:, 0].mean())), ("pc2", float(xy[:, 1].mean())), ("nearer_word", float(nearer.mean())),
                           ("ci_low", low), ("ci_high", high), ("n", int(nearer.size))):
            out[key].append(value)
    return pl.DataFrame(out, schema_overrides={"layer": pl.Int32, "n": pl.Int64})


def summary_lines(run: Any) -> str:
    """The anchors' explained variance and the mean (pc1, pc2) at the first, middle and last layer."""
    import polars as pl

    anchors = run.table("anchors")
    ev = anchors.filter(pl.col("batch") == anchors["batch"].min()).row(0, named=True)
    traj = run.table("trajectories")
    top = int(traj["layer"].max())
    means = []
    for layer in (0, top // 2, top):
        rows = traj.filter(pl.col("layer") == layer)
        means.append(f"layer {layer} ({rows['pc1'].mean():.2f}, {rows['pc2'].mean():.2f})")
    line = f"  PCA of the 20 anchors: {ev['explained_1']:.0%} + {ev['explained_2']:.0%} of their variance; mean position {', '.join(means)} (N={traj['prompt'].n_unique()})"
    if (run.path / "pca_layers.parquet").is_file():
        layers = run.table("pca_layers").sort("layer")
        best = layers.row(int(layers["nearer_word"].arg_max()), named=True)
        line += f"\n  nearer the word anchor than the digit anchor of the missing operand: at most {best['nearer_word']:.0%} [{best['ci_low']:.0%}, {best['ci_high']:.0%}] (layer {best['layer']})"
    return line


def items_for(options: ArithmeticPCAOptions) -> list[arithmetic.PaperItem]:
    """The paper's 846 ``+`` items, or a seeded subset of ``options.n``.

    Raises:
        HubError: a bad ``n``.
    """
    return arithmetic.sample_paper_items(arithmetic.paper_items("+"), options.n, options.data_seed)


def run_arithmetic_pca(options: ArithmeticPCAOptions, config: Any, model: Any = None) -> Any:
    """Build the ``+`` prompts, run :class:`ArithmeticPCA`, return the finished run.

    Raises:
        HubError: see :func:`items_for` and :meth:`ArithmeticPCA.prepare`.
    """
    from hubclient.runner import run_analysis

    items = items_for(options)
    analysis = ArithmeticPCA(options, items)
    columns = {"other": [i.other for i in items], "target": [i.target for i in items], "result": [i.result for i in items]}
    return run_analysis(analysis, [i.lens_prompt for i in items], config, model=model, prompt_columns=columns)


ANALYSIS = ArithmeticPCA
