"""The kernel's side of the judge: answers the grader's requests about the learner's objects.

This source (with judge_codec's) is sent into the learner's kernel and run there, so it
imports nothing of the course. It runs among the learner's code and trusts nothing: it only
carries requests in and values out. Whatever it answers, the grader decides the score.

`serve(codec)` returns the function the grader calls through a Jupyter user expression:
`__course_rpc__('<request as JSON>')`, whose text is the JSON answer.
"""


def serve(codec, namespace=None):
    """`namespace`: where the learner's names live (the IPython user namespace if None)."""
    import json
    import traceback

    handles = {}
    watching = []  # the grader's watch for forbidden shortcuts, while it is on

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

    def handle(obj):
        number = len(handles) + 1
        handles[number] = obj
        info = {"$r": number, "ty": type(obj).__name__, "ca": callable(obj),
                "cl": isinstance(obj, type)}
        try:
            info["n"] = str(getattr(obj, "__name__", ""))[:200]
        except Exception:
            pass
        return info

    def unhandle(number, _data):
        return handles[number]

    def user_namespace():
        if namespace is not None:
            return namespace
        from IPython import get_ipython
        return get_ipython().user_ns

    def run(request):
        op = request["op"]
        if op == "global":
            name = request["name"]
            namespace = user_namespace()
            if name not in namespace:
                raise NameError(f"name '{name}' is not defined")
            return namespace[name]
        if op == "release":
            for number in request["ids"]:
                handles.pop(number, None)
            return None
        if op == "watch_start":
            return start_watch(request["forbidden"])
        if op == "watch_stop":
            used = list(watching[0].used) if watching else []
            watching.clear()
            return used
        target = handles[request["target"]]
        if op == "watch_look":
            if watching:
                watching[0].look_at(target)
            return None
        value = lambda key: codec.decode(request[key], unhandle)  # noqa: E731
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
        if op == "isinstance":
            return isinstance(target, value("cls"))
        raise ValueError(f"unknown request {op!r}")

    class Answer:
        """Shown by IPython as its text exactly: the JSON of the answer."""

        def __init__(self, text):
            self.text = text

        def __repr__(self):
            return self.text

    def rpc(text):
        try:
            result = run(json.loads(text))
            return Answer(json.dumps({"ok": codec.encode(result, handle)}))
        except BaseException as error:  # the learner's error, carried back as data
            names = [cls.__name__ for cls in type(error).__mro__]
            # The learner's frames only, as the checks show them in a kernel: this helper
            # runs as "<course-judge>", the checks' machinery from the autograder package.
            frames = [f for f in traceback.extract_tb(error.__traceback__)
                      if f.filename != "<course-judge>" and "/autograder/" not in f.filename]
            shown = "".join(traceback.format_list(frames)
                            + traceback.format_exception_only(type(error), error))
            return Answer(json.dumps({"error": {"types": names, "message": str(error)[:4000],
                                                "traceback": shown[-8000:]}}))

    return rpc
