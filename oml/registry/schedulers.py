"""LR schedulers by name (``torch.optim.lr_scheduler``): ``SCHEDULERS_REGISTRY``, ``get_scheduler[_by_cfg]``."""

import ast
import math
from typing import Any, Callable, Dict, List, Optional, Union

from torch.optim import Optimizer, lr_scheduler

from oml.registry._base import build_by_cfg_for, build_from_registry

TLambda = Union[str, Callable[[int], float]]

_FUNCTIONS: Dict[str, Any] = {
    "min": min,
    "max": max,
    "abs": abs,
    "exp": math.exp,
    "log": math.log,
    "sqrt": math.sqrt,
    "cos": math.cos,
    "sin": math.sin,
    "floor": math.floor,
    "ceil": math.ceil,
    "pi": math.pi,
}
_ALLOWED_NODES = (
    ast.Expression,
    ast.Lambda,
    ast.arguments,
    ast.arg,
    ast.Name,
    ast.Load,
    ast.Constant,
    ast.BinOp,
    ast.UnaryOp,
    ast.Call,
    ast.IfExp,
    ast.Compare,
    ast.BoolOp,
    ast.operator,
    ast.unaryop,
    ast.cmpop,
    ast.boolop,
)


def parse_lr_lambda(lr_lambda: TLambda) -> Callable[[int], float]:
    """A callable from a callable, or from a string: ``"lambda epoch: 0.95 ** epoch"`` or ``"0.95 ** epoch"``.

    Strings come from configs, so they are not ``eval``-ed blindly: only arithmetic, comparisons,
    conditional expressions, numbers, the argument and ``min, max, abs, exp, log, sqrt, cos, sin,
    floor, ceil, pi`` are allowed.

    >>> parse_lr_lambda("lambda epoch: 0.5 ** epoch")(3)
    0.125
    >>> parse_lr_lambda("__import__('os')")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: lr_lambda may only use arithmetic on the argument and [...], got '__import__'.
    """
    if callable(lr_lambda):
        return lr_lambda
    if not isinstance(lr_lambda, str):
        raise TypeError(f"lr_lambda must be a callable or a string expression, got {type(lr_lambda).__name__}.")
    text = lr_lambda.strip()
    if not text.startswith("lambda"):
        text = f"lambda epoch: {text}"
    try:
        tree = ast.parse(text, mode="eval")
    except SyntaxError as e:
        raise ValueError(f"lr_lambda {lr_lambda!r} is not a valid expression: {e}.") from None
    body = tree.body
    if not isinstance(body, ast.Lambda) or len(body.args.args) != 1 or body.args.vararg or body.args.kwarg:
        raise ValueError(f"lr_lambda must be a lambda of one argument, got {lr_lambda!r}.")
    allowed_names = set(_FUNCTIONS) | {body.args.args[0].arg}
    for node in ast.walk(tree):
        if not isinstance(node, _ALLOWED_NODES):
            raise ValueError(f"lr_lambda may not contain {type(node).__name__} nodes: {lr_lambda!r}.")
        if isinstance(node, ast.Name) and node.id not in allowed_names:
            raise ValueError(
                f"lr_lambda may only use arithmetic on the argument and {sorted(_FUNCTIONS)}, got {node.id!r}."
            )
        if isinstance(node, ast.Call) and (not isinstance(node.func, ast.Name) or node.keywords):
            raise ValueError(f"lr_lambda may only call {sorted(_FUNCTIONS)} with positional arguments: {lr_lambda!r}.")
        if isinstance(node, ast.Constant) and not isinstance(node.value, (int, float)):
            raise ValueError(f"lr_lambda may only contain numbers as constants, got {node.value!r}.")
    return eval(compile(tree, "<lr_lambda>", "eval"), {"__builtins__": {}, **_FUNCTIONS})  # noqa: S307 (validated)


def _parse_lambdas(lr_lambda: Union[TLambda, List[TLambda]]) -> Union[Callable[[int], float], List[Callable]]:
    if isinstance(lr_lambda, (list, tuple)):
        return [parse_lr_lambda(f) for f in lr_lambda]
    return parse_lr_lambda(lr_lambda)


class LambdaLR(lr_scheduler.LambdaLR):
    """``torch.optim.lr_scheduler.LambdaLR`` whose ``lr_lambda`` may also be a string (see ``parse_lr_lambda``)."""

    def __init__(self, optimizer: Optimizer, lr_lambda: Union[TLambda, List[TLambda]], last_epoch: int = -1):
        super().__init__(optimizer, _parse_lambdas(lr_lambda), last_epoch=last_epoch)


class MultiplicativeLR(lr_scheduler.MultiplicativeLR):
    """``torch.optim.lr_scheduler.MultiplicativeLR`` whose ``lr_lambda`` may also be a string."""

    def __init__(self, optimizer: Optimizer, lr_lambda: Union[TLambda, List[TLambda]], last_epoch: int = -1):
        super().__init__(optimizer, _parse_lambdas(lr_lambda), last_epoch=last_epoch)


class ReduceLROnPlateauPatch(lr_scheduler.ReduceLROnPlateau):
    """``ReduceLROnPlateau`` with ``get_last_lr()`` returning the current learning rates of the param groups."""

    def get_last_lr(self) -> List[float]:
        return [float(group["lr"]) for group in self.optimizer.param_groups]


SCHEDULERS_REGISTRY: Dict[str, Any] = {
    "lambda": LambdaLR,
    "multiplicative": MultiplicativeLR,
    "step": lr_scheduler.StepLR,
    "multi_step": lr_scheduler.MultiStepLR,
    "exponential": lr_scheduler.ExponentialLR,
    "cosine_annealing": lr_scheduler.CosineAnnealingLR,
    "cyclic": lr_scheduler.CyclicLR,
    "one_cycle": lr_scheduler.OneCycleLR,
    "reduce_on_plateau": ReduceLROnPlateauPatch,
}


def get_scheduler(name: str, optimizer: Optimizer, **kwargs: Any) -> Any:
    """Build the scheduler registered as ``name`` for ``optimizer``.

    >>> import torch
    >>> opt = torch.optim.SGD(torch.nn.Linear(2, 2).parameters(), lr=1.0)
    >>> get_scheduler("multi_step", optimizer=opt, milestones=[1, 2], gamma=0.1).get_last_lr()
    [1.0]
    """
    return build_from_registry(SCHEDULERS_REGISTRY, "scheduler", name, {**kwargs, "optimizer": optimizer})


def get_scheduler_by_cfg(cfg: Any, optimizer: Optional[Optimizer] = None, **kwargs_runtime: Any) -> Any:
    """Build a scheduler from ``{"name": ..., "args": {...}}`` for ``optimizer``."""
    return build_by_cfg_for(SCHEDULERS_REGISTRY, "scheduler", cfg, "optimizer", optimizer, kwargs_runtime)


__all__ = [
    "SCHEDULERS_REGISTRY",
    "LambdaLR",
    "MultiplicativeLR",
    "ReduceLROnPlateauPatch",
    "parse_lr_lambda",
    "get_scheduler",
    "get_scheduler_by_cfg",
]
