"""The public surface: __all__ is exactly what tyqw exports, and each name is documented."""

from __future__ import annotations

import ast
import importlib
import inspect
import types
from pathlib import Path

import pytest

import tyqw
import tyqw.sse
import tyqw.testing


def test_all_lists_exactly_the_public_names() -> None:
    """Every public attribute of tyqw is in __all__ and every __all__ entry exists."""
    public = {
        name
        for name, value in vars(tyqw).items()
        if not name.startswith("_") and not inspect.ismodule(value)
    }
    public.add("__version__")
    assert set(tyqw.__all__) == public
    assert len(tyqw.__all__) == len(set(tyqw.__all__))


def test_public_names_have_docstrings_with_examples() -> None:
    """Each exported class and function has a docstring; the main ones show an example."""
    for name in tyqw.__all__:
        value = getattr(tyqw, name)
        if inspect.isclass(value) or inspect.isfunction(value):
            assert inspect.getdoc(value), name
    for value in (
        tyqw.Session,
        tyqw.Message,
        tyqw.Reply,
        tyqw.TyqwError,
        tyqw.stored_conversations,
    ):
        assert "Example" in (inspect.getdoc(value) or ""), value
    for module in (tyqw.sse, tyqw.testing):
        for name in module.__all__:
            assert inspect.getdoc(getattr(module, name)), f"{module.__name__}.{name}"


def test_errors_form_one_tree() -> None:
    """Every exported exception derives from TyqwError."""
    errors = [
        v for v in vars(tyqw).values() if inspect.isclass(v) and issubclass(v, BaseException)
    ]
    assert len(errors) > 10
    assert all(issubclass(e, tyqw.TyqwError) for e in errors)
    assert issubclass(tyqw.APITimeoutError, tyqw.APIConnectionError)
    assert issubclass(tyqw.IncompleteStreamError, tyqw.StreamError)
    for cls in (tyqw.BadRequestError, tyqw.RateLimitError, tyqw.InternalServerError):
        assert issubclass(cls, tyqw.APIStatusError)


def test_version() -> None:
    """__version__ is the package version string."""
    from importlib.metadata import version

    assert tyqw.__version__ == version("tyqw")


# Every public name of tyqw 0.1.0: code outside the package uses them.
NAMES_OF_0_1 = {
    "tyqw": (
        "DEFAULT_BASE_URL APIConnectionError APIStatusError APITimeoutError "
        "AuthenticationError BadRequestError EventTooLargeError HandlerError "
        "IncompleteStreamError InternalServerError Message MessageStream MissingAPIKeyError "
        "NotFoundError Options PermissionDeniedError RateLimitError Reply Session "
        "SessionClosedError StoredConversation StreamError TyqwError "
        "UnexpectedContentTypeError __version__ stored_conversations"
    ),
    "tyqw.testing": "BailianSimulator Fault SimRequest default_reply run_offline",
    "tyqw.sse": "SSEDecoder ServerSentEvent",
}


def test_every_public_name_of_0_1_is_still_there() -> None:
    """0.1's names are a contract: each is still exported from the same module."""
    for module_name, names in NAMES_OF_0_1.items():
        module = importlib.import_module(module_name)
        for name in names.split():
            assert name in module.__all__ and hasattr(module, name), f"{module_name}.{name}"


def test_tyqw_stores_exports_the_contract_and_the_shipped_stores() -> None:
    """tyqw.stores lists the Store contract and the stores tyqw ships; the names it
    listed before and dropped still import, with a DeprecationWarning."""
    import tyqw.stores

    assert "StoreError" not in tyqw.stores.__all__
    assert not {"TurnLock", "begin_turn", "end_turn"} & set(tyqw.stores.__all__)
    for name in ("StoreError", "TurnLock", "begin_turn", "end_turn"):
        with pytest.deprecated_call(match=f"tyqw.stores.{name}"):
            assert getattr(tyqw.stores, name) is not None
    with pytest.deprecated_call():
        from tyqw.stores import StoreError
    assert StoreError is tyqw.StoreError


def test_the_submodules_document_what_they_export() -> None:
    """tyqw.stores and tyqw.relay: every exported name has a docstring."""
    for module_name in ("tyqw.stores", "tyqw.relay"):
        module = importlib.import_module(module_name)
        for name in module.__all__:
            value = getattr(module, name)
            if isinstance(value, types.GenericAlias):
                continue  # a type alias (a class to inspect on Python 3.10)
            if inspect.isclass(value) or inspect.isfunction(value):
                assert inspect.getdoc(value), f"{module_name}.{name}"


def _imports_at_load(path: Path, package: str) -> set[str]:
    """The tyqw modules ``path`` imports when it is loaded (not inside functions, not
    under TYPE_CHECKING)."""
    found: set[str] = set()
    tree = ast.parse(path.read_text(encoding="utf-8"))
    for node in tree.body:
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            continue
        for inner in [node, *(node.body if isinstance(node, ast.Try) else [])]:
            if isinstance(inner, ast.ImportFrom):
                if inner.level:
                    base = package.split(".")
                    base = base[: len(base) - inner.level + 1]
                    target = ".".join([*base, *([inner.module] if inner.module else [])])
                else:
                    target = inner.module or ""
                if target.startswith("tyqw"):
                    found.add(target)
                    for alias in inner.names:  # "from . import _models"
                        if f"{target}.{alias.name}" in _MODULES:
                            found.add(f"{target}.{alias.name}")
            elif isinstance(inner, ast.Import):
                found.update(a.name for a in inner.names if a.name.startswith("tyqw"))
    return found


_ROOT = Path(tyqw.__file__).parent
_MODULES = {
    ".".join(("tyqw", *p.relative_to(_ROOT).with_suffix("").parts)).removesuffix(".__init__"): p
    for p in _ROOT.rglob("*.py")
}


def test_imports_go_one_way() -> None:
    """No import cycle among tyqw's modules at load time; models and exceptions import
    nothing of tyqw, and no module below the Session imports it."""
    graph = {}
    for name, path in _MODULES.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        graph[name] = {m for m in _imports_at_load(path, package) if m != name}
    assert graph["tyqw._models"] <= {"tyqw._exceptions"} or not graph["tyqw._models"]
    assert not graph["tyqw._exceptions"]
    for low in ("tyqw._turn", "tyqw._protocol", "tyqw._config", "tyqw._events", "tyqw.sse"):
        assert "tyqw._session" not in graph[low] and "tyqw" not in graph[low], low
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(name: str, path: list[str]) -> None:
        state[name] = 1
        for target in sorted(graph.get(name, ())):
            if target.startswith("tyqw._cli") or target not in graph:
                continue
            if state.get(target) == 1 and not _is_package_of(target, name):
                raise AssertionError("import cycle: " + " -> ".join([*path, name, target]))
            if target not in state:
                visit(target, [*path, name])
        state[name] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name, [])


def _is_package_of(package: str, module: str) -> bool:
    """A package's __init__ importing its own submodules is not a cycle."""
    return module.startswith(package + ".")
