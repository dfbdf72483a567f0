"""highdicom's tables of the standard: read once, and each IOD question answered once.

highdicom decides what a SOP class allows from JSON tables of the standard it ships
(``highdicom._standard_utils``). Reading them takes half a second to a second, on first
use: in a node's first job, unless :func:`prepare` ran earlier (the pipeline workers
call it at start when a model is loaded). And ``is_attribute_in_iod`` walks every
module of the IOD on each call; highdicom asks it for every source image (is it
multi-frame, has it pixel data), 300 times per SEG of a 300-slice series, always with
the same SOP class: a fifth of the SEG's build time. Its answer depends on its
arguments only, so it is memoised here.

``_standard_utils`` is private to highdicom. If a release renames what is used here,
:func:`prepare` leaves highdicom as it is (correct, only slower) and says so once.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable, Sequence
from typing import Any, Final

from highdicom import _standard_utils as standard

from dicomnode.logs import get_logger

log = get_logger(__name__)

_TABLES: Final = ("get_sop_class_iod_map", "get_iod_module_map", "get_module_attribute_map")
_LOOKUP: Final = "is_attribute_in_iod"
_lock = threading.Lock()
_prepared = False


def prepare() -> None:
    """Read the tables and memoise the IOD lookup, once per process (thread-safe)."""
    global _prepared
    with _lock:
        if _prepared:
            return
        tables: list[Any] = [getattr(standard, name, None) for name in _TABLES]
        lookup: Any = getattr(standard, _LOOKUP, None)
        if callable(lookup) and all(callable(table) for table in tables):
            for table in tables:
                table()
            setattr(standard, _LOOKUP, _memoised(lookup))
        else:
            log.warning("highdicom_tables_unprepared", reason="highdicom's private names changed")
        _prepared = True


def _memoised(lookup: Callable[..., bool]) -> Callable[..., bool]:
    @functools.cache
    def cached(attribute: str, sop_class_uid: str, exclude: tuple[str, ...] | None) -> bool:
        return lookup(attribute, sop_class_uid, None if exclude is None else list(exclude))

    @functools.wraps(lookup)
    def is_attribute_in_iod(
        attribute: str, sop_class_uid: Any, exclude_path_elements: Sequence[str] | None = None
    ) -> bool:
        exclude = None if exclude_path_elements is None else tuple(exclude_path_elements)
        return cached(str(attribute), str(sop_class_uid), exclude)

    return is_attribute_in_iod
