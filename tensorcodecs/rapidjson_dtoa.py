"""rapidjson 1.1.0's double to text (internal/dtoa.h, diyfp.h), which TF Serving's
JsonValueToDebugString uses for the numbers it quotes: Grisu2 digits (which round-trip but are
not always the shortest or the closest: 2.2642311506022175e-205 where Python's repr says
...173e-205), then Prettify's layout (`100000000000000000000.0`, `1e21`, `0.000001`, `1e-7`)."""

from __future__ import annotations

import math
import struct

_MASK64 = (1 << 64) - 1
_HIDDEN_BIT = 1 << 52
_SIGNIFICAND_MASK = _HIDDEN_BIT - 1
_EXPONENT_BIAS = 0x3FF + 52
_POW10 = (1, 10, 100, 1000, 10000, 100000, 1000000, 10000000, 100000000, 1000000000)


def _cached_power(k: int) -> tuple[int, int]:
    """10**k as a 64-bit significand (rounded to nearest) and a binary exponent: the table
    diyfp.h carries (kCachedPowers_F / _E)."""
    if k >= 0:
        value = 10**k
        e = value.bit_length() - 64
        f = (value + (1 << (e - 1))) >> e if e > 0 else value << -e
        return f, e
    n = 10**-k
    s = n.bit_length() + 63
    return (2**s + n // 2) // n, -s


_CACHED_POWERS = tuple(_cached_power(-348 + 8 * i) for i in range(87))


def rapidjson_double(value: float) -> str:
    """Writer::Double's text of a finite double."""
    if value == 0:
        return "-0.0" if math.copysign(1.0, value) < 0 else "0.0"
    sign = "-" if value < 0 else ""
    digits, k = _grisu2(abs(value))
    return sign + _prettify(digits, k)


def _grisu2(value: float) -> tuple[str, int]:
    """The digits of `value` and their decimal exponent (value ~ digits * 10**k)."""
    bits = struct.unpack("<Q", struct.pack("<d", value))[0]
    biased_e = bits >> 52
    if biased_e:
        f, e = (bits & _SIGNIFICAND_MASK) + _HIDDEN_BIT, biased_e - _EXPONENT_BIAS
    else:
        f, e = bits & _SIGNIFICAND_MASK, -_EXPONENT_BIAS + 1
    plus_f, plus_e = _normalize_boundary((f << 1) + 1, e - 1)
    minus_f, minus_e = ((f << 2) - 1, e - 2) if f == _HIDDEN_BIT else ((f << 1) - 1, e - 1)
    minus_f <<= minus_e - plus_e
    cached_f, cached_e, k = _cached_power_for(plus_e)
    shift = 64 - f.bit_length()
    w = _multiply(f << shift, e - shift, cached_f, cached_e)
    wp = _multiply(plus_f, plus_e, cached_f, cached_e)
    wm = _multiply(minus_f, plus_e, cached_f, cached_e)
    wp_f, wm_f = wp[0] - 1, wm[0] + 1
    return _digit_gen(w[0], wp_f, wp[1], wp_f - wm_f, k)


def _normalize_boundary(f: int, e: int) -> tuple[int, int]:
    while not f & (_HIDDEN_BIT << 1):
        f, e = f << 1, e - 1
    return f << 10, e - 10


def _multiply(f: int, e: int, g: int, h: int) -> tuple[int, int]:
    """DiyFp::operator*: the high 64 bits of the product, rounded."""
    product = f * g
    high = product >> 64
    if product & (1 << 63):
        high += 1
    return high & _MASK64, e + h + 64


def _cached_power_for(e: int) -> tuple[int, int, int]:
    dk = (-61 - e) * 0.30102999566398114 + 347
    k = int(dk)
    if dk - k > 0.0:
        k += 1
    index = (k >> 3) + 1
    f, binary_e = _CACHED_POWERS[index]
    return f, binary_e, -(-348 + (index << 3))


def _digit_gen(w_f: int, mp_f: int, mp_e: int, delta: int, k: int) -> tuple[str, int]:
    one_shift = -mp_e
    one_f = 1 << one_shift
    wp_w = (mp_f - w_f) & _MASK64
    p1 = (mp_f >> one_shift) & 0xFFFFFFFF
    p2 = mp_f & (one_f - 1)
    kappa = min(len(str(p1)), 9)  # CountDecimalDigit32 (1 for 0)
    buffer: list[int] = []
    while kappa > 0:
        divisor = _POW10[kappa - 1]
        d, p1 = divmod(p1, divisor)
        if d or buffer:
            buffer.append(d)
        kappa -= 1
        rest = (p1 << one_shift) + p2
        if rest <= delta:
            _round(buffer, delta, rest, _POW10[kappa] << one_shift, wp_w)
            return "".join(map(str, buffer)), k + kappa
    while True:
        p2 = (p2 * 10) & _MASK64
        delta = (delta * 10) & _MASK64
        d = p2 >> one_shift
        if d or buffer:
            buffer.append(d)
        p2 &= one_f - 1
        kappa -= 1
        if p2 < delta:
            index = -kappa
            _round(buffer, delta, p2, one_f, (wp_w * (_POW10[index] if index < 9 else 0)) & _MASK64)
            return "".join(map(str, buffer)), k + kappa


def _round(buffer: list[int], delta: int, rest: int, ten_kappa: int, wp_w: int) -> None:
    """GrisuRound: move the last digit down while that brings the text closer to the value."""
    while (rest < wp_w and delta - rest >= ten_kappa
           and (rest + ten_kappa < wp_w or wp_w - rest > rest + ten_kappa - wp_w)):
        buffer[-1] -= 1
        rest += ten_kappa


def _prettify(digits: str, k: int) -> str:
    """dtoa.h's Prettify (324 decimal places at most, which no double reaches)."""
    length = len(digits)
    kk = length + k  # 10**(kk-1) <= value < 10**kk
    if k >= 0 and kk <= 21:
        return f"{digits}{'0' * k}.0"
    if 0 < kk <= 21:
        return f"{digits[:kk]}.{digits[kk:]}"
    if -6 < kk <= 0:
        return f"0.{'0' * -kk}{digits}"
    mantissa = digits if length == 1 else f"{digits[0]}.{digits[1:]}"
    return f"{mantissa}e{kk - 1}"


_SIGNIFICAND_53 = (1 << 53) - 1


def rapidjson_number(token: str) -> int | float:
    """The number rapidjson's Reader reads from a JSON number token, as TF Serving parses
    requests (kParseFullPrecisionFlag unset): integers within 64 bits exactly; others as a
    double built digit by digit, with digits past the 17th dropped and one multiplication or
    division by a power of ten, so long or very large numbers can differ from the nearest
    double (2.5236874343042183e+206 reads as ...188e206, 188364806940185954666 as
    1.88364806940186e20)."""
    minus = token.startswith("-")
    text = token[1:] if minus else token
    mantissa, _, exponent = text.replace("E", "e").partition("e")
    whole, dot, fraction = mantissa.partition(".")
    limit = 2**63 if minus else 2**64 - 1
    value, significant, index = int(whole[0]), 0, 1
    if value:
        while index < len(whole) and value * 10 + int(whole[index]) <= limit:
            value = value * 10 + int(whole[index])
            significant += 1
            index += 1
    double: float | None = None
    if index < len(whole):  # past 64 bits: a double from here on
        double = float(value)
        for digit in whole[index:]:
            double = double * 10 + int(digit)
    exp_frac = 0
    if dot:
        digits = iter(fraction)
        if double is None:
            for digit in digits:
                if value > _SIGNIFICAND_53:
                    digits = iter((digit, *digits))
                    break
                value = value * 10 + int(digit)
                exp_frac -= 1
                if value:
                    significant += 1
            double = float(value)
        for digit in digits:
            if significant < 17:
                double = double * 10.0 + int(digit)
                exp_frac -= 1
                if double > 0.0:
                    significant += 1
    if exponent:
        if double is None:
            double = float(value)
        exp = int(exponent)
    else:
        exp = 0
    if double is None:
        return -value if minus else value
    p = exp + exp_frac
    double = _fast_path(_fast_path(double, -308), p + 308) if p < -308 else _fast_path(double, p)
    return -double if minus else double


def _fast_path(significand: float, exp: int) -> float:
    if exp < -308:
        return 0.0
    if exp >= 0:
        return significand * float(f"1e{exp}")
    return significand / float(f"1e{-exp}")
