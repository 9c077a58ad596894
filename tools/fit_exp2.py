#!/usr/bin/env python3
"""Fits the polynomial behind exp2_softmax (kernels/cpu/attention_bf16.inc).

The BF16 attentions compute the softmax's exponentials as 2^t = 2^n * 2^f
with n = floor(t) and f = t - n in [0, 1) (one vreduceps; vscalefps then
multiplies by 2^floor(t) itself); 2^f is a polynomial of degree 3, whose
relative error (7.5e-5) is far below the 2^-8 of the BF16 P it becomes (on
[0, 1) the relative error is that of [-1/2, 1/2], 2^f being 2^(f - 1/2)
times a constant). This fit minimizes the maximum relative error of that
polynomial over [0, 1) by Lawson's iteratively reweighted least squares
(weights grow where the error is largest), in float64 on Chebyshev-spaced
points, then rounds the coefficients to float32 and measures the error of the
float Horner evaluation on a dense grid. It prints the error and the
coefficients, highest power first, in the order the kernel's FMAs use them.

Run: python3 tools/fit_exp2.py   (needs numpy)
"""
import numpy as np

DEGREE = 3


def fit(iters=200, npts=4000):
    f = 0.5 + 0.5 * np.cos(np.linspace(0, np.pi, npts))
    y = 2.0 ** f
    a = np.vstack([f ** k for k in range(DEGREE + 1)]).T / y[:, None]
    b = np.ones_like(f)
    w = np.ones_like(f)
    for _ in range(iters):
        sw = np.sqrt(w)
        c = np.linalg.lstsq(a * sw[:, None], b * sw, rcond=None)[0]
        e = np.abs(a @ c - b)
        w = w * e
        w /= w.sum()
    return c


def float_error(c32):
    f = np.linspace(0.0, np.nextafter(np.float32(1), np.float32(0)), 400001).astype(np.float32)
    p = np.zeros_like(f)
    for k in range(DEGREE, -1, -1):
        p = (p * f + c32[k]).astype(np.float32)
    exact = 2.0 ** f.astype(np.float64)
    return float(np.max(np.abs(p.astype(np.float64) - exact) / exact))


def main():
    c32 = fit().astype(np.float32)
    print(f"max relative error of 2^f on [0, 1), float Horner: {float_error(c32):.3g}")
    for k in range(DEGREE, -1, -1):
        print(f"  c{k} = {float(c32[k])!r}f")


if __name__ == "__main__":
    main()
