"""``SasaDataCollator``: pads the features of every SASA head into a batch.

A feature is a dict of token lists as the tokenizer returns them. Keys are grouped by the prefix in front of
``input_ids``: ``input_ids``/``attention_mask``/``ast_links`` are one group, ``query_input_ids``/``query_attention_mask``
(code search) another; each group is padded to its longest sequence (rounded up to ``pad_to_multiple_of``) as the
tokenizer's ``pad`` would (its ``pad_token_id`` and ``padding_side``; ``ast_links`` rows with ``-1``), with tensor
operations (:func:`pad_sequences`: one conversion and one copy per sequence, not token by token as Python lists; 6-8x
faster than the tokenizer's ``pad`` at 32 x 2048 tokens, ``benchmarks/speed/collator_speed.py``). A group whose
``input_ids`` holds a *list* of token lists per feature (clone detection: the two functions of a pair) is padded as
one batch of ``2B`` sequences and stacked to ``[B, 2, L]``. ``labels`` are stacked as they are (class ids) or, when
they are token lists (summaries), right-padded with ``-100``. Other keys are stacked as tensors.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import chain
from typing import Any

import numpy as np
import torch

TOKEN_FIELDS = ("input_ids", "attention_mask", "ast_links")


@dataclass
class SasaDataCollator:
    """Pad a list of features into tensors (see the module docstring).

    Args:
        tokenizer: The :class:`~sasa.SasaTokenizer` (its ``pad_token_id`` and ``padding_side`` are used).
        pad_to_multiple_of: Pad lengths to a multiple of this (e.g. the model's ``block_size``).
        label_pad_token_id: Padding of token-list labels (ignored by the loss).
    """

    tokenizer: Any
    pad_to_multiple_of: int | None = None
    label_pad_token_id: int = -100

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        if not features:
            raise ValueError("SasaDataCollator got an empty list of features.")
        prefixes = [key[: -len("input_ids")] for key in features[0] if key.endswith("input_ids")]
        batch: dict[str, torch.Tensor] = {}
        for prefix in prefixes:
            batch.update(self._pad_group(features, prefix))
        grouped = {prefix + field for prefix in prefixes for field in TOKEN_FIELDS}
        for key in features[0]:
            if key in grouped:
                continue
            values = [feature[key] for feature in features]
            if key == "labels" and isinstance(values[0], (list, tuple)):
                batch[key] = self._pad_labels(values)
            else:
                batch[key] = torch.as_tensor(values)
        return batch

    def _pad_group(self, features: list[dict[str, Any]], prefix: str) -> dict[str, torch.Tensor]:
        rows = [{field: feature[prefix + field] for field in TOKEN_FIELDS if prefix + field in feature}
                for feature in features]
        paired = bool(rows[0]["input_ids"]) and isinstance(rows[0]["input_ids"][0], (list, tuple))
        if paired:  # [B] features of 2 sequences → 2B sequences, padded together, stacked back to [B, 2, L]
            rows = [{field: row[field][member] for field in row} for row in rows for member in range(2)]
        width = max(len(row["input_ids"]) for row in rows)
        if self.pad_to_multiple_of:
            width = -(-width // self.pad_to_multiple_of) * self.pad_to_multiple_of
        if self.tokenizer.pad_token_id is None:
            raise ValueError("SasaDataCollator needs a tokenizer with a padding token (its pad_token_id is None).")
        left = getattr(self.tokenizer, "padding_side", "right") == "left"
        ids = [row["input_ids"] for row in rows]
        masks = [row["attention_mask"] if "attention_mask" in row else [1] * len(row["input_ids"]) for row in rows]
        padded = {"input_ids": pad_sequences(ids, width, self.tokenizer.pad_token_id, left),
                  "attention_mask": pad_sequences(masks, width, 0, left)}
        if "ast_links" in rows[0]:
            padded["ast_links"] = pad_sequences([row["ast_links"] for row in rows], width, -1, left, links=True)
        if paired:
            padded = {field: tensor.view(len(features), 2, *tensor.shape[1:]) for field, tensor in padded.items()}
        return {prefix + field: tensor for field, tensor in padded.items()}

    def _pad_labels(self, values: list) -> torch.Tensor:
        width = max(len(value) for value in values)
        if self.pad_to_multiple_of:
            width = -(-width // self.pad_to_multiple_of) * self.pad_to_multiple_of
        return torch.tensor([list(value) + [self.label_pad_token_id] * (width - len(value)) for value in values])


def pad_sequences(rows: list, width: int, value: int, left: bool = False, links: bool = False) -> torch.Tensor:
    """Stack per-sequence values (each ``[L_i]`` or ``[L_i, R]``: lists, nested lists as ``datasets`` returns them,
    arrays or tensors) into one ``[B, width(, R)]`` long tensor padded with ``value``, as the tokenizer's ``pad``
    pads them. With ``links=True`` the rows are ``ast_links`` (token indices): left padding shifts every link by the
    padding's length, as ``SasaTokenizer.pad`` does. One flat conversion per sequence and one slice copy: no per-token
    Python work."""
    arrays = [_as_array(row) for row in rows]
    per_token = next((a.shape[1:] for a in arrays if a.shape[0]), (1,) if links else ())
    if any(a.shape[0] > width for a in arrays):
        raise ValueError(f"sequences longer than the padded length {width}: {[a.shape[0] for a in arrays]}.")
    out = torch.full((len(arrays), width, *per_token), value, dtype=torch.long)
    for row, array in enumerate(arrays):
        length = array.shape[0]
        if not length:
            continue
        if array.shape[1:] != per_token:
            raise ValueError(f"every sequence must have {per_token} values per token, got {array.shape[1:]}.")
        values = torch.from_numpy(array)
        if left:
            out[row, width - length:] = torch.where(values >= 0, values + (width - length), values) if links else values
        else:
            out[row, :length] = values
    return out


def _as_array(row) -> np.ndarray:
    """One sequence's links as an int64 array ``[L, R]`` (or ``[L]``), converted in one pass."""
    if isinstance(row, torch.Tensor):
        return row.detach().cpu().numpy().astype(np.int64, copy=False)
    if isinstance(row, np.ndarray):
        return row.astype(np.int64, copy=False)
    if len(row) and isinstance(row[0], (list, tuple)):
        width = len(row[0])
        flat = np.fromiter(chain.from_iterable(row), dtype=np.int64, count=len(row) * width)
        return flat.reshape(len(row), width)
    return np.asarray(row, dtype=np.int64)


@dataclass
class SasaDataCollatorForMaskedLM(SasaDataCollator):
    """Pad, then hide tokens for masked-LM (:mod:`sasa.masking`): a fresh mask each batch, drawn from torch's
    global random generator (Trainer seeds it and restores it when a run resumes).

    Features that already hold ``labels`` (a held-out split's fixed masks, :func:`sasa.masking.evaluation_mask`)
    are only padded, their labels with ``-100``. Otherwise ``masking`` (``"tokens"`` or ``"identifiers"``) selects
    about ``mlm_probability`` of each sequence's non-special tokens, which are corrupted as BERT does (80 %
    ``<mask>``, 10 % a random id, 10 % kept); ``labels`` are the selected tokens' ids, ``-100`` elsewhere.

    Hidden tokens keep no AST links (``unlink_hidden``, on by default; :func:`sasa.masking.unlink_hidden`): every
    link from or to a selected token (or, for features with ``labels``, a labelled one) is dropped, since the
    tokenizer parsed the code before it was hidden and the links would lead SASA's AST blocks to the answer.

    Args:
        tokenizer, pad_to_multiple_of, label_pad_token_id: As :class:`SasaDataCollator`.
        masking: One of :data:`sasa.masking.MASKINGS`.
        mlm_probability: Share of the tokens (or words) selected.
        unlink_hidden: Drop the hidden tokens' AST links (default). ``False`` keeps them: the model then reads the
            parse of what it predicts, and its accuracy is not what it would be on code it has not seen.
    """

    masking: str = "tokens"
    mlm_probability: float = 0.15
    unlink_hidden: bool = True

    def __post_init__(self) -> None:
        from .masking import MASKINGS, MaskingVocabulary

        if self.masking not in MASKINGS:
            raise ValueError(f"masking must be one of {MASKINGS}, got {self.masking!r}.")
        if not 0.0 < self.mlm_probability < 1.0:
            raise ValueError(f"mlm_probability must be in (0, 1), got {self.mlm_probability}.")
        if self.tokenizer.mask_token_id is None:
            raise ValueError("the tokenizer has no <mask> token, which masked-LM needs.")
        self.vocabulary = MaskingVocabulary.from_tokenizer(self.tokenizer)

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        if features and "labels" in features[0]:  # fixed masks: labels line up with input_ids, padded alike
            batch = super().__call__([{k: v for k, v in f.items() if k != "labels"} for f in features])
            left = getattr(self.tokenizer, "padding_side", "right") == "left"
            width = batch["input_ids"].shape[-1]
            batch["labels"] = pad_sequences([f["labels"] for f in features], width, self.label_pad_token_id, left)
            return self.unlink(batch, batch["labels"] != self.label_pad_token_id)
        return self.mask_batch(super().__call__(features))

    def unlink(self, batch: dict[str, torch.Tensor], hidden: torch.Tensor) -> dict[str, torch.Tensor]:
        """``batch`` with the AST links of the ``hidden`` positions (``[B, L]`` bool) dropped, when
        ``unlink_hidden`` is on and the batch has links."""
        if not self.unlink_hidden or "ast_links" not in batch:
            return batch
        from .masking import unlink_hidden

        return {**batch, "ast_links": unlink_hidden(batch["ast_links"], hidden)}

    def mask_batch(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Hide tokens of a padded batch (``input_ids``, ``attention_mask``): ``input_ids`` corrupted, ``labels``
        added, and the selected tokens' AST links dropped (``unlink_hidden``). Draws from torch's global generator
        when called: a Trainer that calls it in its training step (as ``examples/run_mlm.py`` does) draws the same
        masks in a resumed run as in the uninterrupted one, where a data loader may collate a batch before Trainer
        restores the checkpoint's random state."""
        from .masking import corrupt, select_tokens

        generator = torch.default_generator
        real = batch["attention_mask"].cpu().bool()
        selected = torch.zeros_like(real)
        for row, ids in enumerate(batch["input_ids"].cpu()):  # the real tokens, padded on either side
            selected[row, real[row]] = select_tokens(ids[real[row]], self.vocabulary, self.masking,
                                                     self.mlm_probability, generator)
        inputs, labels = corrupt(batch["input_ids"].cpu(), selected, self.vocabulary, generator)
        device = batch["input_ids"].device
        return self.unlink({**batch, "input_ids": inputs.to(device), "labels": labels.to(device)}, selected)
