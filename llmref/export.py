# GENERATED from solutions/20_export/20_export.ipynb by `course library`: do not edit.
# Change the solution notebook and regenerate; tests fail while this file is stale.
"""Exporting llmref.gpt.GPT to ONNX with torch.onnx.export (dynamo=True): the whole-sequence forward pass with dynamic batch and sequence axes, and the KV-cache decoder with past and present keys and values as tensors: the reference for exercise 20_export."""
from pathlib import Path

import onnx
import torch
from torch import nn

from llmref.gpt import GPT
from llmref.kvcache import forward_with_cache


def export_gpt(model: GPT, path) -> Path:
    """Export a GPT in eval mode to the ONNX file `path` and validate it with onnx.checker.

    The graph has one input "input_ids" (B, T) int64 and one output "logits" (B, T, V), with
    the batch and sequence axes dynamic. Returns Path(path). Raises ValueError if the model is
    in training mode.
    """
    if model.training:
        raise ValueError("the model is in training mode, so its dropout would be exported into "
                         "the graph: call model.eval() before exporting it")
    example = torch.zeros((2, 3), dtype=torch.long)  # sizes >= 2: a size-1 axis is specialised
    torch.onnx.export(model, (example,), str(path), dynamo=True, verbose=False,
                      input_names=["input_ids"], output_names=["logits"],
                      dynamic_shapes={"idx": {0: "batch", 1: "sequence"}})
    onnx.checker.check_model(str(path))
    return Path(path)


class CachedDecoder(nn.Module):
    """forward_with_cache with tensor inputs and outputs, for export: the layers' keys and
    values stacked along a first axis of size n_layer."""

    def __init__(self, model: GPT):
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, past_keys: torch.Tensor, past_values: torch.Tensor):
        """input_ids (B, T_new); past_keys, past_values (n_layer, B, n_head, T_past, hs) ->
        (logits (B, T_new, V), present_keys, present_values (n_layer, B, n_head, T_past + T_new, hs))."""
        n_layer = len(self.model.transformer.h)
        past = [(past_keys[i], past_values[i]) for i in range(n_layer)]
        logits, present = forward_with_cache(self.model, input_ids, past)
        return logits, torch.stack([k for k, _ in present]), torch.stack([v for _, v in present])


def export_gpt_with_cache(model: GPT, path) -> Path:
    """Export CachedDecoder(model) to the ONNX file `path` and validate it with onnx.checker.

    Inputs "input_ids", "past_keys", "past_values"; outputs "logits", "present_keys",
    "present_values" (shapes in the table above), with the batch, new-token and past axes
    dynamic. Returns Path(path). Raises ValueError if the model is in training mode.
    """
    if model.training:
        raise ValueError("the model is in training mode, so its dropout would be exported into "
                         "the graph: call model.eval() before exporting it")
    config = model.config
    ids = torch.zeros((2, 3), dtype=torch.long)
    cache_shape = (config.n_layer, 2, config.n_head, 4, config.n_embd // config.n_head)
    past_keys, past_values = torch.zeros(cache_shape), torch.zeros(cache_shape)
    torch.onnx.export(CachedDecoder(model).eval(), (ids, past_keys, past_values), str(path),
                      dynamo=True, verbose=False,
                      input_names=["input_ids", "past_keys", "past_values"],
                      output_names=["logits", "present_keys", "present_values"],
                      dynamic_shapes={"input_ids": {0: "batch", 1: "sequence"},
                                      "past_keys": {1: "batch", 3: "past"},
                                      "past_values": {1: "batch", 3: "past"}})
    onnx.checker.check_model(str(path))
    return Path(path)


class EncoderEmbeddings(nn.Module):
    """An Encoder's sentence embeddings as a module with tensor inputs, for export."""

    def __init__(self, encoder: nn.Module):
        super().__init__()
        self.encoder = encoder

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.encoder.embed(input_ids, attention_mask)       # (B, C), unit length


def export_encoder(encoder: nn.Module, path) -> Path:
    """Export an llmref.encoder.Encoder's embeddings: inputs "input_ids" and "attention_mask"
    (B, T) int64, output "embeddings" (B, C); batch and sequence dynamic. Returns Path(path)."""
    if encoder.training:
        raise ValueError("the encoder is in training mode: call encoder.eval() before exporting it")
    ids = torch.full((2, 5), 101)                                  # any ids (int64); sizes >= 2
    mask = torch.ones_like(ids)
    axes = {0: "batch", 1: "sequence"}
    target = Path(path)
    torch.onnx.export(EncoderEmbeddings(encoder).eval(), (ids, mask), str(target), dynamo=True,
                      verbose=False, input_names=["input_ids", "attention_mask"],
                      output_names=["embeddings"],
                      dynamic_shapes={"input_ids": axes, "attention_mask": axes})
    onnx.checker.check_model(str(target))
    return target
