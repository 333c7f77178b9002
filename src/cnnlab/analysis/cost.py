"""The slides' convolution cost arithmetic: a k x k convolution against the same one after a 1x1 reduction.

Lecture 11 ("Why is 1x1 convolution?"): a 5x5 convolution 192 -> 32 channels on 28x28 costs
``5^2 x 28^2 x 192 x 32 = 120,422,400`` multiplications; reducing to 16 channels with a 1x1 convolution
first costs ``1^2 x 28^2 x 192 x 16 + 5^2 x 28^2 x 16 x 32 = 12,443,648`` (the slide prints 12,433,648,
a typo). The case-study slides repeat it for 480 -> 48 at 14x14: 112.9M against 5.3M with 16.
"""

from __future__ import annotations

from dataclasses import dataclass

from cnnlab.errors import check_positive


@dataclass(frozen=True)
class ConvCost:
    """Multiplications of one stride-1 'same' convolution: ``k^2 x size^2 x c_in x c_out``."""

    in_chs: int
    out_chs: int
    kernel: int
    size: int

    @property
    def mults(self) -> int:
        """Multiplications (= MACs) per image."""
        return self.kernel**2 * self.size**2 * self.in_chs * self.out_chs

    def formula(self) -> str:
        """The product written out, as on the slide."""
        return f"{self.kernel}^2 x {self.size}^2 x {self.in_chs} x {self.out_chs} = {self.mults:,}"


@dataclass(frozen=True)
class Comparison:
    """A direct convolution against a 1x1 reduction followed by the same convolution."""

    direct: ConvCost
    reduced: tuple[ConvCost, ConvCost] | None

    @property
    def reduced_mults(self) -> int | None:
        """Total multiplications of the reduced path."""
        return sum(c.mults for c in self.reduced) if self.reduced else None

    @property
    def ratio(self) -> float | None:
        """How many times cheaper the reduced path is."""
        return self.direct.mults / self.reduced_mults if self.reduced else None

    def lines(self) -> list[str]:
        """The arithmetic as printed by ``cnnlab cost conv``."""
        d = self.direct
        out = [
            "multiplications of a stride-1 'same' convolution = k^2 x size^2 x c_in x c_out",
            f"{d.kernel}x{d.kernel} conv {d.in_chs} -> {d.out_chs} on {d.size}x{d.size}: {d.formula()}",
        ]
        if self.reduced:
            first, second = self.reduced
            out += [
                f"with a 1x1 reduction to {first.out_chs} channels:",
                f"  1x1 conv {first.in_chs} -> {first.out_chs}: {first.formula()}",
                f"  {second.kernel}x{second.kernel} conv {second.in_chs} -> {second.out_chs}: {second.formula()}",
                f"  total: {self.reduced_mults:,}",
                f"ratio: {d.mults:,} / {self.reduced_mults:,} = {self.ratio:.2f}x "
                + (
                    "fewer multiplications"
                    if self.ratio >= 1
                    else f"(the reduction costs {1 / self.ratio:.2f}x more)"
                ),
            ]
        return out


def conv_cost(in_chs: int, out_chs: int, kernel: int, size: int, reduce: int | None = None) -> Comparison:
    """Cost of a ``kernel`` x ``kernel`` convolution ``in_chs -> out_chs`` on ``size`` x ``size``, optionally reduced."""
    for label, value in (("--in", in_chs), ("--out", out_chs), ("--kernel", kernel), ("--size", size)):
        check_positive(label, value)
    check_positive("--reduce", reduce)
    direct = ConvCost(in_chs, out_chs, kernel, size)
    reduced = None
    if reduce is not None:
        reduced = (ConvCost(in_chs, reduce, 1, size), ConvCost(reduce, out_chs, kernel, size))
    return Comparison(direct, reduced)
