"""What every encoder of the task benchmark goes through, the same for all: self-pre-training, then fine-tuning with
small heads on ``last_hidden_state`` (:mod:`task_encoders` gives them one call).

* Pre-training: the learned probe's identifier-copy masked LM (:mod:`mlm_probe`): identifier pieces that recur in the
  sequence are masked, a tied decoder predicts them. Every encoder gets the same data, steps, optimiser and seed.
* Variable misuse (GREAT's two pointers): a location pointer over ``<s>`` (no bug) and the variable tokens, and a repair
  pointer over the variable tokens, both one linear score per token. The encoder has to carry the evidence to the
  tokens: a pointer head sees one token at a time.
* Name completion: no fine-tuning; the pre-trained masked-LM head completes a name whose first piece is visible.
* Code search: a bi-encoder (mean pooling), in-batch softmax; MRR over the held-out pool.

Batches are right-padded to whole blocks; each token's type is its left neighbour's id (the probe's recipe).
"""

from __future__ import annotations

import random
from collections.abc import Callable
from functools import partial

import torch
import torch.nn.functional as F
from torch import nn

from task_data import BLOCK, CompletionSite, MisuseRow, SearchRow, Sequence, TaskData, load_tokenizer
from training_loop import train_loop


def neighbour_types(input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """``[B, L]``: each token's type is the id of the token before it (0 for ``<s>`` and padding)."""
    types = torch.zeros_like(input_ids)
    types[:, 1:] = input_ids[:, :-1] * attention_mask[:, 1:]
    return types


def pad_batch(sequences: list[Sequence], pad_id: int, multiple: int = BLOCK) -> dict[str, torch.Tensor]:
    """``input_ids``, ``attention_mask``, ``token_type_ids`` (neighbour types), ``ast_links`` of right-padded
    sequences (length rounded up to ``multiple``)."""
    length = -(-max(len(s.input_ids) for s in sequences) // multiple) * multiple
    relations = sequences[0].ast_links.shape[1]
    input_ids = torch.full((len(sequences), length), pad_id, dtype=torch.long)
    attention_mask = torch.zeros(len(sequences), length, dtype=torch.long)
    ast_links = torch.full((len(sequences), length, relations), -1, dtype=torch.long)
    for row, sequence in enumerate(sequences):
        size = len(sequence.input_ids)
        input_ids[row, :size] = sequence.input_ids
        attention_mask[row, :size] = 1
        ast_links[row, :size] = sequence.ast_links.long()
    return dict(input_ids=input_ids, attention_mask=attention_mask,
                token_type_ids=neighbour_types(input_ids, attention_mask), ast_links=ast_links)


def hidden_batch(sequences: list[Sequence], hidden: list[torch.Tensor], pad_id: int, mask_id: int,
                 unlinked: list[torch.Tensor] | None = None,
                 unlink: bool = True) -> tuple[dict, torch.Tensor, torch.Tensor]:
    """:func:`pad_batch` of ``sequences`` with the ``hidden`` tokens (``[L_i]`` bool each, or shorter: the first
    positions) replaced by ``<mask>`` and, the rule of :func:`sasa.masking.unlink_hidden`, no AST link from or to
    them, nor from or to the ``unlinked`` ones (name completion: the typed first piece). ``unlink=False`` keeps every
    link (the leak the rule closes; for comparison only).

    Returns the batch, ``[B, L]`` bool the hidden tokens, and ``[B, L]`` the ids before hiding."""
    from sasa.masking import unlink_hidden

    batch = pad_batch(sequences, pad_id)
    masked = torch.zeros_like(batch["attention_mask"], dtype=torch.bool)
    cut = masked.clone()
    for row, mask in enumerate(hidden):
        masked[row, : len(mask)] = mask
        if unlinked is not None:
            cut[row, : len(unlinked[row])] = unlinked[row]
    original = batch["input_ids"]
    batch["input_ids"] = original.masked_fill(masked, mask_id)
    batch["token_type_ids"] = neighbour_types(batch["input_ids"], batch["attention_mask"])
    if unlink:
        batch["ast_links"] = unlink_hidden(batch["ast_links"], cut | masked)
    return batch, masked, original


def fit(modules: list[nn.Module], loss_of_step: Callable[[int], torch.Tensor], steps: int, learning_rate: float,
        log=None) -> dict:
    """Train the parameters of ``modules`` (shared ones once) with the benchmarks' loop
    (:func:`training_loop.train_loop`: AdamW, warm-up and cosine decay, weight decay on matrices); the training
    numbers without the per-step losses (they would swell every result row)."""
    named = [(f"{index}.{name}", parameter) for index, module in enumerate(modules)
             for name, parameter in module.named_parameters()]
    numbers = train_loop(named, loss_of_step, steps, learning_rate, log=log, label="    ")
    del numbers["losses"]
    return numbers


# ----------------------------------------------------------------------------------------------------- pre-training

class MaskedLMHead(nn.Module):
    """dense → gelu → LayerNorm → decoder tied to the encoder's word embeddings (RoBERTa's head), identity start."""

    def __init__(self, embeddings: nn.Embedding):
        super().__init__()
        hidden = embeddings.weight.shape[1]
        self.dense = nn.Linear(hidden, hidden)
        self.norm = nn.LayerNorm(hidden)
        self.embeddings = embeddings
        self.bias = nn.Parameter(torch.zeros(embeddings.weight.shape[0]))
        with torch.no_grad():
            self.dense.weight.copy_(torch.eye(hidden))
            self.dense.bias.zero_()

    def forward(self, states: torch.Tensor) -> torch.Tensor:
        return self.norm(F.gelu(self.dense(states))) @ self.embeddings.weight.T + self.bias


#: How pre-training hides identifiers: ``pieces``, each recurring identifier piece on its own (the learned probe's
#: objective); ``names``, every piece of a name (:func:`sasa.masking.word_ids`) with a recurring piece together, as
#: the repair task hides a whole name.
PRETRAIN_MASKINGS = ("pieces", "names")


def pretrain_mask(input_ids: torch.Tensor, candidates: torch.Tensor, masking: str, rate: float,
                  generator: torch.Generator, vocabulary=None) -> torch.Tensor:
    """``[L]`` bool: what one pre-training step hides of a sequence. ``candidates``: its recurring identifier pieces
    (``[L]`` bool); ``pieces`` hides each with probability ``rate``; ``names`` hides each name holding one, all its
    pieces together (``vocabulary``: a :class:`sasa.masking.MaskingVocabulary`)."""
    from sasa.masking import sample_mask, word_ids

    if masking == "pieces":
        return sample_mask(candidates, rate, generator)
    if masking != "names":
        raise ValueError(f"masking must be one of {PRETRAIN_MASKINGS}, got {masking!r}")
    words = word_ids(input_ids[: len(candidates)], vocabulary)
    maskable = torch.zeros(int(words[-1]) + 1, dtype=torch.bool)
    maskable[words[candidates]] = True
    return sample_mask(maskable, rate, generator)[words]


def maskable_pieces(data: TaskData, index: int, visible: int | None = None) -> torch.Tensor:
    """``[L]`` bool: what pre-training may hide of ``data.pretrain[index]``, its identifier pieces that recur; for an
    encoder that reads only the first ``visible`` tokens, those that recur there (any identifier piece there when
    none does)."""
    candidates = data.pretrain_candidates[index]
    if visible is None or len(candidates) <= visible:
        return candidates
    from sasa.masking import copy_candidates

    read = data.pretrain[index].input_ids[:visible]
    candidates = copy_candidates(read, data.identifier)
    return candidates if candidates.any() else data.identifier[read]


def pretrain(encoder, data: TaskData, steps: int, seed: int, batch_size: int = 4, learning_rate: float = 2e-3,
             mask_rate: float = 0.25, masking: str = "pieces", unlink: bool = True,
             log=None) -> tuple[MaskedLMHead, dict]:
    """Identifier-copy masked-LM pre-training of ``encoder`` on ``data.pretrain`` (every encoder alike), hiding
    ``masking`` units (:func:`pretrain_mask`) and their AST links (``unlink``, :func:`hidden_batch`); returns the
    trained head (the repair task starts from it) and the training numbers."""
    if masking not in PRETRAIN_MASKINGS:
        raise ValueError(f"masking must be one of {PRETRAIN_MASKINGS}, got {masking!r}")
    vocabulary = None
    if masking == "names":
        from sasa.masking import MaskingVocabulary

        vocabulary = MaskingVocabulary.from_tokenizer(load_tokenizer(data))

    head = MaskedLMHead(encoder.word_embeddings)
    generator = torch.Generator().manual_seed(seed)
    order: list[int] = []
    # An encoder that reads only the first tokens (RoBERTa-512) is pre-trained on what it reads, as CodeBERT was on
    # 512-token sequences: recurring pieces of that part only. Hiding pieces it cannot see would train its head to
    # predict from the zero states past the cut.
    visible = encoder.spec.truncate
    encoder.train()

    def loss_of_step(step: int) -> torch.Tensor:
        if len(order) < batch_size:
            order.extend(torch.randperm(len(data.pretrain), generator=generator).tolist())
        chosen = [order.pop(0) for _ in range(batch_size)]
        sequences = [data.pretrain[i] for i in chosen]
        hidden = [pretrain_mask(sequence.input_ids, maskable_pieces(data, index, visible), masking, mask_rate,
                                generator, vocabulary) for index, sequence in zip(chosen, sequences)]
        batch, masked, original = hidden_batch(sequences, hidden, data.pad_id, data.mask_id, unlink=unlink)
        return F.cross_entropy(head(encoder(**batch)[masked]), original[masked])

    return head, fit([encoder, head], loss_of_step, steps, learning_rate, log)


# ------------------------------------------------------------------------------------------------------ metrics

def share(outcomes: list[dict], key: str = "right") -> float:
    """The share of ``outcomes`` whose ``key`` is true (NaN for none)."""
    return sum(o[key] for o in outcomes) / len(outcomes) if outcomes else float("nan")


#: The buckets every task is reported by: the evidence (the right name's other occurrences) all outside the site's
#: window blocks or not, and the site within the first 512 tokens or beyond.
BUCKETS = (("far", lambda o: o["far"]), ("near", lambda o: not o["far"]), ("beyond_512", lambda o: o["beyond"]),
           ("within_512", lambda o: not o["beyond"]))


def by_bucket(outcomes: list[dict], scores: dict[str, Callable[[list[dict]], float]]) -> dict:
    """``{name}_{bucket}`` for every score and bucket of :data:`BUCKETS`, and ``count_{bucket}``; each outcome has
    ``far`` and ``beyond``."""
    result = {}
    for bucket, belongs in BUCKETS:
        selected = [o for o in outcomes if belongs(o)]
        result.update({f"{name}_{bucket}": score(selected) for name, score in scores.items()})
        result[f"count_{bucket}"] = len(selected)
    return result


# --------------------------------------------------------------------------------------------------- variable misuse

class PointerHeads(nn.Module):
    """GREAT's two pointers: a location score and a repair score per token."""

    def __init__(self, hidden: int):
        super().__init__()
        self.location = nn.Linear(hidden, 1)
        self.repair = nn.Linear(hidden, 1)


def _misuse_batch(rows: list[MisuseRow], pad_id: int) -> tuple[dict, torch.Tensor, torch.Tensor, torch.Tensor]:
    batch = pad_batch(rows, pad_id)
    candidates = torch.zeros_like(batch["attention_mask"], dtype=torch.bool)
    repairs = torch.zeros_like(candidates)
    location = torch.zeros(len(rows), dtype=torch.long)
    for row, example in enumerate(rows):
        candidates[row, example.candidates] = True
        repairs[row, example.repairs] = True
        location[row] = example.site if example.buggy else 0
    return batch, candidates, repairs, location


def _pointer_logits(heads: PointerHeads, states: torch.Tensor, candidates: torch.Tensor):
    lowest = torch.finfo(states.dtype).min
    may_locate = candidates.clone()
    may_locate[:, 0] = True  # <s>: no bug
    location = heads.location(states).squeeze(-1).masked_fill(~may_locate, lowest)
    repair = heads.repair(states).squeeze(-1).masked_fill(~candidates, lowest)
    return location, repair


def misuse_loss(heads, states, candidates, repairs, location) -> torch.Tensor:
    """Cross-entropy of the location pointer, plus, on buggy rows, minus the log of the repair pointer's mass on the
    right variable's tokens (any of them repairs the bug)."""
    location_logits, repair_logits = _pointer_logits(heads, states, candidates)
    loss = F.cross_entropy(location_logits, location)
    buggy = location > 0
    if buggy.any():
        logits = repair_logits[buggy]
        right = logits.masked_fill(~repairs[buggy], torch.finfo(logits.dtype).min)
        loss = loss + (torch.logsumexp(logits, -1) - torch.logsumexp(right, -1)).mean()
    return loss


def finetune_misuse(encoder, data: TaskData, steps: int, seed: int, batch_size: int = 8, learning_rate: float = 1e-3,
                    log=None) -> tuple[PointerHeads, dict]:
    """Fine-tune ``encoder`` with GREAT's pointers on the training rows (half buggy, half bug-free)."""
    heads = PointerHeads(encoder.word_embeddings.weight.shape[1])
    rng = random.Random(seed)
    encoder.train()

    def loss_of_step(step: int) -> torch.Tensor:
        batch, candidates, repairs, location = _misuse_batch(rng.sample(data.misuse_train, batch_size), data.pad_id)
        return misuse_loss(heads, encoder(**batch), candidates, repairs, location)

    return heads, fit([encoder, heads], loss_of_step, steps, learning_rate, log)


@torch.no_grad()
def evaluate_misuse(encoder, heads: PointerHeads, rows: list[MisuseRow], pad_id: int, batch_size: int = 16) -> dict:
    """GREAT's metrics overall and by bucket: ``classification`` (bug or no bug), ``localization`` and ``repair`` and
    ``joint`` (both right) on buggy rows; buckets: the right variable's nearest other occurrence near (inside the
    site's window blocks) or far, the bug in the first 512 tokens or beyond."""
    encoder.eval()
    outcomes = []
    for start in range(0, len(rows), batch_size):
        chunk = rows[start : start + batch_size]
        batch, candidates, repairs, location = _misuse_batch(chunk, pad_id)
        location_logits, repair_logits = _pointer_logits(heads, encoder(**batch), candidates)
        found, repaired = location_logits.argmax(-1), repair_logits.argmax(-1)
        for row, example in enumerate(chunk):
            located, right = bool(found[row] == location[row]), bool(repairs[row, repaired[row]])
            outcomes.append(dict(buggy=example.buggy, far=example.far, beyond=example.site >= 512,
                                 classified=bool((found[row] > 0) == example.buggy), located=located,
                                 repaired=right, joint=located and right))
    buggy = [o for o in outcomes if o["buggy"]]
    result = dict(classification=share(outcomes, "classified"), localization=share(buggy, "located"),
                  repair=share(buggy, "repaired"), joint=share(buggy, "joint"), examples=len(outcomes),
                  buggy=len(buggy))
    result.update(by_bucket(buggy, {name: partial(share, key=key) for name, key in
                                    (("joint", "joint"), ("repair", "repaired"), ("localization", "located"))}))
    return result


# ------------------------------------------------------------------------------------ repair at a given (masked) site

def _repair_batch(rows: list[MisuseRow], pad_id: int, mask_id: int, unlink: bool = True) -> tuple[dict, torch.Tensor]:
    """Buggy rows with every piece of the bug's name replaced by ``<mask>`` (and unlinked, :func:`hidden_batch`): the
    position is given, the name is not (a piece left over from a wrong name of several pieces would point at the
    wrong variable). Returns the batch and each row's first masked token, where the variable is predicted."""
    hidden = []
    for row in rows:
        mask = torch.zeros(len(row.input_ids), dtype=torch.bool)
        mask[row.site : row.site_end] = True
        hidden.append(mask)
    batch, _, _ = hidden_batch(rows, hidden, pad_id, mask_id, unlink=unlink)
    return batch, torch.tensor([row.site for row in rows])


def _variable_scores(logits: torch.Tensor, row: MisuseRow) -> torch.Tensor:
    """``[variables]``: each local variable's score at the site, the log-sum-exp of the masked-LM logits of the token
    ids its other occurrences start with (``-inf`` for a variable with none left)."""
    lowest = torch.tensor(float("-inf"))
    return torch.stack([torch.logsumexp(logits[ids], 0) if len(ids) else lowest for ids in row.variable_ids])


def repair_loss(head: MaskedLMHead, states: torch.Tensor, sites: torch.Tensor, rows: list[MisuseRow]) -> torch.Tensor:
    logits = head(states[torch.arange(len(rows)), sites])  # [B, V]: only the sites are decoded
    return torch.stack([F.cross_entropy(_variable_scores(logits[i], row)[None], torch.tensor([row.right_variable]))
                        for i, row in enumerate(rows)]).mean()


def finetune_repair(encoder, head: MaskedLMHead, data: TaskData, steps: int, seed: int, batch_size: int = 8,
                    learning_rate: float = 1e-3, unlink: bool = True, log=None) -> dict:
    """Variable misuse with the bug's position given (GREAT's repair, the bug's token masked): the masked-LM head from
    pre-training scores the unit's local variables at the site; cross-entropy against the right one."""
    rng = random.Random(seed)
    rows = [r for r in data.misuse_train if r.buggy]
    encoder.train()

    def loss_of_step(step: int) -> torch.Tensor:
        chosen = rng.sample(rows, batch_size)
        batch, sites = _repair_batch(chosen, data.pad_id, data.mask_id, unlink)
        return repair_loss(head, encoder(**batch), sites, chosen)

    return fit([encoder, head], loss_of_step, steps, learning_rate, log)


@torch.no_grad()
def evaluate_repair(encoder, head: MaskedLMHead, rows: list[MisuseRow], pad_id: int, mask_id: int,
                    batch_size: int = 16, unlink: bool = True) -> dict:
    """Accuracy of choosing the right variable at the masked bug site, overall and by bucket (as
    :func:`evaluate_misuse`), and the chance level (one over the variables that can be chosen)."""
    encoder.eval()
    outcomes = []
    for start in range(0, len(rows), batch_size):
        chunk = [r for r in rows[start : start + batch_size] if r.buggy]
        if not chunk:
            continue
        batch, sites = _repair_batch(chunk, pad_id, mask_id, unlink)
        logits = head(encoder(**batch)[torch.arange(len(chunk)), sites])
        for i, row in enumerate(chunk):
            scores = _variable_scores(logits[i], row)
            outcomes.append(dict(right=int(scores.argmax()) == row.right_variable, far=row.far,
                                 beyond=row.site >= 512, chance=1.0 / int(torch.isfinite(scores).sum())))

    result = dict(repair=share(outcomes), chance=sum(o["chance"] for o in outcomes) / max(1, len(outcomes)),
                  examples=len(outcomes))
    result.update(by_bucket(outcomes, dict(repair=share)))
    return result


# ------------------------------------------------------------------------------- name completion (first piece typed)

def completion_batch(sites: list[CompletionSite], units: list[MisuseRow], pad_id: int, mask_id: int,
                     unlink: bool = True) -> tuple[dict, torch.Tensor]:
    """Each site's unit with every piece of its name but the first replaced by ``<mask>`` (the first piece is what
    the user has typed), and no AST link from or to any piece of the name, the typed one included: a half-typed name
    resolves to nothing (:func:`hidden_batch`; ``unlink=False`` keeps the links, the leak the rule closes). Returns
    the batch and ``[B, L]`` bool, the masked tokens."""
    hidden, typed = [], []
    for site in sites:
        length = len(units[site.unit].input_ids)
        mask, name = torch.zeros(length, dtype=torch.bool), torch.zeros(length, dtype=torch.bool)
        mask[site.start + 1 : site.end] = True
        name[site.start : site.end] = True
        hidden.append(mask)
        typed.append(name)
    batch, masked, _ = hidden_batch([units[site.unit] for site in sites], hidden, pad_id, mask_id, typed, unlink)
    return batch, masked


@torch.no_grad()
def evaluate_completion(encoder, head: MaskedLMHead, sites: list[CompletionSite], units: list[MisuseRow],
                        pad_id: int, mask_id: int, batch_size: int = 16, unlink: bool = True) -> dict:
    """Name completion with the pre-trained masked-LM head (the pre-training, which hides recurring identifier pieces,
    is its training): a site counts as completed when the argmax at every masked piece is the name's piece. Reported
    overall and by bucket: every other occurrence of the name outside the site's window blocks (far) or not; the site
    within the first 512 tokens or beyond."""
    encoder.eval()
    outcomes = []
    for begin in range(0, len(sites), batch_size):
        chunk = sites[begin : begin + batch_size]
        batch, masked = completion_batch(chunk, units, pad_id, mask_id, unlink)
        predicted = torch.zeros_like(masked, dtype=torch.long)
        predicted[masked] = head(encoder(**batch)[masked]).argmax(-1)
        reached = evidence_reached(encoder, batch, chunk)
        for row, site in enumerate(chunk):
            wanted = units[site.unit].input_ids[site.start + 1 : site.end]
            outcomes.append(dict(right=bool((predicted[row, site.start + 1 : site.end] == wanted).all()),
                                 far=site.far, beyond=site.start >= 512, reached=reached[row]))

    result = dict(completion=share(outcomes), examples=len(outcomes))
    result.update(by_bucket(outcomes, dict(completion=share)))
    if encoder.spec.kind == "sasa":  # where a far name is missed: was its evidence outside the layout, or not used?
        far = [o for o in outcomes if o["far"]]
        result["far_reach"] = share(far, "reached")
        result["completion_far_reached"] = share([o for o in far if o["reached"]])
        result["completion_far_unreached"] = share([o for o in far if not o["reached"]])
    return result


def evidence_reached(encoder, batch: dict, sites: list[CompletionSite]) -> list[bool | None]:
    """Per site, for a SASA encoder: does the first hidden piece attend (its layout) to the piece after the name's
    first piece at one of its other occurrences, where a copy would be read? ``None`` for other encoders."""
    if encoder.spec.kind != "sasa":
        return [None] * len(sites)
    layout = encoder.model.layout(batch["input_ids"], batch["attention_mask"], batch["ast_links"])
    attends = layout.token_mask()
    length = attends.shape[-1]
    return [bool(attends[row, site.start + 1, [min(o + 1, length - 1) for o in site.evidence]].any())
            for row, site in enumerate(sites)]


@torch.no_grad()
def completion_reach(encoder, sites: list[CompletionSite], units: list[MisuseRow], pad_id: int, mask_id: int,
                     batch_size: int = 16, unlink: bool = True) -> dict:
    """For a SASA encoder, from its layout alone (no weights involved, no training): the share of far sites whose
    evidence the layout reaches (:func:`evidence_reached`), overall and beyond the first 512 tokens."""
    far = [site for site in sites if site.far]
    outcomes = []
    for begin in range(0, len(far), batch_size):
        chunk = far[begin : begin + batch_size]
        batch, _ = completion_batch(chunk, units, pad_id, mask_id, unlink)
        outcomes += [dict(reached=reached, beyond=site.start >= 512)
                     for site, reached in zip(chunk, evidence_reached(encoder, batch, chunk))]
    return dict(far_reach=share(outcomes, "reached"), far_reach_beyond_512=share(
        [o for o in outcomes if o["beyond"]], "reached"), far_sites=len(outcomes))


# ------------------------------------------------------------------------------------------------------ code search

def _embed(encoder, sequences: list[Sequence], pad_id: int) -> torch.Tensor:
    batch = pad_batch(sequences, pad_id)
    states = encoder(**batch)
    weights = batch["attention_mask"].to(states.dtype)[..., None]
    return (states * weights).sum(1) / weights.sum(1)


def _queries(rows: list[SearchRow]) -> list[Sequence]:
    return [Sequence(row.query, torch.full((len(row.query), 1), -1, dtype=torch.int16), row.code.file) for row in rows]


def finetune_search(encoder, data: TaskData, steps: int, seed: int, batch_size: int = 8, learning_rate: float = 1e-3,
                    log=None) -> dict:
    rng = random.Random(seed)
    encoder.train()

    def loss_of_step(step: int) -> torch.Tensor:
        rows = rng.sample(data.search_train, batch_size)
        code = _embed(encoder, [r.code for r in rows], data.pad_id)
        queries = _embed(encoder, _queries(rows), data.pad_id)
        return F.cross_entropy(queries @ code.T, torch.arange(len(rows)))

    return fit([encoder], loss_of_step, steps, learning_rate, log)


@torch.no_grad()
def evaluate_search(encoder, rows: list[SearchRow], pad_id: int, batch_size: int = 16) -> dict:
    """MRR of every held-out query against the whole held-out pool of code."""
    encoder.eval()
    code = torch.cat([_embed(encoder, [r.code for r in rows[i : i + batch_size]], pad_id)
                      for i in range(0, len(rows), batch_size)])
    queries = torch.cat([_embed(encoder, _queries(rows[i : i + batch_size]), pad_id)
                         for i in range(0, len(rows), batch_size)])
    scores = queries @ code.T
    ranks = 1 + (scores > scores.diagonal()[:, None]).sum(1)
    return dict(mrr=float((1.0 / ranks.float()).mean()), pool=len(rows))
