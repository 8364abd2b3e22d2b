"""Wrong versions of export_gpt and export_gpt_with_cache (exercise 20_export).

Each mistake is a right implementation, written the way a learner would, with one change;
`edited` fails loudly if the text it changes is not in that implementation exactly once.
"""
from . import Mistake, edited

EXERCISE = "20_export"

RIGHT_PLAIN = '''def export_gpt(model, path):
    if model.training:
        raise ValueError("model is in training mode: call model.eval() first")
    example = torch.zeros((2, 3), dtype=torch.long)
    torch.onnx.export(model, (example,), str(path), dynamo=True, verbose=False,
                      input_names=["input_ids"], output_names=["logits"],
                      dynamic_shapes={"idx": {0: "batch", 1: "sequence"}})
    onnx.checker.check_model(str(path))
    return Path(path)
'''

RIGHT_CACHED = '''class CachedDecoder(nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, input_ids, past_keys, past_values):
        past = [(past_keys[i], past_values[i]) for i in range(past_keys.shape[0])]
        logits, present = forward_with_cache(self.model, input_ids, past)
        keys = torch.stack([k for k, v in present], dim=0)
        values = torch.stack([v for k, v in present], dim=0)
        return logits, keys, values


def export_gpt_with_cache(model, path):
    if model.training:
        raise ValueError("model is in training mode: call model.eval() first")
    c = model.config
    ids = torch.zeros((2, 3), dtype=torch.long)
    past_keys = torch.zeros((c.n_layer, 2, c.n_head, 4, c.n_embd // c.n_head))
    past_values = torch.zeros((c.n_layer, 2, c.n_head, 4, c.n_embd // c.n_head))
    torch.onnx.export(CachedDecoder(model).eval(), (ids, past_keys, past_values), str(path),
                      dynamo=True, verbose=False,
                      input_names=["input_ids", "past_keys", "past_values"],
                      output_names=["logits", "present_keys", "present_values"],
                      dynamic_shapes={"input_ids": {0: "batch", 1: "sequence"},
                                      "past_keys": {1: "batch", 3: "past"},
                                      "past_values": {1: "batch", 3: "past"}})
    onnx.checker.check_model(str(path))
    return Path(path)
'''


MISTAKES = [
    # --- export_gpt
    Mistake("static_shapes", "export_gpt", edited(RIGHT_PLAIN,
        (',\n                      dynamic_shapes={"idx": {0: "batch", 1: "sequence"}})', ")"),
    ), says="static shapes"),
    Mistake("example_sequence_of_one", "export_gpt", edited(RIGHT_PLAIN,
        ("torch.zeros((2, 3), dtype=torch.long)", "torch.zeros((2, 1), dtype=torch.long)"),
    ), says="example size is 0 or 1"),
    Mistake("training_mode_exported", "export_gpt", edited(RIGHT_PLAIN,
        ('    if model.training:\n        raise ValueError("model is in training mode: call model.eval() first")\n', ""),
    ), says="exported a model in training mode"),
    Mistake("output_named_output", "export_gpt", edited(RIGHT_PLAIN,
        ('output_names=["logits"]', 'output_names=["output"]'),
    ), says="should be named"),
    # --- export_gpt_with_cache
    Mistake("cache_outputs_dropped", "export_gpt_with_cache", edited(RIGHT_CACHED,
        ("        return logits, keys, values\n", "        return logits\n"),
        ('output_names=["logits", "present_keys", "present_values"]', 'output_names=["logits"]'),
    ), says="were dropped"),
    Mistake("example_of_one_new_token", "export_gpt_with_cache", edited(RIGHT_CACHED,
        ("ids = torch.zeros((2, 3), dtype=torch.long)", "ids = torch.zeros((2, 1), dtype=torch.long)"),
    ), says="example size is 0 or 1"),
    Mistake("static_past", "export_gpt_with_cache", edited(RIGHT_CACHED,
        ('"past_keys": {1: "batch", 3: "past"},', '"past_keys": {1: "batch"},'),
        ('"past_values": {1: "batch", 3: "past"}}', '"past_values": {1: "batch"}}'),
    ), says="static axes"),
    Mistake("keys_and_values_swapped", "export_gpt_with_cache", edited(RIGHT_CACHED,
        ("        return logits, keys, values\n", "        return logits, values, keys\n"),
    ), says="present_keys holds the values"),
    Mistake("layers_stacked_on_the_batch_axis", "export_gpt_with_cache", edited(RIGHT_CACHED,
        ("keys = torch.stack([k for k, v in present], dim=0)", "keys = torch.stack([k for k, v in present], dim=1)"),
        ("values = torch.stack([v for k, v in present], dim=0)", "values = torch.stack([v for k, v in present], dim=1)"),
    ), says="axes are in another order"),
]
