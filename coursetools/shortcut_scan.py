"""What the learner's cells refer to, read on the grader's side: evidence of a forbidden
shortcut that the learner's kernel cannot hide.

The checks' watch for forbidden shortcuts (`_core.refuse_shortcuts`) runs in the kernel,
beside the learner's code, which could switch it off. This scan reads the submitted cells
themselves, in the grader, before anything of them runs. It cannot see everything (a
name built from strings at run time escapes it), so it adds to the watch, never replaces
it; what it does see, the kernel cannot take back:

- a forbidden object (`nn.Linear`, `F.scaled_dot_product_attention`, a package such as
  `rank_bm25`) named inside a function or class the learner wrote, given another name at
  the top level (`Linear = nn.Linear`, `from torch.nn import Linear`), or looked up by
  name (`getattr(nn, "Linear")`, `importlib.import_module("peft")`);
- anything that can switch off or read around the grader's watch (`sys.setprofile`,
  torch's function modes, frame and garbage-collector inspection, ctypes, the grader's own
  names), anywhere in the learner's cells.

Only the cells the learner writes count: nbgrader's solution cells and cells the learner
added. The given cells are put back from the assignment by nbgrader before grading; a
learner's experiment at the top level (`nn.MultiheadAttention(8, 2)(x, x, x)` to compare)
is not a shortcut and is not reported.
"""
from __future__ import annotations

import ast
import dataclasses
import re
from typing import Any, Iterable

# Whatever can switch off the kernel's watch or reach around it: a learner's exercise never
# needs one of these. Dotted names as the scan resolves them (module aliases followed).
TAMPERING = {
    "sys.setprofile": "sys.setprofile", "sys.settrace": "sys.settrace",
    "sys._getframe": "sys._getframe", "sys.monitoring": "sys.monitoring",
    "threading.setprofile": "threading.setprofile", "threading.settrace": "threading.settrace",
    "gc.get_objects": "gc.get_objects", "gc.get_referrers": "gc.get_referrers",
    "gc.get_referents": "gc.get_referents", "inspect.currentframe": "inspect.currentframe",
    "inspect.stack": "inspect.stack", "ctypes": "ctypes",
    "torch.overrides": "torch.overrides (torch's function modes)",
    "torch.utils._python_dispatch": "torch's dispatch modes",
    "torch._C._set_torch_function_mode": "torch._C._set_torch_function_mode",
    "torch._C._pop_torch_function_stack": "torch._C._pop_torch_function_stack",
    "torch._C._push_on_torch_function_stack": "torch._C._push_on_torch_function_stack",
    "torch._C.DisableTorchFunction": "torch._C.DisableTorchFunction",
    "torch._C.DisableTorchFunctionSubclass": "torch._C.DisableTorchFunctionSubclass",
    "autograder": "the grader's checks (autograder)",
}
# Names of the grader's helper in the kernel (judge.py, judge_kernel.py).
GRADER_NAMES = ("__course",)
LOOKUPS = {"getattr", "__import__", "importlib.import_module", "eval", "exec", "vars", "globals"}


@dataclasses.dataclass(frozen=True)
class Reference:
    """One dotted name a learner's cell refers to."""
    dotted: str
    cell: int      # the cell's index in the notebook
    line: int      # 1-based, in the cell
    text: str      # the line, for the message
    defined: bool  # inside a function or class body, or bound to a name at the top level

    def where(self) -> str:
        return f"cell {self.cell}, line {self.line}: `{self.text.strip()[:80]}`"


def is_learner_cell(cell: Any, given: frozenset[str] = frozenset()) -> bool:
    """A code cell the learner writes: a solution cell, or one without nbgrader's marks that
    is not one of the assignment's `given` cells as they are (so the learner added or
    changed it; nbgrader puts back the cells it locks and its test cells)."""
    if cell.get("cell_type") != "code":
        return False
    info = (cell.get("metadata") or {}).get("nbgrader") or {}
    if info.get("solution"):
        return True
    if info.get("grade") or info.get("locked"):
        return False
    return (cell.get("source") or "") not in given


