"""The descriptor every kernel family of kernels/gpu exports as ``FAMILY``.

A family is one CUDA source of kernels/cuda and the launcher module named like it
(``conv_igemm.cu`` <-> ``kernels/gpu/conv_igemm.py``). Its descriptor holds, as plain
data: the source, the tiles precompile builds ahead of the first build (every build's;
INT8 builds' only), the function that compiles given tiles now, and the launch
functions the engine's tactics call. The engine imports the modules directly, so a
tactic names its kernel in Python (``conv_igemm.conv2d_igemm``) and precompile lists
the families it builds (engine/gpu/precompile.py).

    FAMILY = KernelFamily("conv_igemm.cu", compile=compile_all,
                          launch=(conv2d_igemm, conv2d_igemm_splitk, conv2d_igemm_smallc),
                          tiles=ALL_TILES)
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from .errors import UnsupportedError


def _always() -> bool:
    return True


@dataclass(frozen=True)
class KernelFamily:
    """One CUDA source and what is built and launched from it."""
    source: str                         # file name in kernels/cuda
    launch: tuple = ()                  # the launch functions (what tactics call)
    compile: Callable | None = None     # compile(tiles, **options): build those tiles now
    tiles: tuple = ()                   # precompiled for every build
    int8_tiles: tuple = ()              # precompiled for INT8 builds only
    available: Callable = _always       # False where the device cannot run it (sm_90a only)

    @property
    def name(self) -> str:
        """The source's stem, which is also the launcher module's name."""
        return self.source.rsplit(".", 1)[0]

    def tile(self, name: str):
        """A tile of this family by name (``tiles`` or ``int8_tiles``)."""
        for t in self.tiles + self.int8_tiles:
            if t.name == name:
                return t
        valid = ", ".join(t.name for t in self.tiles + self.int8_tiles) or "none"
        raise UnsupportedError(f"{self.name} has no tile {name!r}; valid: {valid}")


def resolve_tactic(tactic, by_name, cls, what, kind=None):
    """``tactic`` (an instance of ``cls`` or the name of one in ``by_name``) as the instance;
    ``kind``: it must also be of that ``kind`` (families whose launchers each take one kind of
    tile). ``what`` names the family in the error (``"wgmma"``: "wgmma tactic 'x'; valid: ...").
    UnsupportedError, listing the valid names, for anything else."""
    if isinstance(tactic, str):
        try:
            tactic = by_name[tactic]
        except KeyError:
            raise UnsupportedError(f"{what} tactic {tactic!r}; valid: {', '.join(by_name)}") from None
    if not isinstance(tactic, cls):
        raise UnsupportedError(f"tactic {tactic!r}; expected a {cls.__name__} or one of {', '.join(by_name)}")
    if kind is not None and tactic.kind != kind:
        valid = [t.name for t in by_name.values() if t.kind == kind]
        raise UnsupportedError(f"tactic {tactic.name!r} is a {tactic.kind!r} tactic; this function "
                               f"takes {kind!r} tactics: {', '.join(valid)}")
    return tactic
