"""SASA: structure-aware block-sparse attention for long source code, as a transformers model plugin.

Importing the package registers the SASA classes with transformers' Auto classes in this process, so
``AutoModel.from_pretrained(dir)`` works without ``trust_remote_code``. Checkpoints also carry their own code and
load with ``trust_remote_code=True`` where this package is not installed.
"""

from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForMaskedLM,
    AutoModelForSeq2SeqLM,
    AutoModelForSequenceClassification,
    AutoModelForTextEncoding,
    AutoTokenizer,
)

from .block_layout import BlockLayout, ast_block_scores, build_layout, frequency_block_scores
from .configuration_sasa import SasaConfig
from .data_collator import SasaDataCollator, SasaDataCollatorForMaskedLM
from .modeling_sasa import (
    CodeSearchOutput,
    SasaForCodeSearch,
    SasaForCodeSummarization,
    SasaForMaskedLM,
    SasaForSequenceClassification,
    SasaModel,
    SasaPreTrainedModel,
)
from .sparse_attention import SUPPORTED_BACKENDS
from .tokenization_sasa import SasaTokenizer

__version__ = "0.1.0"

AutoConfig.register(SasaConfig.model_type, SasaConfig, exist_ok=True)
AutoModel.register(SasaConfig, SasaModel, exist_ok=True)
AutoModelForMaskedLM.register(SasaConfig, SasaForMaskedLM, exist_ok=True)
AutoModelForSequenceClassification.register(SasaConfig, SasaForSequenceClassification, exist_ok=True)
AutoModelForSeq2SeqLM.register(SasaConfig, SasaForCodeSummarization, exist_ok=True)
AutoModelForTextEncoding.register(SasaConfig, SasaForCodeSearch, exist_ok=True)
AutoTokenizer.register(SasaConfig, tokenizer_class=SasaTokenizer, exist_ok=True)

__all__ = [
    "BlockLayout",
    "CodeSearchOutput",
    "SUPPORTED_BACKENDS",
    "SasaConfig",
    "SasaDataCollator",
    "SasaDataCollatorForMaskedLM",
    "SasaForCodeSearch",
    "SasaForCodeSummarization",
    "SasaForMaskedLM",
    "SasaForSequenceClassification",
    "SasaModel",
    "SasaPreTrainedModel",
    "SasaTokenizer",
    "ast_block_scores",
    "build_layout",
    "frequency_block_scores",
]
