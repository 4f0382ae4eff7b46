"""Integer settings for the CPU an INT8 file will run on (`export.int8_cpu`).

ONNX Runtime's x86 kernels multiply uint8 activations by int8 weights (U8S8). With VNNI,
VPDPBUSD sums four such products straight into int32. Without it (AVX2, and AVX-512 without
VNNI), VPMADDUBSW adds pairs of them into a saturating int16 first: 2 x 255 x 127 = 64,770 does
not fit, and a student whose activations and weights are both large in one place loses top-1
agreement (ONNX Runtime's "Quantize ONNX models" guide: try reduce_range or U8U8 there). With
7-bit weights (reduce_range), 2 x 255 x 64 = 32,640 fits, so nothing saturates and the same fast
kernels run; U8U8 keeps 8-bit weights without saturation on slower kernels, and is the second
choice there, for a student whose accuracy 7-bit weights cost (benchmarks/low_precision_end_to_end.py
measures all four pairings side by side). On 64-bit ARM, S8S8 QDQ is ONNX Runtime's first
choice: its dot-product (SDOT) and widening kernels accumulate without saturation.

A file's target and scheme are written into its metadata_props (`kdforge.int8_cpu`,
`kdforge.int8_scheme`), so that whoever runs it, verify included, can tell which CPU it was made for.
"""

import platform
from dataclasses import dataclass
from pathlib import Path

CPU_KEY, SCHEME_KEY, CALIBRATION_KEY = "kdforge.int8_cpu", "kdforge.int8_scheme", "kdforge.calibration"
FLOAT_KEY = "kdforge.float_layers"  # the node names left in float, space-separated
CALIBRATORS = ("minmax", "percentile", "entropy")  # ONNX Runtime's calibration methods, by their config names


@dataclass(frozen=True)
class IntegerScheme:
    """How ONNX Runtime's quantizer writes Q/DQ for one kind of CPU (or for TensorRT)."""

    target: str
    activations: str  # "uint8" or "int8"
    weights: str
    reduce_range: bool  # 7-bit weights
    activation_symmetric: bool
    why: str

    @property
    def name(self) -> str:
        pairing = "".join("U8" if kind == "uint8" else "S8" for kind in (self.activations, self.weights))
        return pairing + (", 7-bit weights" if self.reduce_range else "") + (", symmetric activations" if self.activation_symmetric else "")


_VNNI = IntegerScheme("x86-vnni", "uint8", "int8", False, False, "VNNI's VPDPBUSD sums u8 x s8 products in int32 without saturation")
_AVX2_7BIT = IntegerScheme("x86-avx2", "uint8", "int8", True, False,
                           "without VNNI, VPMADDUBSW's int16 pair sums saturate at 8-bit weights; 7-bit weights keep them "
                           "exact on the same kernels")
_AVX2_U8U8 = IntegerScheme("x86-avx2", "uint8", "uint8", False, False,
                           "8-bit weights without saturation: ONNX Runtime widens u8 x u8 products to int16 before its "
                           "pair sums (slower kernels than U8S8)")
_ARM = IntegerScheme("arm64", "int8", "int8", False, False,
                     "S8S8 QDQ, ONNX Runtime's first choice on ARM64: its widening kernels accumulate without saturation")
_ARM_DOT = IntegerScheme("arm64-dotprod", "int8", "int8", False, False, "S8S8 QDQ, ONNX Runtime's first choice on ARM64: "
                         "SDOT accumulates in int32")
# Per target, the schemes that compute exactly on it, fastest first: the export takes the first
# that passes the INT8 gate (kdforge.export.int8_search). S8S8 is none of x86's: ONNX Runtime
# shifts int8 activations to uint8 for the same VPMADDUBSW kernels, which saturate without VNNI.
CANDIDATES = {"x86-vnni": (_VNNI,), "x86-avx2": (_AVX2_7BIT, _AVX2_U8U8), "arm64-dotprod": (_ARM_DOT,), "arm64": (_ARM,)}
SCHEMES = {target: schemes[0] for target, schemes in CANDIDATES.items()}
CPU_TARGETS = tuple(CANDIDATES)
TENSORRT = IntegerScheme("tensorrt", "int8", "int8", False, True, "TensorRT's explicit quantisation takes signed, symmetric Q/DQ only")

_VNNI_FLAGS = {"avx512_vnni", "avx_vnni", "amx_int8"}


def host_cpu(cpuinfo: str | None = None) -> str:
    """This machine's integer target, from the flags the kernel reports in /proc/cpuinfo."""
    machine = platform.machine().lower()
    if cpuinfo is None:  # the kernel's own file, not a user's
        cpuinfo = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    words = set(cpuinfo.lower().split())
    if machine in ("aarch64", "arm64") or "asimd" in words:
        return "arm64-dotprod" if "asimddp" in words else "arm64"
    return "x86-vnni" if words & _VNNI_FLAGS else "x86-avx2"


_SHOWN_FLAGS = ("avx2", "fma", "avx512f", "avx512bw", "avx512_vnni", "avx_vnni", "amx_int8", "asimd", "asimddp", "i8mm")


def instructions(cpuinfo: str | None = None) -> str:
    """This machine's integer-relevant instruction flags and the target they make, e.g.
    "avx2 fma: x86-avx2", for every reported figure to name its CPU by."""
    if cpuinfo is None:
        cpuinfo = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    words = set(cpuinfo.lower().split())
    return f"{' '.join(f for f in _SHOWN_FLAGS if f in words) or 'no flags read'}: {host_cpu(cpuinfo)}"


def target_of(setting: str) -> str:
    """The CPU target `export.int8_cpu` names ("auto": this machine's)."""
    return host_cpu() if setting == "auto" else setting


def scheme_for(setting: str) -> IntegerScheme:
    """The fastest scheme of `export.int8_cpu`'s target."""
    return SCHEMES[target_of(setting)]


def mark(path: Path, target: str, scheme: str, calibration: str, float_layers: tuple[str, ...] = ()) -> None:
    """Writes the integer target, scheme, calibration and the layers left in float into the ONNX
    file's metadata_props, in place."""
    import onnx

    from kdforge.atomic import atomic_path

    model = onnx.load(str(path))
    props = {p.key: p.value for p in model.metadata_props}
    props.update({CPU_KEY: target, SCHEME_KEY: scheme, CALIBRATION_KEY: calibration, FLOAT_KEY: " ".join(float_layers)})
    onnx.helper.set_model_props(model, props)
    with atomic_path(Path(path)) as tmp:
        onnx.save(model, str(tmp))


def targets(path: Path) -> dict:
    """What an INT8 file was made for beside this host: {"made_for", "scheme", "host", "note"}, the
    note one sentence where they differ (a file kdforge did not mark is taken as this host's)."""
    import onnx

    props = {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}
    made_for, host = props.get(CPU_KEY), host_cpu()
    note = None
    if made_for not in (None, "any", host):
        note = (f"{Path(path).name} is made for {made_for} ({props.get(SCHEME_KEY, '?')}) and this host is {host}: "
                f"verified as this host computes it, which can differ from what its target computes")
    return {"made_for": made_for, "scheme": props.get(SCHEME_KEY), "host": host, "note": note,
            "float_layers": props.get(FLOAT_KEY, "").split()}