def given_cells(cells: Iterable[Any]) -> frozenset[str]:
    """The sources of the code cells the assignment gives (its source notebook's cells that
    are neither solution nor test cells)."""
    return frozenset(c.get("source") or "" for c in cells if c.get("cell_type") == "code"
                     and not ((c.get("metadata") or {}).get("nbgrader") or {}).get("solution"))


def _python(source: str) -> ast.Module | None:
    """The cell's code as Python (IPython's magics and shell escapes turned into calls)."""
    try:
        from IPython.core.inputtransformer2 import TransformerManager
        source = TransformerManager().transform_cell(source)
    except Exception:  # no IPython here, or a cell it cannot read: try it as it is
        pass
    try:
        return ast.parse(source)
    except (SyntaxError, ValueError):
        return None


class _Names(ast.NodeVisitor):
    """Collects the dotted names a cell refers to, module aliases followed."""

    def __init__(self, aliases: dict[str, str], cell: int, lines: list[str], record: bool):
        self.aliases, self.cell, self.lines, self.record = aliases, cell, lines, record
        self.found: list[Reference] = []
        self.depth = 0  # >0 inside a def, lambda or class

    def _add(self, dotted: str, node: ast.AST, defined: bool = False) -> None:
        if not self.record:
            return
        line = getattr(node, "lineno", 1)
        text = self.lines[line - 1] if 0 < line <= len(self.lines) else ""
        self.found.append(Reference(dotted, self.cell, line, text, defined or self.depth > 0))

    def resolve(self, node: ast.AST) -> str | None:
        if isinstance(node, ast.Name):
            return self.aliases.get(node.id)
        if isinstance(node, ast.Attribute):
            base = self.resolve(node.value)
            return None if base is None else f"{base}.{node.attr}"
        return None

    def _scoped(self, node: ast.AST) -> None:
        self.depth += 1
        self.generic_visit(node)
        self.depth -= 1

    # A class's bases count as inside it: subclassing nn.Linear is using it.
    visit_FunctionDef = visit_AsyncFunctionDef = visit_Lambda = visit_ClassDef = _scoped

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            if alias.asname:
                self.aliases[alias.asname] = alias.name
            else:
                top = alias.name.split(".")[0]
                self.aliases[top] = top
            if not self._harmless_use_of_checks(alias.name, node):
                self._add(alias.name, node)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        if node.level or not node.module:
            return
        if not self._harmless_use_of_checks(node.module, node):
            self._add(node.module, node)
        for alias in node.names:
            dotted = f"{node.module}.{alias.name}"
            self.aliases[alias.asname or alias.name] = dotted
            # Binding a forbidden object to a name is what `Linear = nn.Linear` does.
            if not self._harmless_use_of_checks(dotted, node):
                self._add(dotted, node, defined=True)

    def visit_Assign(self, node: ast.Assign) -> None:
        target = self.resolve(node.value)
        if target is not None:
            self._add(target, node, defined=True)
            for name in node.targets:
                if isinstance(name, ast.Name):
                    self.aliases[name.id] = target
        self.generic_visit(node)

    def visit_Attribute(self, node: ast.Attribute) -> None:
        dotted = self.resolve(node)
        if dotted is not None and not self._harmless_use_of_checks(dotted, node):
            self._add(dotted, node)
        self.generic_visit(node)

    def visit_Name(self, node: ast.Name) -> None:
        if node.id.startswith(GRADER_NAMES):
            self._add(node.id, node, defined=True)
        dotted = self.aliases.get(node.id)
        if dotted is not None and dotted != node.id and not self._harmless_use_of_checks(dotted, node):
            self._add(dotted, node)

    @staticmethod
    def _harmless_use_of_checks(dotted: str, node: ast.AST) -> bool:
        """A use of the checks (`checks.check_x(f)`, a data folder the given cells name, the
        given cell's import copied into the learner's own): reading or importing a public
        name is not tampering (the checks run in the grader); setting, deleting or reaching a
        private one (`_core`, where the kernel's watch lives) is."""
        if not (dotted == "autograder" or dotted.startswith("autograder.")):
            return False
        if isinstance(getattr(node, "ctx", None), (ast.Store, ast.Del)):
            return False
        return not any(part.startswith("_") for part in dotted.split("."))

    def visit_Call(self, node: ast.Call) -> None:
        # A lookup by name: getattr(nn, "Linear"), importlib.import_module("peft"), ...
        function = node.func.id if isinstance(node.func, ast.Name) else self.resolve(node.func)
        if function in LOOKUPS and node.args:
            strings = [a.value for a in node.args if isinstance(a, ast.Constant) and isinstance(a.value, str)]
            base = self.resolve(node.args[0]) if function == "getattr" else None
            for text in strings:
                self._add(f"{base}.{text}" if base else text, node, defined=True)
        self.generic_visit(node)

    def visit_Constant(self, node: ast.Constant) -> None:
        # A module path of the checks or a name of the grader's helper, spelled as a string
        # (sys.modules["autograder.checks._core"], a startswith over module names); not a
        # docstring that mentions the autograder.
        if isinstance(node.value, str) and re.fullmatch(r"autograder(\.\w+)*|__course\w*", node.value):
            self._add("autograder" if node.value.startswith("autograder") else "__course", node,
                      defined=True)


