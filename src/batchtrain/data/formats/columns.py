"""Choosing and converting the columns of tabular files (Parquet, CSV) with pyarrow."""
import numpy as np
import pyarrow as pa

from batchtrain.data.formats.base import check_rows_finite
from batchtrain.errors import DataError


def choose_columns(schema: pa.Schema, file: str, target: str | None, features: list[str] | None,
                   target_optional: bool = False) -> tuple[list[str], str | None]:
    """(feature columns, target column) of a file's schema; every one must exist and be numeric.

    features=None: every column but the target. target_optional (prediction): a target column
    missing from the file gives target None."""
    names = list(schema.names)
    if target is None and not target_optional:
        raise DataError(f"{file} is a table: name the target column with --target (target=...); "
                        f"its columns are {_short(names)}")
    features = [name for name in names if name != target] if features is None else list(features)
    if target_optional and target not in names:
        target = None
    for column in [*features, *([target] if target is not None else [])]:
        if column not in names:
            raise DataError(f"column {column!r} not found in {file}; its columns are {_short(names)}")
        kind = schema.field(column).type
        if not (pa.types.is_integer(kind) or pa.types.is_floating(kind) or pa.types.is_boolean(kind)):
            hint = "choose the feature columns with --features" if column != target else \
                "the target must hold numbers (class indices or values)"
            raise DataError(f"column {column!r} in {file} holds {kind}, not numbers; {hint}, or "
                            "encode it as numbers")
    if target in features:
        raise DataError(f"column {target!r} is both the target and a feature; drop it from --features")
    if not features:
        raise DataError(f"{file} has no feature columns besides the target {target!r}")
    return features, target


def table_to_arrays(table: pa.Table, features: list[str], target: str | None,
                    where: tuple[str, int]) -> tuple[np.ndarray | None, np.ndarray]:
    """(x float32 (rows, features), y int64/float32) from a pyarrow table; nulls and NaN refused.
    x is None without features, y zeros without a target.

    where: (file, the file's row where the table starts), for error messages."""
    x = None
    if features:
        x = np.empty((table.num_rows, len(features)), dtype=np.float32)
        for index, column in enumerate(features):
            x[:, index] = column_values(table.column(column), column, where)
        check_rows_finite(x, where, "a feature", features)
    y = np.zeros(table.num_rows, dtype=np.float32)  # no target column: predicting
    if target is not None:
        y = column_values(table.column(target), target, where)
        y = y.astype(np.int64) if y.dtype.kind in "iub" else y.astype(np.float32, copy=False)
        check_rows_finite(y, where, "the target", [target])
    return x, y


def column_values(column: pa.ChunkedArray, name: str, where: tuple[str, int]) -> np.ndarray:
    """A numeric column as a numpy array; a null (missing value) is an error naming its row."""
    if column.null_count:
        first = next(offset + index for offset, index in _null_positions(column))
        raise DataError(f"{where[0]} row {where[1] + first}: column {name!r} is empty (null; "
                        f"{column.null_count} in this block); fill or drop missing values")
    return column.to_numpy()


def _null_positions(column: pa.ChunkedArray):
    offset = 0
    for chunk in column.chunks:
        if chunk.null_count:
            mask = chunk.is_null().to_numpy(zero_copy_only=False)
            yield offset, int(np.flatnonzero(mask)[0])
        offset += len(chunk)


def _short(names: list[str]) -> str:
    return ", ".join(repr(name) for name in names[:12]) + (" ..." if len(names) > 12 else "")
