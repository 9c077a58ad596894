#!/usr/bin/env python3
"""Fits the rational erf behind gelu_erf_v (kernels/cpu/f32_body.inc).

GELU(v) = v * Phi(v), Phi(v) = 1/2 + erf(v / sqrt 2) / 2. On [-C, C] the kernel
uses Phi(v) ~ 1/2 + v * P(v^2) / Q(v^2), P and Q of degree 5, Q(0) = 1 (odd in
v, so the fit is on [0, C]); outside, v is clamped to +-C, where Phi is 1 or 0
to within Phi(-C) (C = 5.4: 3.3e-8, so GELU there is off by ~3.3e-8 |v|).

The fit minimizes the maximum absolute error of Phi (GELU's absolute error is
|v| times it) by Lawson's iteratively reweighted least squares on the
linearized residual (x P - f Q) / Q_prev (Sanathanan-Koerner), in float64 in
the scaled variable t = (v / C)^2, then converts to powers of s = v^2 and
rounds to float32. It prints the errors (the float64 fit, the same with the
float32 coefficients) and the C++ Horner lines of gelu_erf_v. Evaluating in
float adds rounding on top: the gelu test in tests/unit/test_kernels.cpp
measures and bounds the kernels' GELU error.

With --poly, it fits instead the polynomial behind gelu_erf_q_v, the GELU of
outputs that are quantized to 8 bits next: Phi(v) ~ 1/2 + v P(v^2) on
[-CQ, CQ] (CQ = 4.25), P of degree DQ = 8, no division (14 vector operations instead of 20),
minimax absolute error of Phi by Lawson's iteration on the linear residual;
it prints the errors and the Horner lines the same way.

With --table, it fits the AVX-512 form of gelu_erf_q_v instead: GELU(v) =
|v| G(|v|) / 2 + v / 2 with G(a) = erf(a / sqrt 2) and G as 32 quadratics in
t = u - floor(u), u = min(|v| KT, 32^-), KT = 32 / CT, CT = 5 (each fitted by
Lawson's iteration for its minimax absolute error, but the last, G = 1
exactly, which makes GELU exactly 0 below -4.84 without a clamp on v):
three 32-entry lookups (vpermt2ps) and two FMAs where the polynomial
takes nine FMAs. It prints the worst GELU error over max(1, |v|), evaluated
in float32 as the kernel does (FMAs), and the three coefficient tables (of
G / 2, which the kernel uses).

Run: python3 tools/fit_gelu_erf.py [--poly | --table]   (needs numpy)
"""
import sys
import math

import numpy as np

C, M, N = 5.4, 5, 5  # clamp, degree of P, degree of Q (in s = v^2)
CQ, DQ = 4.25, 8     # --poly: clamp, degree of P (in s = v^2)


def lawson(a, f, iters):
    """Minimax fit of f by the columns of a (Lawson's iteratively reweighted
    least squares): (max |error|, coefficients) of the best iterate."""
    w, best = np.ones(len(f)), None
    for _ in range(iters):
        sw = np.sqrt(w)
        sol = np.linalg.lstsq(a * sw[:, None], f * sw, rcond=None)[0]
        e = a @ sol - f
        if best is None or np.abs(e).max() < best[0]:
            best = (np.abs(e).max(), sol)
        w = w * np.abs(e)  # weight where the error is large
        w /= w.sum()
    return best


def fit_poly(iters=300, npts=6000):
    x = CQ * (1 - np.cos(np.linspace(0, np.pi, npts))) / 2
    f = np.array([0.5 * math.erf(v / math.sqrt(2)) for v in x])
    t = (x / CQ) ** 2
    a = np.stack([x * t**k for k in range(DQ + 1)], 1)
    err, sol = lawson(a, f, iters)
    p = np.float32([sol[k] / CQ ** (2 * k) for k in range(DQ + 1)])
    return err, p


def main_poly():
    err64, p = fit_poly()
    v = np.linspace(0, CQ, 200001).astype(np.float32)
    s = v * v
    acc = np.full_like(v, p[-1])
    for c in p[-2::-1]:  # float32 Horner, as the kernel evaluates it
        acc = (acc * s + c).astype(np.float32)
    approx = (v * acc + np.float32(0.5)).astype(np.float64)
    want = np.array([0.5 + 0.5 * math.erf(float(x) / math.sqrt(2)) for x in v])
    print(f"// CQ = {CQ}, P degree {DQ}")
    print(f"// max |Phi error|: fit {err64:.2e}, float32 Horner {np.abs(approx - want).max():.2e}; "
          f"tail Phi(-CQ) = {0.5 * math.erfc(CQ / math.sqrt(2)):.2e}")
    print(f"  vf p = vf{{}} + {float(p[-1]):.9e}f;")
    for c in p[-2::-1]:
        print(f"  p = p * s + {float(c):.9e}f;")


