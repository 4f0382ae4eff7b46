"""The logits in what a model's forward returns, for models kdforge did not define: a tensor; a
tuple (torchvision's Inception and GoogLeNet in training mode return the logits first, then the
auxiliary ones); a dict; a dataclass such as Hugging Face's ImageClassifierOutput. The config key
`output` names them (a dict key, an attribute or a tuple index); without it a tensor is taken as
it is, else a `logits` key or attribute, else a tuple's first item."""

from collections.abc import Mapping

import torch

from kdforge.errors import UserError, printable

OutputKey = str | int | None


def _kind(output) -> str:
    if isinstance(output, Mapping):
        return f"a {type(output).__name__} with keys {', '.join(map(str, list(output)[:8]))}"
    if isinstance(output, (tuple, list)):
        return f"a {type(output).__name__} of {len(output)}"
    return f"a {type(output).__name__}"


def _pick(output, key: OutputKey):
    if isinstance(key, int):
        return output[key] if isinstance(output, (tuple, list)) and -len(output) <= key < len(output) else None
    if isinstance(output, Mapping):
        return output.get(key)
    return getattr(output, key, None) if not key.startswith("_") else None


def logits_of(output, key: OutputKey, source: str) -> torch.Tensor:
    """The logits tensor in `output`, as `key` names it (None: the default above)."""
    if key is None:
        if torch.is_tensor(output):
            return output
        picked = _pick(output, "logits")
        if picked is None and isinstance(output, (tuple, list)) and output:
            picked = output[0]
    else:
        picked = _pick(output, key)
    if not torch.is_tensor(picked):
        found = ("with no logits tensor kdforge can take (a `logits` key or attribute, or a tuple's first item)" if key is None
                 else f"where output {printable(repr(key))} is no tensor")
        raise UserError(f"{source} returns {_kind(output)}, {found}; name the logits with the config key 'output' (a dict "
                        f"key, an attribute or a tuple index).")
    return picked
