"""The adder convolution's CPU kernels, numpy in and numpy out, compiled by numba.

    Y[n,o,i,j] = - sum_{c,u,v} | Xpad[n, c, i*s+u, j*s+v] - W[o,c,u,v] |

No torch here: the ONNX Runtime operator runs these kernels in processes that never import it.
The torch op (adder_op.py) calls them on the tensors' memory without copies.

Forward: the work is split into blocks of output pixels of one image; each block gathers its
receptive fields into a small (pixels x C*kh*kw) buffer that stays in cache, then takes the L1
distances of a register tile of four pixels and two filters at a time, the inner loop over
C*kh*kw vectorised.
Nothing of size (out_channels x C*kh*kw x N*H*W), as in the reference implementation, is
ever made.

Backward (AdderNet): with the gradient G of Y,
    dW[o,k] = sum_{n,p} G[n,o,p] * (X_col[n,p,k] - W[o,k])           (full-precision difference)
            = sum_n (G_n X_col_n)[o,k] - W[o,k] * sum_{n,p} G[n,o,p]
    dX_col[n,p,k] = sum_o G[n,o,p] * HardTanh(W[o,k] - X_col[n,p,k])  (then folded back onto X)
where X_col holds the zero-padded receptive fields, so padding contributes to dW as in the
paper's unfold-based code. Work is split over images; each worker keeps its own dW partial
and one image's receptive fields at a time.

The kernels index without bounds checks, so the entry points below check the geometry first
(adder_geometry.check). Calls are serialised by a lock: each call already uses every core, and
numba's workqueue threading layer (where OpenMP and TBB are absent) aborts the process when two
threads enter parallel code at once, as they do when an ONNX Runtime session is shared.
"""

import threading

import numpy as np
from numba import get_num_threads, njit, prange

from kdforge.nn.adder_geometry import check

_PIXELS_PER_BLOCK = 32
_FILTERS_PER_BLOCK = 16


@njit(inline="always", fastmath=True)
def _gather(x, n, p0, p1, wo, kh, kw, sh, sw, ph, pw, cols):
    c_in, h, w = x.shape[1], x.shape[2], x.shape[3]
    for p in range(p0, p1):
        i, j = p // wo, p % wo
        row = cols[p - p0]
        for c in range(c_in):
            for u in range(kh):
                hi = i * sh - ph + u
                for v in range(kw):
                    wj = j * sw - pw + v
                    inside = 0 <= hi < h and 0 <= wj < w
                    row[(c * kh + u) * kw + v] = x[n, c, hi, wj] if inside else np.float32(0)


@njit(inline="always")
def _store4(out, n, o, p, a0, a1, a2, a3):
    out[n, o, p] = -a0
    out[n, o, p + 1] = -a1
    out[n, o, p + 2] = -a2
    out[n, o, p + 3] = -a3


@njit(parallel=True, fastmath=True, cache=True)
def _forward(x, w2, kh, kw, sh, sw, ph, pw, ho, wo):
    n_img, n_out, k_len = x.shape[0], w2.shape[0], w2.shape[1]
    pixels = ho * wo
    blocks = (pixels + _PIXELS_PER_BLOCK - 1) // _PIXELS_PER_BLOCK
    out = np.empty((n_img, n_out, pixels), np.float32)
    for task in prange(n_img * blocks):
        n, p0 = task // blocks, (task % blocks) * _PIXELS_PER_BLOCK
        p1 = min(p0 + _PIXELS_PER_BLOCK, pixels)
        cols = np.empty((_PIXELS_PER_BLOCK, k_len), np.float32)
        _gather(x, n, p0, p1, wo, kh, kw, sh, sw, ph, pw, cols)
        q = 0
        while q + 4 <= p1 - p0:  # a register tile of 4 pixels x 2 filters: each load serves two filters
            o = 0
            while o + 2 <= n_out:
                a0 = a1 = a2 = a3 = b0 = b1 = b2 = b3 = np.float32(0)
                for k in range(k_len):
                    w0, w1 = w2[o, k], w2[o + 1, k]
                    x0, x1, x2, x3 = cols[q, k], cols[q + 1, k], cols[q + 2, k], cols[q + 3, k]
                    a0 += abs(x0 - w0)
                    a1 += abs(x1 - w0)
                    a2 += abs(x2 - w0)
                    a3 += abs(x3 - w0)
                    b0 += abs(x0 - w1)
                    b1 += abs(x1 - w1)
                    b2 += abs(x2 - w1)
                    b3 += abs(x3 - w1)
                _store4(out, n, o, p0 + q, a0, a1, a2, a3)
                _store4(out, n, o + 1, p0 + q, b0, b1, b2, b3)
                o += 2
            if o < n_out:
                a0 = a1 = a2 = a3 = np.float32(0)
                for k in range(k_len):
                    wk = w2[o, k]
                    a0 += abs(cols[q, k] - wk)
                    a1 += abs(cols[q + 1, k] - wk)
                    a2 += abs(cols[q + 2, k] - wk)
                    a3 += abs(cols[q + 3, k] - wk)
                _store4(out, n, o, p0 + q, a0, a1, a2, a3)
            q += 4
        for r in range(q, p1 - p0):
            for o in range(n_out):
                acc = np.float32(0)
                for k in range(k_len):
                    acc += abs(cols[r, k] - w2[o, k])
                out[n, o, p0 + r] = -acc
    return out


