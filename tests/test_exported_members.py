"""The public surface: __all__ is exactly what tyqw exports, and each name is documented."""

from __future__ import annotations

import inspect

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
