"""Values that cross between the grader and a learner's kernel, as JSON.

The grader judges a learner's functions from outside the kernel (judge.py): it sends the
arguments a check chooses and receives what the learner's code returns. Both sides encode
with this module; its source is also sent into the kernel, so it imports nothing of the
course. Decoding never runs code: arrays are rebuilt from raw bytes with a dtype from an
allow-list (never an object dtype, never pickle), and anything that is not a plain value
travels as a numbered handle that only the kernel can act on.

Encoded forms: JSON scalars as themselves; {"$l"|"$t"|"$set": [...]} for list, tuple and
set; {"$d": [[k, v], ...]} for dict; {"$a": base64, "dt", "sh"} for a NumPy array;
{"$s": ...} for a NumPy scalar; {"$T": array, "dt", "rg", "p"} for a torch tensor (or
Parameter); {"$size"}, {"$dtype"}, {"$sl"}, {"$b"}, {"$c"}, {"$e"} for torch.Size, a torch
dtype, a slice, bytes, a complex number and Ellipsis; {"$r": n} for a handle on the
kernel's object; {"$g": n} for one of the grader's objects handed to the learner's code,
{"$it": [...]} for the grader's iterator (a module's parameters()), {"$dc"} and {"$path"}
for a config and a path the grader sends.
"""
import base64
import sys

# Array kinds a decoder accepts: bool, signed and unsigned integers, floats, complex, text.
ARRAY_KINDS = "biufcU"
# Bit generators a NumPy Generator may cross with (its state, then written back).
BIT_GENERATORS = ("PCG64", "PCG64DXSM", "MT19937", "Philox", "SFC64")
# Deeper nesting than this is refused rather than recursed into.
MAX_DEPTH = 64


class Unencodable(TypeError):
    """A value that cannot cross: the side that met it decides what that means."""


def _np():
    return sys.modules.get("numpy")


def _torch():
    return sys.modules.get("torch")


def _array(array):
    np = _np()
    writeable = getattr(getattr(array, "flags", None), "writeable", True)
    array = np.asarray(array)
    if not array.flags.c_contiguous:  # (np.ascontiguousarray would make a 0-d array 1-d)
        array = array.copy(order="C")
    if array.dtype.kind not in ARRAY_KINDS:
        raise Unencodable(f"an array of dtype {array.dtype}")
    data = {"$a": base64.b64encode(array.tobytes()).decode("ascii"), "dt": array.dtype.str,
            "sh": list(array.shape)}
    if not writeable:
        data["ro"] = True
    return data


def array_from(data):
    """The array of an encoded array (public name for the sides' hooks)."""
    return _unarray(data)


def array_data(array):
    """An array encoded (public name for the sides' hooks)."""
    return _array(array)


def _unarray(data):
    np = _np()
    dtype = np.dtype(data["dt"])
    if dtype.kind not in ARRAY_KINDS or dtype.hasobject:
        raise ValueError(f"refused an array of dtype {dtype}")
    shape = tuple(int(n) for n in data["sh"])
    raw = base64.b64decode(data["$a"])
    count = 1
    for n in shape:
        count *= n
    if len(raw) != count * dtype.itemsize:
        raise ValueError("an array whose bytes do not match its shape")
    array = np.frombuffer(raw, dtype=dtype).reshape(shape).copy()
    if data.get("ro"):  # a read-only input stays read-only where the learner's code runs
        array.flags.writeable = False
    return array


def tensor_data(value):
    """A tensor's values, dtype and kind (never its gradient or graph)."""
    torch = _torch()
    data = value.detach().cpu()
    dtype = str(data.dtype).replace("torch.", "")
    if data.dtype == torch.bfloat16:
        data = data.float()
    encoded = {"$T": _array(data.numpy()), "dt": dtype, "rg": bool(value.requires_grad),
               "p": isinstance(value, torch.nn.Parameter)}
    if value.dim() > 0 and value.numel() > 1 and not value.is_contiguous():
        encoded["nc"] = True  # a view with strides (targets[:, :-1]): .view() must fail on it too
    return encoded