def fit(iters=300, npts=6000):
    x = C * (1 - np.cos(np.linspace(0, np.pi, npts))) / 2  # Chebyshev spacing on [0, C]
    f = np.array([0.5 * math.erf(v / math.sqrt(2)) for v in x])
    t = (x / C) ** 2
    A0 = np.hstack([np.stack([x * t**k for k in range(M + 1)], 1),       # p_0..p_M
                    np.stack([-f * t**k for k in range(1, N + 1)], 1)])  # q_1..q_N
    w, q_prev, best = np.ones_like(x), np.ones_like(x), None
    for _ in range(iters):
        sw = np.sqrt(w) / q_prev
        sol = np.linalg.lstsq(A0 * sw[:, None], f * sw, rcond=None)[0]
        q_prev = 1 + sum(sol[M + k] * t**k for k in range(1, N + 1))
        e = x * sum(sol[k] * t**k for k in range(M + 1)) / q_prev - f
        if best is None or np.abs(e).max() < best[0]:
            best = (np.abs(e).max(), sol)
        w = w * np.abs(e)  # Lawson: weight where the error is large
        w /= w.sum()
    sol = best[1]
    # t^k = s^k / C^(2k): coefficients in powers of s, rounded to float32.
    p = np.float32([sol[k] / C ** (2 * k) for k in range(M + 1)])
    q = np.float32([1.0] + [sol[M + k] / C ** (2 * k) for k in range(1, N + 1)])
    return best[0], p, q


def main():
    err64, p, q = fit()
    v = np.linspace(0, C, 200001)
    s = v * v
    approx = 0.5 + v * np.polyval(p[::-1].astype(float), s) / np.polyval(q[::-1].astype(float), s)
    want = np.array([0.5 + 0.5 * math.erf(x / math.sqrt(2)) for x in v])
    print(f"// C = {C}, P degree {M}, Q degree {N}")
    print(f"// max |Phi error|: fit {err64:.2e}, float32 coefficients "
          f"{np.abs(approx - want).max():.2e}; tail Phi(-C) = {0.5 * math.erfc(C / math.sqrt(2)):.2e}")
    print(f"// clamp: lo = max_b(-{C}f, v), x = min_b({C}f, lo), s = x * x")
    for name, cs in (("p", p), ("q", q)):  # Horner, highest power first
        print(f"  vf {name} = vf{{}} + {float(cs[-1]):.9e}f;")
        for c in cs[-2::-1]:
            print(f"  {name} = {name} * s + {float(c):.9e}f;")

CT, ST = 5.0, 32  # --table: clamp, segments


def fit_table(iters=200, npts=400):
    kt = ST / CT
    tn = (1 - np.cos(np.linspace(0, np.pi, npts))) / 2  # Chebyshev spacing on [0, 1]
    a = np.stack([tn**j for j in range(3)], 1)
    out = []
    for i in range(ST - 1):
        f = np.array([math.erf((i + t) / kt / math.sqrt(2)) for t in tn])
        out.append(lawson(a, f, iters)[1])
    # The last segment (|v| >= CT (ST - 1) / ST = 4.84) is G = 1 exactly, so
    # that |v| G/2 + v/2 is exactly 0 for any v <= -4.84 and exactly v for v
    # >= 4.84: the kernel need not clamp v below for finite v (GELU's error
    # there is at most 4.84 (1 - Phi(4.84)) = 3.1e-6).
    out.append(np.array([1.0, 0.0, 0.0]))
    return np.float32(kt), np.float32(out)  # [ST][3]: c0, c1, c2


def table_gelu(v, kt, c):
    """The kernel's float32 evaluation (FMAs rounded once)."""
    f32 = np.float32
    v = v.astype(f32)
    vl = v  # (the kernel's clamp at -CT changes nothing for finite v: see fit_table)
    a = np.abs(vl)
    u = np.minimum((a * kt).astype(f32), np.nextafter(f32(ST), f32(0)))
    i = u.astype(np.int32)
    t = (u - i.astype(f32)).astype(f32)
    g = (c[i, 2].astype(np.float64) * t + c[i, 1]).astype(f32)
    g = (g.astype(np.float64) * t + c[i, 0]).astype(f32)
    # The kernel's tables hold G / 2 (exact halves), and it computes
    # |v| G/2 + v/2 in one FMA: no overflow for |v| near the float maximum.
    return (a.astype(np.float64) * (g * f32(0.5)) + vl * f32(0.5)).astype(f32), g


def main_table():
    kt, c = fit_table()
    v = np.concatenate([np.arange(-120000, 120001) * 1e-4, np.linspace(-50, 50, 100001)]).astype(np.float32)
    y, g = table_gelu(v, kt, c)
    exact = np.array([0.5 * float(x) * math.erfc(-float(x) / math.sqrt(2)) for x in v])
    err = np.abs(y - exact) / np.maximum(1.0, np.abs(v.astype(np.float64)))
    print(f"// CT = {CT}, {ST} quadratics, KT = {float(kt):.9e}")
    print(f"// worst |GELU error| / max(1, |v|): {err.max():.2e} at v = {float(v[err.argmax()])}; "
          f"max G {float(g.max()):.9f} (must stay <= 1: GELU(v < 0) <= 0)")
    for j in range(3):
        vals = ", ".join(f"{float(x):.9e}f" for x in c[:, j] * np.float32(0.5))
        print(f"alignas(64) constexpr float kGeluQC{j}[{ST}] = {{{vals}}};")


if __name__ == "__main__":
    if "--poly" in sys.argv[1:]:
        main_poly()
    elif "--table" in sys.argv[1:]:
        main_table()
    else:
        main()