@njit(parallel=True, fastmath=True, cache=True)
def _backward(x, w2, grad, kh, kw, sh, sw, ph, pw, ho, wo, workers):
    n_img, c_in, h, w = x.shape
    n_out, k_len = w2.shape
    pixels = ho * wo
    grad_x = np.zeros_like(x)
    dw_parts = np.zeros((workers, n_out, k_len), np.float32)
    gsum_parts = np.zeros((workers, n_out), np.float32)
    for worker in prange(workers):
        cols = np.empty((pixels, k_len), np.float32)
        gcols = np.empty((pixels, k_len), np.float32)
        for n in range(worker, n_img, workers):
            _gather(x, n, 0, pixels, wo, kh, kw, sh, sw, ph, pw, cols)
            g_n = grad[n]  # (n_out, pixels)
            dw = dw_parts[worker]
            for o in range(n_out):  # sum_p G X_col, one dW row (in L1) at a time
                dwrow = dw[o]
                for p in range(pixels):
                    g = g_n[o, p]
                    gsum_parts[worker, o] += g
                    xrow = cols[p]
                    for k in range(k_len):
                        dwrow[k] += g * xrow[k]
            gcols[:] = 0
            for o0 in range(0, n_out, _FILTERS_PER_BLOCK):  # a block of filters stays in cache over all pixels
                o1 = min(o0 + _FILTERS_PER_BLOCK, n_out)
                for p in range(pixels):
                    xrow, grow = cols[p], gcols[p]
                    for o in range(o0, o1):
                        g = g_n[o, p]
                        wrow = w2[o]
                        for k in range(k_len):
                            grow[k] += g * min(max(wrow[k] - xrow[k], np.float32(-1)), np.float32(1))
            for p in range(pixels):  # fold the receptive-field gradients back onto the image
                i, j = p // wo, p % wo
                for c in range(c_in):
                    for u in range(kh):
                        hi = i * sh - ph + u
                        if 0 <= hi < h:
                            for v in range(kw):
                                wj = j * sw - pw + v
                                if 0 <= wj < w:
                                    grad_x[n, c, hi, wj] += gcols[p, (c * kh + u) * kw + v]
    dw_total = dw_parts.sum(axis=0) - w2 * gsum_parts.sum(axis=0).reshape(n_out, 1)
    return grad_x, dw_total


_kernel_lock = threading.Lock()


def _geometry(x: np.ndarray, w: np.ndarray, strides, pads, where: str):
    _, _, ho, wo = check(x.shape, w.shape, strides, pads, where)
    return (*strides, *pads, ho, wo)


def adder_conv2d_forward(x: np.ndarray, w: np.ndarray, strides=(1, 1), pads=(0, 0), where: str = "adder_conv2d") -> np.ndarray:
    """Y (N, O, Ho, Wo) of the adder convolution; float32, C-contiguous in and out. `where` names
    the layer or node in the error a malformed geometry gets."""
    x, w = np.ascontiguousarray(x, np.float32), np.ascontiguousarray(w, np.float32)
    sh, sw, ph, pw, ho, wo = _geometry(x, w, strides, pads, where)
    with _kernel_lock:
        out = _forward(x, w.reshape(w.shape[0], -1), w.shape[2], w.shape[3], sh, sw, ph, pw, ho, wo)
    return out.reshape(x.shape[0], w.shape[0], ho, wo)


def adder_conv2d_backward(x: np.ndarray, w: np.ndarray, grad: np.ndarray, strides=(1, 1), pads=(0, 0)):
    """(dX, dW) of AdderNet's backward, before any adaptive rescaling of dW."""
    x, w = np.ascontiguousarray(x, np.float32), np.ascontiguousarray(w, np.float32)
    sh, sw, ph, pw, ho, wo = _geometry(x, w, strides, pads, "adder_conv2d backward")
    grad = np.ascontiguousarray(grad, np.float32)
    if grad.shape != (x.shape[0], w.shape[0], ho, wo):
        raise ValueError(f"adder_conv2d backward: gradient of shape {grad.shape}, expected {(x.shape[0], w.shape[0], ho, wo)}")
    grad = grad.reshape(x.shape[0], w.shape[0], ho * wo)
    workers = max(1, min(get_num_threads(), x.shape[0]))
    with _kernel_lock:
        grad_x, dw = _backward(x, w.reshape(w.shape[0], -1), grad, w.shape[2], w.shape[3], sh, sw, ph, pw, ho, wo, workers)
    return grad_x, dw.reshape(w.shape)
