"""One trainer for block-diffusion SFT and OPUT (spec §1-§2)."""

from dmax_core.training.data import ConversationTensors, duplicate_for_oput, encode_conversations
from dmax_core.training.trainer import TrainResult, train_model

__all__ = ["ConversationTensors", "TrainResult", "duplicate_for_oput", "encode_conversations", "train_model"]
