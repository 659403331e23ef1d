"""TransformerLens-style sampling inside transformers ``generate``, with one seed per row.

The semantic hub steering experiment (paper-protocols.md A16) samples with TransformerLens 1.17
``HookedTransformer.generate(do_sample=True, temperature=1.0, top_p=0.3, freq_penalty=1.0)``
after ``torch.manual_seed(seed)`` before every prompt (``lib/intervention_utils_actadd.py:
40-49`` of ZhaofengWu/semantic-hub). transformers' ``generate`` has no OpenAI-style frequency
penalty (its ``repetition_penalty`` divides logits instead), and its processors run in another
order, so :class:`TLSampler` is one logits processor that does what ``transformer_lens.utils.
sample_logits`` does, in its order:

1. ``logits / temperature``;
2. frequency penalty: ``logits[v] -= freq_penalty * count(v)``, ``count`` over the whole
   sequence so far (prompt with BOS, and the generated tokens), as ``utils.apply_freq_penalty``;
3. top-p, TransformerLens' rule: sort descending, drop tokens whose cumulative probability
   *before* them already exceeds ``top_p`` (the first token is always kept);
4. draw one token from the remaining softmax (over the nucleus' tokens in id order) with the
   row's own ``torch.Generator`` (seeded with the row's seed at the first step), and return logits that are ``0`` at the drawn token
   and ``-inf`` elsewhere, so ``generate``'s greedy argmax picks it.

Because every row has its own generator, a prompt's continuation depends on its seed only, not
on the batch it sits in (the released code's "seed reset per prompt"); the draws are not
bit-identical to TransformerLens' (another RNG stream). Left padding (the tokenizer's pad id)
is not counted by the penalty. Use with ``do_sample=False``.
"""

from __future__ import annotations

from typing import Any


class TLSampler:
    """Logits processor: temperature, frequency penalty, top-p and a per-row seeded draw (module
    docstring).

    Args:
        seeds: one seed per batch row.
        temperature: > 0.
        top_p: in (0, 1].
        freq_penalty: >= 0 (logit units per previous occurrence).
        pad_id: token id not counted by the penalty (left padding), or ``None``.

    Called as ``processor(input_ids [batch, seq], scores [batch, vocab]) -> [batch, vocab]``.
    """

    def __init__(self, seeds: list[int], temperature: float = 1.0, top_p: float = 1.0, freq_penalty: float = 0.0, pad_id: int | None = None):
        self.seeds = [int(s) for s in seeds]
        self.temperature = float(temperature)
        self.top_p = float(top_p)
        self.freq_penalty = float(freq_penalty)
        self.pad_id = pad_id
        self.generators: list[Any] | None = None

    def warp(self, input_ids: Any, scores: Any) -> Any:
        """Steps 1-3 (no draw): the filtered logits ``[batch, vocab]`` float32, ``-inf`` outside
        the nucleus."""
        import torch

        logits = scores.float() / self.temperature
        if self.freq_penalty > 0:
            counts = torch.zeros_like(logits)
            counts.scatter_add_(1, input_ids.to(logits.device), torch.ones_like(input_ids, dtype=logits.dtype, device=logits.device))
            if self.pad_id is not None and 0 <= self.pad_id < logits.shape[1]:
                counts[:, self.pad_id] = 0
            logits = logits - self.freq_penalty * counts
        if self.top_p < 1.0:
            logits = self._top_p(logits)
        return logits

    def _top_p(self, logits: Any) -> Any:
        """TransformerLens' top-p mask (``-inf`` outside the nucleus). The nucleus is searched
        among the 512 largest logits (``topk``) and by a full sort only where those do not reach
        ``top_p``: the kept set is the same, without sorting 262k logits per step."""
        import torch

        k = min(512, logits.shape[-1])
        top_logits, top_indices = torch.topk(logits, k, dim=-1, sorted=True)
        probs = (top_logits - torch.logsumexp(logits, dim=-1, keepdim=True)).exp()
        cumulative = probs.cumsum(dim=-1)
        if not bool((cumulative[:, -1] > self.top_p).all()):
            top_logits, top_indices = torch.sort(logits, descending=True)
            cumulative = top_logits.softmax(dim=-1).cumsum(dim=-1)
        remove = cumulative > self.top_p
        remove[..., 1:] = remove[..., :-1].clone()
        remove[..., 0] = False
        keep = torch.zeros_like(logits, dtype=torch.bool)
        keep.scatter_(-1, top_indices, ~remove)
        return logits.masked_fill(~keep, -float("inf"))

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        import torch

        logits = self.warp(input_ids, scores)
        if self.generators is None:
            self.generators = []
            for seed in self.seeds:
                g = torch.Generator(device=logits.device)
                g.manual_seed(seed)
                self.generators.append(g)
        out = torch.full_like(scores, -float("inf"))
        for row in range(logits.shape[0]):
            candidates = torch.nonzero(torch.isfinite(logits[row])).squeeze(-1)  # the nucleus, in id order
            probs = logits[row, candidates].softmax(dim=-1)
            token = candidates[torch.multinomial(probs, 1, generator=self.generators[row])]
            out[row, token] = 0.0
        return out