def tensor_from(data):
    """The tensor of `tensor_data`'s output."""
    torch = _torch()
    if torch is None:
        import torch
    dtype = getattr(torch, str(data["dt"]), None)
    if not isinstance(dtype, torch.dtype):
        raise ValueError(f"refused a tensor of dtype {data['dt']!r}")
    tensor = torch.from_numpy(_unarray(data["$T"])).to(dtype)
    if data.get("nc") and tensor.dim() > 0 and not data.get("p"):
        # Rows padded by one (a single row: every stride doubled), so that what cannot be
        # flattened by .view() there cannot be here either.
        if tensor.dim() > 1:
            strided = torch.empty(*tensor.shape[:-1], tensor.shape[-1] + 1, dtype=dtype)[..., :-1]
        else:
            strided = torch.empty(*tensor.shape, 2, dtype=dtype)[..., 0]
        strided.copy_(tensor)
        tensor = strided
    if data.get("p"):
        return torch.nn.Parameter(tensor, requires_grad=bool(data.get("rg")))
    return tensor.requires_grad_(bool(data.get("rg")) and tensor.is_floating_point())


def fingerprint(obj):
    """What changes when a linked array or tensor (or its gradient) changes."""
    if not hasattr(obj, "grad_fn"):  # a NumPy array: its bytes
        return (obj.shape, obj.dtype.str, hash(obj.tobytes()))
    grad = obj.grad if obj.is_leaf else None
    return (obj._version, obj.data_ptr(), tuple(obj.shape), id(grad),
            None if grad is None else grad._version, obj.requires_grad)


def update_of(number, obj):
    """[number, values, gradient or None]: a linked array's or tensor's state, to send."""
    if not hasattr(obj, "grad_fn"):
        return [number, _array(obj), None]
    grad = obj.grad if obj.is_leaf else None
    return [number, tensor_data(obj), None if grad is None else tensor_data(grad)]


def apply_update(target, data, grad):
    """Make the linked `target` hold what `update_of` sent, in place where the shape allows."""
    if not hasattr(target, "grad_fn"):
        fresh = _unarray(data)
        if fresh.shape == target.shape and target.flags.writeable:
            target[...] = fresh
        return
    torch = _torch()
    fresh = tensor_from(data)
    with torch.no_grad():
        if fresh.shape == target.shape and fresh.dtype == target.dtype:
            # Unchanged values are left alone: a copy would bump the tensor's version and
            # break a graph that saved it for a backward still to come.
            if not torch.equal(target.detach(), fresh):
                target.copy_(fresh)
        else:  # another shape or dtype (module.double() on the other side): new storage
            target.data = fresh
    if target.is_leaf and target.is_floating_point() and target.requires_grad != bool(data.get("rg")):
        target.requires_grad_(bool(data.get("rg")))  # a base layer frozen by the other side
    target.grad = None if grad is None else tensor_from(grad)


def encode(value, handle, depth=0):
    """`value` as JSON-ready data; `handle(obj)` numbers what is not a plain value (or raises
    Unencodable)."""
    if depth > MAX_DEPTH:
        raise Unencodable("a value nested too deeply")
    if value is None or isinstance(value, (bool, str)):
        return value
    if type(value) in (int, float):
        return value
    if isinstance(value, complex):
        return {"$c": [value.real, value.imag]}
    if isinstance(value, bytes):
        return {"$b": base64.b64encode(value).decode("ascii")}
    if value is Ellipsis:
        return {"$e": True}
    if isinstance(value, slice):
        return {"$sl": [encode(v, handle, depth + 1) for v in (value.start, value.stop, value.step)]}
    np, torch = _np(), _torch()
    if torch is not None:
        if isinstance(value, torch.Tensor) and type(value) in (torch.Tensor, torch.nn.Parameter):
            hook = getattr(handle, "tensor", None)
            if hook is not None:  # the side's own bookkeeping: links, graph nodes, gradients
                return hook(value, lambda: tensor_data(value))
            return tensor_data(value)
        if isinstance(value, torch.Size):
            return {"$size": [int(n) for n in value]}
        if isinstance(value, torch.dtype):
            return {"$dtype": str(value).replace("torch.", "")}
        if type(value) is torch.Generator and value.device.type == "cpu":
            return {"$tgen": _array(value.get_state().numpy())}
    if np is not None:
        if type(value) is np.random.Generator and type(value.bit_generator).__name__ in BIT_GENERATORS:
            return {"$npgen": type(value.bit_generator).__name__,
                    "state": encode(value.bit_generator.state, handle, depth + 1)}
        if type(value) is np.ndarray:
            hook = getattr(handle, "array", None)
            if hook is not None:
                return hook(value, lambda: _array(value))
            return _array(value)
        if isinstance(value, np.generic) and type(value).__module__ == "numpy":
            return {"$s": _array(np.asarray(value))}
    if type(value) in (list, tuple, set, frozenset):
        tag = {list: "$l", tuple: "$t"}.get(type(value), "$set")
        return {tag: [encode(v, handle, depth + 1) for v in value]}
    if type(value) is dict:
        return {"$d": [[encode(k, handle, depth + 1), encode(v, handle, depth + 1)]
                       for k, v in value.items()]}
    if type(value).__name__ == "OrderedDict" and type(value).__module__ == "collections":
        return {"$d": [[encode(k, handle, depth + 1), encode(v, handle, depth + 1)]
                       for k, v in value.items()]}
    numbered = handle(value)
    return numbered if isinstance(numbered, dict) else {"$r": numbered}


