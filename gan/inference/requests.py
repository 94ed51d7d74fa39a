"""Request rows as a served model receives them, checked field by field before any work.

    rows = request_rows(model_input, FIELDS, "n, labels, seed, truncation or z")
    n = whole_number("n", row["n"], low=1)

Why the runners check the raw rows themselves
---------------------------------------------
The column-based tasks (``generate``, ``translate``) are logged without an input schema.
MLflow's column enforcement runs before a pyfunc sees a request and would hide what is
wrong with it: it drops unknown fields (a misspelt ``lables`` would be ignored), casts
``n: 2.5`` to 2 and ``"3"`` to 3, and wraps ``n: 9223372036854775808`` to a negative
number. Here every field is checked as sent: one sentence naming the field and the value.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable
from typing import Any

import numpy as np
import pandas as pd
from mlflow.exceptions import MlflowException

from gan.errors import GanError


def request_rows(model_input: Any, fields: Iterable[str], what: str) -> list[dict[str, Any]]:
    """A table, a dict or a list of dicts -> request dicts without gaps; unknown fields are refused.

    ``fields`` are the field names a row may hold; ``what`` names them in the error for an
    input that is neither a table nor JSON records. Refusals raise MlflowException (HTTP 400).
    """
    if isinstance(model_input, pd.DataFrame):
        rows = model_input.to_dict(orient="records")
    elif isinstance(model_input, dict):
        rows = [model_input]
    elif isinstance(model_input, list) and all(isinstance(row, dict) for row in model_input):
        rows = list(model_input)
    else:
        raise MlflowException.invalid_parameter_value(
            f"input of type {type(model_input).__name__} is not understood; send a table or JSON records with {what}."
        )
    allowed = list(fields)
    out = []
    for row in rows:
        unknown = [str(k) for k in row if k not in allowed]
        if unknown:
            raise MlflowException.invalid_parameter_value(
                f"a request row has the unknown field {unknown[0]!r}; a row may hold {', '.join(allowed)}."
            )
        out.append({k: plain(v) for k, v in row.items() if not missing(v)})
    return out


def missing(value: Any) -> bool:
    """A gap a table fills in for a field one row gives and another does not (None or NaN)."""
    if value is None:
        return True
    return isinstance(value, float) and math.isnan(value)


def plain(value: Any) -> Any:
    """numpy scalars and 0-d arrays -> Python numbers; 1-d arrays of integers -> lists (others stay arrays)."""
    if isinstance(value, np.generic) or isinstance(value, np.ndarray) and value.ndim == 0:
        return value.item()  # a 0-d array: a scalar of the {"inputs": {...}} format
    if isinstance(value, np.ndarray) and value.ndim == 1 and value.dtype.kind in "iub":
        return value.tolist()
    return value


def whole_number(key: str, value: Any, low: int | None = None, high: int | None = None) -> int:
    """``value`` as an int: an integer, or a float with no fraction (a table with gaps sends floats).

    Strings, booleans, fractions and non-finite values are refused, as are values outside
    ``low..high``; the message names ``key`` and the value as sent.
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise GanError(f"{key} = {value!r} is invalid; it must be a whole number, not {type(value).__name__}.")
    if isinstance(value, numbers.Integral):
        number = int(value)
    elif math.isfinite(value) and float(value).is_integer():
        number = int(value)
    else:
        raise GanError(f"{key} = {value!r} is invalid; it must be a whole number.")
    if low is not None and number < low or high is not None and number > high:
        bounds = f"from {low} to {high}" if low is not None and high is not None else f"at least {low}" if low is not None else f"at most {high}"
        raise GanError(f"{key} = {number} is invalid; it must be {bounds}.")
    return number


def real_number(key: str, value: Any) -> float:
    """``value`` as a finite float; strings, booleans and NaN/inf are refused."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        raise GanError(f"{key} = {value!r} is invalid; it must be a finite number.")
    return float(value)
