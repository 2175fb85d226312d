"""Host integer helpers for the launch paths, which run per prefill layer. ``triton.cdiv`` and
``triton.next_power_of_2`` are Triton ConstexprFunctions since 3.6: about 2 µs per call from Python on a CPU
(s29), several per launch."""


def cdiv(a: int, b: int) -> int:
    """⌈a / b⌉ for ints (triton.cdiv's value)."""
    return -(-a // b)


def next_pow2(n: int) -> int:
    """The smallest power of two ≥ n, for n ≥ 1 (triton.next_power_of_2's value)."""
    return 1 if n <= 1 else 1 << (n - 1).bit_length()
