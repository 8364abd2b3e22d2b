"""The kernel's side of the judge: answers the grader's requests about the learner's objects.

This source (with judge_codec's) is sent into the learner's kernel and run there, so it
imports nothing of the course. It runs among the learner's code and trusts nothing: it only
carries requests in and values out. Whatever it answers, the grader decides the score.

`serve(codec)` returns the function the grader calls through a Jupyter user expression:
`__course_rpc__('<request as JSON>')`, whose text is the JSON answer.

Tensors are linked: one sent either way keeps a number on both sides, and each request and
answer carries the linked tensors that changed since (values and gradients), so that an
optimizer of the learner's stepping the grader's parameters, or a backward pass through the
learner's module, is seen on the other side as if both were one process. A tensor with a
graph here becomes, on the grader's side, one whose backward asks for `backward` here.
"""


def serve(codec, namespace=None):
    """`namespace`: where the learner's names live (the IPython user namespace if None)."""
    import json
    import sys
    import traceback

    handles = {}
    watching = []  # the grader's watch for forbidden shortcuts, while it is on
    links = {}     # number -> tensor or array shared with the grader
    nodes = {}     # number -> a result with a graph, kept for the grader's backward requests
    seen = {}      # number -> its fingerprint when last in step with the grader
    link_of = {}   # id(tensor) -> number
    rng_states = []

    def torch_module():
        return sys.modules.get("torch")

    fingerprint = codec.fingerprint

    def link(obj, number=None):
        if id(obj) in link_of and links.get(link_of[id(obj)]) is obj:
            return link_of[id(obj)]
        if number is None:
            number = len(links) + 1
            while number in links:
                number += 1
        links[number] = obj
        link_of[id(obj)] = number
        return number

    class Side:
        """The codec's hooks on this side: handles for objects, links for tensors."""

        def __call__(self, obj):  # a handle for what is not a plain value
            number = len(handles) + 1
            handles[number] = obj
            cls = obj if isinstance(obj, type) else type(obj)
            info = {"$r": number, "ty": type(obj).__name__, "ca": callable(obj),
                    "cl": isinstance(obj, type),
                    "mro": [[c.__module__, c.__qualname__] for c in getattr(cls, "__mro__", ())][:32]}
            try:
                info["n"] = str(getattr(obj, "__name__", ""))[:200]
            except Exception:
                pass
            return info

        def tensor(self, value, data):
            encoded = data()
            if value.grad_fn is not None:  # not linked: nothing changes it but a backward here
                number = len(nodes) + 1
                while number in nodes:
                    number += 1
                nodes[number] = value
                encoded["link"], encoded["node"] = number, True
                return encoded
            encoded["link"] = link(value)
            if value.is_leaf and value.grad is not None:
                encoded["g"] = codec.tensor_data(value.grad)
            seen[encoded["link"]] = fingerprint(value)
            return encoded

    side = Side()

    def from_grader(data):
        """A tensor the grader sends, new (with the grader's number) or one of ours."""
        tensor = codec.tensor_from(data)
        if "g" in data:
            tensor.grad = codec.tensor_from(data["g"])
        if "link" in data:
            link(tensor, int(data["link"]))
            seen[int(data["link"])] = fingerprint(tensor)
        return tensor

    class Unhandle:
        def __call__(self, number, data):
            return handles[number]

        def tensor(self, data):
            return from_grader(data)

        def array(self, data):
            array = codec.array_from(data)
            if "link" in data:
                link(array, int(data["link"]))
                seen[int(data["link"])] = fingerprint(array)
            return array

        def link(self, number):
            return links[number]

        def path(self, text):
            import pathlib
            return pathlib.Path(text)

        def dataclass(self, name, fields):
            """The grader's config object as the notebook's own class of that name (the
            notebooks define their configs), or a plain namespace of its fields."""
            cls = user_namespace().get(name)
            if isinstance(cls, type):
                try:
                    return cls(**fields)
                except TypeError:
                    pass
            import types
            return types.SimpleNamespace(**fields)

    unhandle = Unhandle()

    def decode(data):
        return codec.decode(data, unhandle)

    def apply_sync(updates):
        for number, data, grad in updates:
            target = links.get(int(number))
            if target is not None:
                codec.apply_update(target, data, grad)
                seen[int(number)] = fingerprint(target)

    def changed():
        updates = []
        for number, obj in list(links.items()):
            mark = fingerprint(obj)
            if seen.get(number) != mark:
                updates.append(codec.update_of(number, obj))
                seen[number] = mark
        return updates

    def unlink(number):
        obj = links.pop(number, None)
        seen.pop(number, None)
        if obj is not None and link_of.get(id(obj)) == number:
            del link_of[id(obj)]

    def start_watch(specs):
        import importlib
        from autograder.checks import _core
        forbidden = {}
        for spec in specs:
            if "package" in spec:
                forbidden[str(spec["package"])] = spec.get("name")
                continue
            for module, qualname in spec.get("object", []):
                try:
                    found = importlib.import_module(module)
                    for part in qualname.split("."):
                        found = getattr(found, part)
                except Exception:
                    continue
                forbidden[found] = spec.get("name")
                break
        watching[:] = [_core.Watch(forbidden)]

    def watched(operation):
        if not watching:
            return operation()
        with watching[0]:
            return operation()

    def user_namespace():
        if namespace is not None:
            return namespace
        from IPython import get_ipython
        return get_ipython().user_ns

    def run(request):
        op = request["op"]
        if op == "global":
            name = request["name"]
            names = user_namespace()
            if name not in names:
                raise NameError(f"name '{name}' is not defined")
            return names[name]
        if op == "watch_start":
            return start_watch(request["forbidden"])
        if op == "watch_stop":
            used = list(watching[0].used) if watching else []
            watching.clear()
            return used
        if op == "rng_push":
            torch = torch_module()
            if torch is not None:
                rng_states.append(torch.get_rng_state())
                if request.get("seed") is not None:
                    torch.manual_seed(int(request["seed"]))
            return None
        if op == "rng_pop":
            torch = torch_module()
            if torch is not None and rng_states:
                torch.set_rng_state(rng_states.pop())
            return None
        if op == "backward":
            torch = torch_module()
            output = nodes[int(request["link"])]
            gradient = decode(request["grad"])
            torch.autograd.backward(output, gradient, retain_graph=True)
            return None
        target = handles[request["target"]]
        value = lambda key: decode(request[key])  # noqa: E731
        if op == "watch_look":
            if watching:
                watching[0].look_at(target)
            return None
        if op == "getattr":
            return watched(lambda: getattr(target, request["name"]))
        if op == "setattr":
            return setattr(target, request["name"], value("value"))
        if op == "call":
            args = value("args")
            kwargs = value("kwargs")
            result = watched(lambda: target(*args, **kwargs))
            # The arguments as the call left them: the grader writes changes back into its
            # own (a function that must not change its input is checked for that).
            return {"result": result, "args": args, "kwargs": kwargs}
        if op == "getitem":
            key = value("key")
            return watched(lambda: target[key])
        if op == "setitem":
            target[value("key")] = value("value")
            return None
        if op == "len":
            return watched(lambda: len(target))
        if op == "bool":
            return watched(lambda: bool(target))
        if op == "contains":
            return value("item") in target
        if op == "iter":
            def iterate():
                items = []
                for item in target:
                    items.append(item)
                    if len(items) > 1_000_000:
                        raise ValueError("an iteration of more than a million items")
                return items
            return watched(iterate)
        if op == "repr":
            return repr(target)[:2000]
        if op == "str":
            return str(target)[:2000]
        raise ValueError(f"unknown request {op!r}")

    def in_grad_mode(request, operation):
        torch = torch_module()
        if torch is None or "grad_mode" not in request:
            return operation()
        with torch.set_grad_enabled(bool(request["grad_mode"])):
            return operation()

    class Answer:
        """Shown by IPython as its text exactly: the JSON of the answer."""

        def __init__(self, text):
            self.text = text

        def __repr__(self):
            return self.text

    def rpc(text):
        try:
            request = json.loads(text)
            for number in request.get("drop_nodes", []):
                nodes.pop(number, None)
            for number in request.get("drop", []):
                unlink(number)
            apply_sync(request.get("sync", []))
            result = codec.encode(in_grad_mode(request, lambda: run(request)), side)
            return Answer(json.dumps({"ok": result, "sync": changed()}))
        except BaseException as error:  # the learner's error, carried back as data
            names = [cls.__name__ for cls in type(error).__mro__]
            # The learner's frames only, as the checks show them in a kernel: this helper
            # runs as "<course-judge>", the checks' machinery from the autograder package.
            frames = [f for f in traceback.extract_tb(error.__traceback__)
                      if f.filename != "<course-judge>" and "/autograder/" not in f.filename]
            shown = "".join(traceback.format_list(frames)
                            + traceback.format_exception_only(type(error), error))
            try:
                sync = changed()
            except Exception:
                sync = []
            return Answer(json.dumps({"error": {"types": names, "message": str(error)[:4000],
                                                "traceback": shown[-8000:]}, "sync": sync}))

    def session(path):
        """Answer the grader's requests on the Unix socket at `path` until it says "done":
        one test cell's worth, while this (the kernel's main) thread runs nothing else."""
        import socket
        import struct

        def read(connection, size):
            data = b""
            while len(data) < size:
                chunk = connection.recv(size - len(data))
                if not chunk:
                    raise ConnectionError("the grader closed the connection")
                data += chunk
            return data

        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as connection:
            connection.connect(path)
            while True:
                (size,) = struct.unpack("!Q", read(connection, 8))
                text = read(connection, size).decode()
                if text == "done":
                    return
                answer = repr(rpc(text)).encode()
                connection.sendall(struct.pack("!Q", len(answer)) + answer)

    rpc.session = session
    return rpc