class Scan:
    """The references of a notebook's learner cells; `shortcuts(forbidden)` and
    `tampering()` say which of them a check must count."""

    def __init__(self, cells: Iterable[Any], given: frozenset[str] = frozenset()):
        aliases: dict[str, str] = {}
        self.references: list[Reference] = []
        self.given_imports: set[str] = set()  # top-level packages the given cells import
        for index, cell in enumerate(cells):
            if cell.get("cell_type") != "code":
                continue
            tree = _python(cell.get("source") or "")
            if tree is None:
                continue
            # Every cell's imports make aliases (the given cells import torch and nn); only
            # the learner's cells are read for references.
            learners = is_learner_cell(cell, given)
            names = _Names(aliases, index, (cell.get("source") or "").splitlines(), learners)
            names.visit(tree)
            if not learners:
                for node in ast.walk(tree):
                    if isinstance(node, ast.Import):
                        self.given_imports.update(a.name.split(".")[0] for a in node.names)
                    elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                        self.given_imports.add(node.module.split(".")[0])
            self.references.extend(names.found)

    def shortcuts(self, places: dict[str, str], packages: Iterable[str] = ()) -> list[str]:
        """What a check's watch notes: `places` maps a forbidden thing's dotted name (or a
        package's) to the name its message shows. A forbidden package (among `packages`)
        that the given cells import themselves is left to the watch: it is refused in one
        function only (torch in `count_parameters`) and the learner uses it elsewhere."""
        places = {d: shown for d, shown in places.items()
                  if not (d in packages and d.split(".")[0] in self.given_imports)}
        noted: list[str] = []
        for ref in self.references:
            if not ref.defined:
                continue
            for dotted, shown in places.items():
                if ref.dotted == dotted or ref.dotted.startswith(dotted + "."):
                    entry = f"{shown} ({ref.where()})"
                    if entry not in noted:
                        noted.append(entry)
        return noted

    def tampering(self) -> list[str]:
        noted: list[str] = []
        for ref in self.references:
            shown = None
            if ref.dotted.startswith(GRADER_NAMES):
                shown = "the grader's helper"
            else:
                for dotted, name in TAMPERING.items():
                    if ref.dotted == dotted or ref.dotted.startswith(dotted + "."):
                        shown = name
                        break
            if shown is not None:
                entry = f"{shown} in {ref.where()}"
                if entry not in noted:
                    noted.append(entry)
        return noted


def places_of(specs: list[dict]) -> dict[str, str]:
    """The dotted names of the forbidden things `judge.describe_forbidden` described, each
    with the name a message shows."""
    places: dict[str, str] = {}
    for spec in specs:
        shown = str(spec.get("name") or spec.get("package") or "")
        if "package" in spec:
            places[str(spec["package"])] = shown
        for module, qualname in spec.get("object", []):
            places[f"{module}.{qualname}"] = shown or qualname
    return places
