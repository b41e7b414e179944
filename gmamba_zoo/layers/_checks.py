"""Checks of build arguments: every bad argument of a layer or model fails when it is built, in one error form.

Each check raises before any tensor is made, naming the owner (the layer, the model or the function), the argument,
the value given and what is expected: ``TypeError`` for a value of the wrong type (``d_state=8.0``, a string for a
depth, ``gmamba_kwargs=5``) and for an unknown keyword (as Python does), ``ValueError`` for one of the right type that
is out of range (``d_state=0``, ``freq_cutoff=0.7``). ``arg`` is how the argument is named in the message:
``'d_state'`` for a layer, ``"gmamba_kwargs['d_state']"`` when the model builder checks what the user passed through
to its blocks.

``bool`` is not accepted where a number is expected (``True`` is an ``int`` to Python, never a sensible width), and
numbers must be finite.
"""
from __future__ import annotations

import math
import numbers
from typing import Any, Collection, Mapping, Optional, Sequence, Tuple

__all__ = [
    'check_int', 'check_real', 'check_bool', 'check_choice', 'check_callable', 'check_int_sequence',
    'check_mapping', 'check_keys', 'check_size',
]


def _fail(owner: str, arg: str, expected: str, value: Any, exc: type = ValueError) -> None:
    raise exc(f'{owner}: {arg} must be {expected}, got {value!r}.')


def _is_int(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def check_int(
        owner: str,
        arg: str,
        value: Any,
        minimum: Optional[int] = None,
        odd: bool = False,
        or_literal: Optional[str] = None,
) -> Any:
    """``value`` as an int, if it is an integer (not a bool) >= ``minimum`` (and odd with ``odd``); or the string
    ``or_literal`` itself when given (``dt_rank='auto'``)."""
    expected = ' '.join(filter(None, ['an odd' if odd else 'an', 'int', f'>= {minimum}' if minimum is not None else '',
                                      f'or {or_literal!r}' if or_literal is not None else '']))
    if or_literal is not None and isinstance(value, str):
        if value != or_literal:
            _fail(owner, arg, expected, value)
        return value
    if not _is_int(value):
        _fail(owner, arg, expected, value, TypeError)
    if (minimum is not None and value < minimum) or (odd and value % 2 == 0):
        _fail(owner, arg, expected, value)
    return int(value)


def check_real(
        owner: str,
        arg: str,
        value: Any,
        low: Optional[float] = None,
        high: Optional[float] = None,
        low_open: bool = False,
        high_open: bool = False,
) -> float:
    """``value`` as a float, if it is a finite real number (not a bool) in the interval given by ``low``/``high``."""
    if low is not None and high is not None:
        expected = f'a number in {"(" if low_open else "["}{low}, {high}{")" if high_open else "]"}'
    elif low is not None:
        expected = f'a number {">" if low_open else ">="} {low}'
    elif high is not None:
        expected = f'a number {"<" if high_open else "<="} {high}'
    else:
        expected = 'a finite number'
    if not isinstance(value, numbers.Real) or isinstance(value, bool):
        _fail(owner, arg, expected, value, TypeError)
    if not math.isfinite(value):
        _fail(owner, arg, expected, value)
    if low is not None and (value <= low if low_open else value < low):
        _fail(owner, arg, expected, value)
    if high is not None and (value >= high if high_open else value > high):
        _fail(owner, arg, expected, value)
    return float(value)


def check_bool(owner: str, arg: str, value: Any) -> bool:
    """``value``, if it is a bool."""
    if not isinstance(value, bool):
        _fail(owner, arg, 'True or False', value, TypeError)
    return value


def check_choice(owner: str, arg: str, value: Any, choices: Collection[Any]) -> Any:
    """``value``, if it is one of ``choices``."""
    if value not in tuple(choices):
        _fail(owner, arg, f'one of {tuple(choices)!r}', value)
    return value


def check_callable(owner: str, arg: str, value: Any) -> Any:
    """``value``, if it is callable (a module class or a factory)."""
    if not callable(value):
        _fail(owner, arg, 'callable (a module class or a function returning a module)', value, TypeError)
    return value


def check_int_sequence(
        owner: str,
        arg: str,
        value: Any,
        length: Optional[int] = None,
        minimum: int = 0,
) -> Tuple[int, ...]:
    """``value`` as a tuple of ints, if it is a non-empty sequence (not a string) of ints >= ``minimum``, of
    ``length`` entries when given."""
    count = f'{length}' if length is not None else 'one or more'
    expected = f'a sequence of {count} ints >= {minimum} (one per stage)'
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
        _fail(owner, arg, expected, value, TypeError)
    if not all(_is_int(v) for v in value):
        _fail(owner, arg, expected, value, TypeError)
    if not value or (length is not None and len(value) != length) or any(v < minimum for v in value):
        _fail(owner, arg, expected, value)
    return tuple(int(v) for v in value)


def check_size(owner: str, arg: str, value: Any) -> Tuple[int, int]:
    """``value`` as (H, W), if it is an int >= 1 or a pair of them."""
    expected = 'an int >= 1 or a pair (H, W) of them'
    pair = (value, value) if _is_int(value) else value
    if isinstance(pair, (str, bytes)) or not isinstance(pair, Sequence) or len(pair) != 2 \
            or not all(_is_int(v) for v in pair):
        _fail(owner, arg, expected, value, TypeError)
    if min(pair) < 1:
        _fail(owner, arg, expected, value)
    return int(pair[0]), int(pair[1])


def check_mapping(owner: str, arg: str, value: Any) -> dict:
    """``value`` as a dict, if it is a mapping (None counts as empty) with string keys."""
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        _fail(owner, arg, 'a dict of keyword arguments (or None)', value, TypeError)
    bad = [k for k in value if not isinstance(k, str)]
    if bad:
        _fail(owner, f'every key of {arg}', 'a string (an argument name)', bad[0], TypeError)
    return dict(value)


def check_keys(owner: str, arg: str, keys: Collection[str], allowed: Collection[str]) -> None:
    """Raise ``TypeError`` (as Python does for an unexpected keyword argument) on the first of ``keys`` that is not in
    ``allowed``, listing the allowed ones."""
    unknown = [k for k in keys if k not in allowed]
    if unknown:
        raise TypeError(f'{owner}: unknown key {unknown[0]!r} in {arg}; expected some of {sorted(allowed)}.')
