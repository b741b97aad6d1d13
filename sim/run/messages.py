"""The schema of every message a worker sends the master, checked before the master reads a field.

The transport (:mod:`threedb.sim.transport`) has already checked the framing (JSON header, declared
array dtypes and sizes). Here each message type gets its typed header (:class:`pydantic.BaseModel`,
unknown fields refused) and, for a render's ``result``, its arrays: ``rgb`` (``uint8``
``H x W x 3`` at the run's resolution) and only passes the run asked for, each with its documented dtype
and shape (see :mod:`threedb.sim.render.outputs`). :func:`parse` raises :class:`MessageError` with the
reason; the master drops such a message, counts it and keeps serving.
"""
from __future__ import annotations

from typing import Annotated, Any, Literal, Mapping, Optional, Sequence, Union

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr, TypeAdapter, ValidationError

#: job ids, worker ids and error texts stay short (a log line, a dict key)
Id = Annotated[StrictStr, Field(min_length=1, max_length=256)]
Text = Annotated[StrictStr, Field(max_length=20_000)]
#: render passes: dtype and the shape after ``H x W``
PASS_LAYOUT: dict[str, tuple[type, tuple[int, ...]]] = {
    "depth": (np.float32, ()), "mask": (np.bool_, ()), "uv": (np.float32, (2,))}


class MessageError(ValueError):
    """A message that does not follow the protocol (the reason names the field)."""


class _Message(BaseModel):
    model_config = ConfigDict(extra="forbid")
    v: Literal[1] = 1
    wid: Id
    role: Literal["render", "evaluator"]
    seq: Optional[StrictInt] = None


class Heartbeat(_Message):
    type: Literal["heartbeat"]
    job_id: Optional[Id] = None                         #: a render worker's job in progress
    batch: Optional[Annotated[StrictInt, Field(ge=0)]] = None   #: an evaluator's batch size in progress


class Hello(_Message):
    type: Literal["hello"]


class Ready(_Message):
    type: Literal["ready"]
    batch_size: Optional[Annotated[StrictInt, Field(ge=1, le=4096)]] = None


class Bye(_Message):
    type: Literal["bye"]


class Fatal(_Message):
    type: Literal["fatal"]
    error: Text


class Result(_Message):
    type: Literal["result"]
    job_id: Id
    meta: dict[StrictStr, Any] = Field(default_factory=dict)


class Failed(_Message):
    type: Literal["failed"]
    job_id: Id
    error: Text = ""
    crashed: bool = False


class EvaluatorOutput(BaseModel):
    model_config = ConfigDict(extra="forbid")
    job_id: Id
    outputs: dict[StrictStr, Any]


class Outputs(_Message):
    type: Literal["outputs"]
    results: Annotated[list[EvaluatorOutput], Field(max_length=4096)]
    batch_size: Optional[Annotated[StrictInt, Field(ge=1, le=4096)]] = None


class EvalFailed(_Message):
    type: Literal["eval_failed"]
    job_ids: Annotated[list[Id], Field(max_length=4096)]
    error: Text = ""
    trace: Text = ""
    batch_size: Optional[Annotated[StrictInt, Field(ge=1, le=4096)]] = None


Message = Annotated[Union[Heartbeat, Hello, Ready, Bye, Fatal, Result, Failed, Outputs, EvalFailed],
                    Field(discriminator="type")]
_ADAPTER: TypeAdapter = TypeAdapter(Message)
#: the types a render worker / an evaluator may send
ROLE_TYPES = {"render": {"heartbeat", "hello", "ready", "bye", "fatal", "result", "failed"},
              "evaluator": {"heartbeat", "hello", "ready", "bye", "fatal", "outputs", "eval_failed"}}


def parse(header: Mapping[str, Any], arrays: Mapping[str, np.ndarray], *, resolution: tuple[int, int],
          passes: Sequence[str]) -> Any:
    """The typed message of ``header`` (a :data:`Message` member), its arrays checked; raises
    :class:`MessageError`. ``resolution`` is the run's (width, height), ``passes`` the passes it sends."""
    try:
        message = _ADAPTER.validate_python(dict(header))
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "header"
        raise MessageError(f"{header.get('type')!r} message: {where}: {first['msg']}") from None
    if message.type not in ROLE_TYPES[message.role]:
        raise MessageError(f"a {message.role} worker does not send {message.type!r} messages")
    if message.type == "result":
        check_frames(arrays, resolution, passes)
    elif arrays:
        raise MessageError(f"{message.type!r} messages carry no arrays, got {sorted(arrays)[:5]}")
    return message


def check_frames(arrays: Mapping[str, np.ndarray], resolution: tuple[int, int], passes: Sequence[str]) -> None:
    """A render's arrays: ``rgb``, and only passes the run asked for, each with its dtype and ``H x W`` shape.
    A requested pass may be missing (the scene's ``render.passes`` decide; the evaluator then says so)."""
    width, height = resolution
    if "rgb" not in arrays:
        raise MessageError(f"a render's arrays must include 'rgb', got {sorted(arrays)[:8]}")
    unexpected = sorted(set(arrays) - {"rgb", *passes})
    if unexpected:
        raise MessageError(f"a render's arrays may be 'rgb' and {sorted(passes)}, got {unexpected[:8]} too")
    layouts = {"rgb": (np.uint8, (3,)), **PASS_LAYOUT}
    for name, array in arrays.items():
        if name not in layouts:   # a pass without a documented layout: at least an image of the run's size
            if array.shape[:2] != (height, width):
                raise MessageError(f"array {name!r}: expected {height} x {width} x ..., got {list(array.shape)}")
            continue
        dtype, trailing = layouts[name]
        shape = (height, width, *trailing)
        if array.dtype != np.dtype(dtype) or array.shape != shape:
            raise MessageError(f"array {name!r}: expected {np.dtype(dtype).name} {list(shape)}, got "
                               f"{array.dtype.name} {list(array.shape)}")


__all__ = ["Message", "MessageError", "PASS_LAYOUT", "ROLE_TYPES", "check_frames", "parse"]