def decode(data, unhandle, depth=0):
    """The value that `encode` made `data` from; `unhandle(n)` gives what handle n stands for."""
    if depth > MAX_DEPTH:
        raise ValueError("a value nested too deeply")
    if data is None or isinstance(data, (bool, int, float, str)):
        return data
    if isinstance(data, list):
        raise ValueError("a bare list: lists travel tagged")
    if not isinstance(data, dict) or len(data) == 0:
        raise ValueError(f"cannot decode {type(data).__name__}")
    if "$l" in data:
        return [decode(v, unhandle, depth + 1) for v in data["$l"]]
    if "$t" in data:
        return tuple(decode(v, unhandle, depth + 1) for v in data["$t"])
    if "$set" in data:
        return set(decode(v, unhandle, depth + 1) for v in data["$set"])
    if "$d" in data:
        return {decode(k, unhandle, depth + 1): decode(v, unhandle, depth + 1) for k, v in data["$d"]}
    if "$a" in data:
        hook = getattr(unhandle, "array", None)
        return hook(data) if hook is not None else _unarray(data)
    if "$s" in data:
        return _unarray(data["$s"])[()]
    if "$T" in data:
        hook = getattr(unhandle, "tensor", None)
        if hook is not None:
            return hook(data)
        return tensor_from(data)
    if "$link" in data:
        return unhandle.link(int(data["$link"]))
    if "$npgen" in data:
        np = _np()
        if data["$npgen"] not in BIT_GENERATORS:
            raise ValueError(f"refused a bit generator {data['$npgen']!r}")
        bits = getattr(np.random, data["$npgen"])()
        bits.state = decode(data["state"], unhandle, depth + 1)
        return np.random.Generator(bits)
    if "$tgen" in data:
        import torch
        generator = torch.Generator()
        generator.set_state(torch.from_numpy(_unarray(data["$tgen"])))
        return generator
    if "$size" in data:
        import torch
        return torch.Size(int(n) for n in data["$size"])
    if "$dtype" in data:
        import torch
        dtype = getattr(torch, str(data["$dtype"]), None)
        if not isinstance(dtype, torch.dtype):
            raise ValueError(f"refused dtype {data['$dtype']!r}")
        return dtype
    if "$sl" in data:
        return slice(*(decode(v, unhandle, depth + 1) for v in data["$sl"]))
    if "$b" in data:
        return base64.b64decode(data["$b"])
    if "$c" in data:
        return complex(float(data["$c"][0]), float(data["$c"][1]))
    if "$e" in data:
        return Ellipsis
    if "$r" in data:
        return unhandle(int(data["$r"]), data)
    if "$dc" in data or "$path" in data:  # only the kernel's side accepts these
        hook = getattr(unhandle, "dataclass" if "$dc" in data else "path", None)
        if hook is None:
            raise ValueError("refused a dataclass or a path from this side")
        if "$path" in data:
            return hook(str(data["$path"]))
        fields = {str(k): decode(v, unhandle, depth + 1) for k, v in data["f"]}
        return hook(str(data["$dc"]), fields, data.get("g"))
    if "$g" in data:  # one of the grader's objects, lent to the kernel
        hook = getattr(unhandle, "grader", None)
        if hook is None:
            raise ValueError("refused a grader's object from this side")
        return hook(int(data["$g"]), data)
    if "$it" in data:
        return iter([decode(v, unhandle, depth + 1) for v in data["$it"]])
    raise ValueError(f"cannot decode {sorted(data)[:3]}")
