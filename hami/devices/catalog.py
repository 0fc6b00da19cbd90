"""The built-in GPU catalog: every model we know, as data, each fact tagged with its provenance.

Sources are the tables of `shared/reference/mig-hardware-and-nvml.md` §A (A.2 constants, A.3 names
and PCI ids, A.4 profile tables, A.5 placements) and NVIDIA's open-gpu-kernel-modules product/PCI id
list. Tags follow `Provenance`: DOCUMENTED (NVIDIA docs, NVML header, NVIDIA's id list), OBSERVED
(`nvidia-smi` / NVML output from real hardware), INFERRED (derived by us; verify on hardware).

Per-profile tags: `MigProfile.provenance` is the tag of the row as a whole (name, slices, cap);
`MigProfile.field_provenance` overrides it per field where one value is weaker, e.g. an NVML
profile id or a `memory_mib` nobody has published. Per-model tags: `GpuModel.provenance` maps
"nvml_name", "pci_device_id", "memory_mib", "architecture", "compute_capability" and, for MIG parts,
"profiles" and "placements" to a tag.

Inference rules used below, so that a reader can redo them:
* memory_mib of a profile nobody printed = the printed profile of the same family scaled by memory
  slices (3g/4g = 2 × 2g, 7g = 4 × 2g); `+me` rows = their plain row.
* multiprocessors / engines of an unprinted row = the same row of the nearest printed sibling
  (A100-80GB from A100-40GB, H100 94/96GB and GH200-144GB from H100/H200).
* placements of parts whose `-lgipp` output is unpublished = the family's table (§A.5).
* card memory_mib nobody printed = a value from public `nvidia-smi` output we could not cite in the
  reference, tagged INFERRED.

Model keys (canonical, stable, used in logs and in `hami inspect`): A30, A100-SXM4-40GB,
A100-PCIE-40GB, A100-SXM4-80GB, A100-PCIE-80GB, A800-SXM4-40GB, A800-SXM4-80GB, A800-PCIE-80GB,
H100-SXM5-80GB, H100-PCIE-80GB, H100-NVL, H800-SXM5-80GB, H800-PCIE-80GB, H20, GH200-96GB,
GH200-144GB, H200-SXM, H200-NVL, B200, GB200, RTX-PRO-6000-SERVER, RTX-PRO-6000-WS,
RTX-PRO-6000-MAXQ (no edition is keyed plain "RTX-PRO-6000", so that config string selects all
three); not MIG-capable: A10, A10G, A40, T4, L4, L40, L40S, RTX-4090, V100-SXM2-16GB,
V100-SXM2-32GB, V100-PCIE-16GB, V100-PCIE-32GB.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace

from hami.devices.models import Architecture, GpuModel, MigProfile, MigSpec, Provenance

D = Provenance.DOCUMENTED
O = Provenance.OBSERVED  # noqa: E741 - reads like the reference's [O] tag
I = Provenance.INFERRED  # noqa: E741 - reads like the reference's [I] tag

# NVML_GPU_INSTANCE_PROFILE_* index constants (reference §A.2). The value is what
# nvmlDeviceGetGpuInstanceProfileInfo takes; the per-device id it returns is `profile_id`.
GI_1_SLICE = 0x0
GI_2_SLICE = 0x1
GI_3_SLICE = 0x2
GI_4_SLICE = 0x3
GI_7_SLICE = 0x4
GI_8_SLICE = 0x5
GI_6_SLICE = 0x6
GI_1_SLICE_REV1 = 0x7  # +me
GI_2_SLICE_REV1 = 0x8  # +me
GI_1_SLICE_REV2 = 0x9  # twice the memory of 1_SLICE
GI_1_SLICE_GFX = 0xA
GI_2_SLICE_GFX = 0xB
GI_4_SLICE_GFX = 0xC
GI_1_SLICE_NO_ME = 0xD
GI_2_SLICE_NO_ME = 0xE
GI_1_SLICE_ALL_ME = 0xF
GI_2_SLICE_ALL_ME = 0x10
GI_3_SLICE_GFX = 0x11
GI_PROFILE_COUNT = 0x12

# Legal start memory slices (reference §A.5).
S8_1G = (0, 1, 2, 3, 4, 5, 6)  # slice 7 is reachable only by 1g-double, 3g and 7g
S8_1G_DOUBLE = (0, 2, 4, 6)
S8_2G = (0, 2, 4)
S8_3G = (0, 4)
S8_4G = (0,)
S8_7G = (0,)
S4_1G = (0, 1, 2, 3)
S4_2G = (0, 2)
S4_4G = (0,)

_GUESS_FIELDS = {
    "id": ("profile_id",),
    "mib": ("memory_mib",),
    "sm": ("multiprocessors",),
    "eng": ("copy_engines", "decoders", "encoders", "jpegs", "ofas"),
    "place": ("placements",),
}


def _p(
    name: str,
    const: int,
    pid: int,
    g: int,
    mem: int,
    cap: int,
    mib: int,
    sm: int,
    starts: tuple[int, ...],
    eng: tuple[int, int, int, int, int],
    prov: Provenance = O,
    guess: str = "",
) -> MigProfile:
    """One profile row. `eng` = (copy engines, decoders, encoders, JPEG, OFA); `guess` names the
    fields that are INFERRED although the row is `prov` ("id mib sm eng place")."""
    ce, dec, enc, jpeg, ofa = eng
    inferred = {f: I for word in guess.split() for f in _GUESS_FIELDS[word]}
    return MigProfile(
        name=name,
        nvml_constant=const,
        profile_id=pid,
        compute_slices=g,
        memory_slices=mem,
        instance_cap=cap,
        memory_mib=mib,
        multiprocessors=sm,
        placements=starts,
        provenance=prov,
        copy_engines=ce,
        decoders=dec,
        encoders=enc,
        jpegs=jpeg,
        ofas=ofa,
        field_provenance=inferred,
    )


def _spec8(*rows: MigProfile, placements_inferred: bool = False) -> MigSpec:
    """A 7-compute / 8-memory-slice part (A100 and everything after it except the 4-slice ones)."""
    if placements_inferred:
        rows = tuple(replace(r, field_provenance={**r.field_provenance, "placements": I}) for r in rows)
    return MigSpec(memory_slices=8, compute_slices=7, max_instances=7, profiles=tuple(rows))


def _spec4(*rows: MigProfile, placements_inferred: bool = False) -> MigSpec:
    """A 4-compute / 4-memory-slice part (A30, RTX PRO 6000 Blackwell)."""
    if placements_inferred:
        rows = tuple(replace(r, field_provenance={**r.field_provenance, "placements": I}) for r in rows)
    return MigSpec(memory_slices=4, compute_slices=4, max_instances=4, profiles=tuple(rows))


# ----------------------------------------------------------------------------------------------
# MIG profile tables (reference §A.4). Row order = nvidia-smi's -lgip order: compute slices
# ascending, plain before its variants, single- before double-memory 1g.

A30_SPEC = _spec4(
    _p("1g.6gb", GI_1_SLICE, 14, 1, 1, 4, 5952, 14, S4_1G, (1, 0, 0, 0, 0)),
    _p("1g.6gb+me", GI_1_SLICE_REV1, 21, 1, 1, 1, 5952, 14, S4_1G, (1, 1, 0, 1, 1)),
    _p("2g.12gb", GI_2_SLICE, 5, 2, 2, 2, 11968, 28, S4_2G, (2, 2, 0, 0, 0)),
    _p("2g.12gb+me", GI_2_SLICE_REV1, 6, 2, 2, 1, 11968, 28, S4_2G, (2, 2, 0, 1, 1)),
    _p("4g.24gb", GI_4_SLICE, 0, 4, 4, 1, 24000, 56, S4_4G, (4, 4, 0, 1, 1)),
)

A100_40GB_SPEC = _spec8(
    _p("1g.5gb", GI_1_SLICE, 19, 1, 1, 7, 4864, 14, S8_1G, (1, 0, 0, 0, 0)),
    _p("1g.5gb+me", GI_1_SLICE_REV1, 20, 1, 1, 1, 4864, 14, S8_1G, (1, 1, 0, 1, 1)),
    _p("1g.10gb", GI_1_SLICE_REV2, 15, 1, 2, 4, 9856, 14, S8_1G_DOUBLE, (1, 1, 0, 0, 0)),
    _p("2g.10gb", GI_2_SLICE, 14, 2, 2, 3, 9856, 28, S8_2G, (2, 1, 0, 0, 0)),
    _p("3g.20gb", GI_3_SLICE, 9, 3, 4, 2, 19968, 42, S8_3G, (3, 2, 0, 0, 0)),
    _p("4g.20gb", GI_4_SLICE, 5, 4, 4, 1, 19968, 56, S8_4G, (4, 2, 0, 0, 0)),
    _p("7g.40gb", GI_7_SLICE, 0, 7, 8, 1, 40192, 98, S8_7G, (7, 5, 0, 1, 1)),
)

# Names documented; MiB from one observed lgip (older driver); engines as on the 40GB part.
A100_80GB_SPEC = _spec8(
    _p("1g.10gb", GI_1_SLICE, 19, 1, 1, 7, 9728, 14, S8_1G, (1, 0, 0, 0, 0), guess="eng"),
    _p("1g.10gb+me", GI_1_SLICE_REV1, 20, 1, 1, 1, 9728, 14, S8_1G, (1, 1, 0, 1, 1), guess="mib eng"),
    _p("1g.20gb", GI_1_SLICE_REV2, 15, 1, 2, 4, 19968, 14, S8_1G_DOUBLE, (1, 1, 0, 0, 0), guess="mib sm eng"),
    _p("2g.20gb", GI_2_SLICE, 14, 2, 2, 3, 19968, 28, S8_2G, (2, 1, 0, 0, 0), guess="eng"),
    _p("3g.40gb", GI_3_SLICE, 9, 3, 4, 2, 40192, 42, S8_3G, (3, 2, 0, 0, 0), guess="eng"),
    _p("4g.40gb", GI_4_SLICE, 5, 4, 4, 1, 40192, 56, S8_4G, (4, 2, 0, 0, 0), guess="eng"),
    _p("7g.80gb", GI_7_SLICE, 0, 7, 8, 1, 80640, 98, S8_7G, (7, 5, 0, 1, 1), guess="eng"),
)

# First of the two published drivers' values.
H100_80GB_SPEC = _spec8(
    _p("1g.10gb", GI_1_SLICE, 19, 1, 1, 7, 9984, 16, S8_1G, (1, 1, 0, 1, 0)),
    _p("1g.10gb+me", GI_1_SLICE_REV1, 20, 1, 1, 1, 9984, 16, S8_1G, (1, 1, 0, 1, 1)),
    _p("1g.20gb", GI_1_SLICE_REV2, 15, 1, 2, 4, 20096, 26, S8_1G_DOUBLE, (1, 1, 0, 1, 0)),
    _p("2g.20gb", GI_2_SLICE, 14, 2, 2, 3, 20096, 32, S8_2G, (2, 2, 0, 2, 0)),
    _p("3g.40gb", GI_3_SLICE, 9, 3, 4, 2, 40448, 60, S8_3G, (3, 3, 0, 3, 0)),
    _p("4g.40gb", GI_4_SLICE, 5, 4, 4, 1, 40448, 64, S8_4G, (4, 4, 0, 4, 0)),
    _p("7g.80gb", GI_7_SLICE, 0, 7, 8, 1, 81152, 132, S8_7G, (8, 7, 0, 7, 1)),
)

# H100 NVL (94GB): MiB and SMs observed; engines of the smaller rows as on H100 80GB.
H100_94GB_SPEC = _spec8(
    _p("1g.12gb", GI_1_SLICE, 19, 1, 1, 7, 11008, 16, S8_1G, (1, 1, 0, 1, 0), guess="eng"),
    _p("1g.12gb+me", GI_1_SLICE_REV1, 20, 1, 1, 1, 11008, 16, S8_1G, (1, 1, 0, 1, 1), guess="mib sm eng"),
    _p("1g.24gb", GI_1_SLICE_REV2, 15, 1, 2, 4, 22144, 26, S8_1G_DOUBLE, (1, 1, 0, 1, 0), guess="eng"),
    _p("2g.24gb", GI_2_SLICE, 14, 2, 2, 3, 22144, 32, S8_2G, (2, 2, 0, 2, 0), guess="eng"),
    _p("3g.47gb", GI_3_SLICE, 9, 3, 4, 2, 47488, 60, S8_3G, (3, 3, 0, 3, 0), guess="eng"),
    _p("4g.47gb", GI_4_SLICE, 5, 4, 4, 1, 47488, 64, S8_4G, (4, 4, 0, 4, 0), guess="eng"),
    _p("7g.94gb", GI_7_SLICE, 0, 7, 8, 1, 95360, 132, S8_7G, (8, 7, 0, 7, 1)),
)

# "H100 96GB" (H20, GH200 96GB): names and caps documented; ids, MiB (≈ the NVL's × 96/94,
# rounded to 128 MiB), SMs and engines inferred from the H100 NVL.
H100_96GB_SPEC = _spec8(
    _p("1g.12gb", GI_1_SLICE, 19, 1, 1, 7, 11264, 16, S8_1G, (1, 1, 0, 1, 0), D, "id mib sm eng"),
    _p("1g.12gb+me", GI_1_SLICE_REV1, 20, 1, 1, 1, 11264, 16, S8_1G, (1, 1, 0, 1, 1), D, "id mib sm eng"),
    _p("1g.24gb", GI_1_SLICE_REV2, 15, 1, 2, 4, 22656, 26, S8_1G_DOUBLE, (1, 1, 0, 1, 0), D, "id mib sm eng"),
    _p("2g.24gb", GI_2_SLICE, 14, 2, 2, 3, 22656, 32, S8_2G, (2, 2, 0, 2, 0), D, "id mib sm eng"),
    _p("3g.48gb", GI_3_SLICE, 9, 3, 4, 2, 48512, 60, S8_3G, (3, 3, 0, 3, 0), D, "id mib sm eng"),
    _p("4g.48gb", GI_4_SLICE, 5, 4, 4, 1, 48512, 64, S8_4G, (4, 4, 0, 4, 0), D, "id mib sm eng"),
    _p("7g.96gb", GI_7_SLICE, 0, 7, 8, 1, 97408, 132, S8_7G, (8, 7, 0, 7, 1), D, "id mib sm eng"),
    placements_inferred=True,
)

# H200 / H200 NVL: lgip observed (mig-parted #120), engines documented, placements inferred.
H200_SPEC = _spec8(
    _p("1g.18gb", GI_1_SLICE, 19, 1, 1, 7, 16384, 16, S8_1G, (1, 1, 0, 1, 0)),
    _p("1g.18gb+me", GI_1_SLICE_REV1, 20, 1, 1, 1, 16384, 16, S8_1G, (1, 1, 0, 1, 1)),
    _p("1g.35gb", GI_1_SLICE_REV2, 15, 1, 2, 4, 33024, 26, S8_1G_DOUBLE, (1, 1, 0, 1, 0)),
    _p("2g.35gb", GI_2_SLICE, 14, 2, 2, 3, 33024, 32, S8_2G, (2, 2, 0, 2, 0)),
    _p("3g.71gb", GI_3_SLICE, 9, 3, 4, 2, 71168, 60, S8_3G, (3, 3, 0, 3, 0)),
    _p("4g.71gb", GI_4_SLICE, 5, 4, 4, 1, 71168, 64, S8_4G, (4, 4, 0, 4, 0)),
    _p("7g.141gb", GI_7_SLICE, 0, 7, 8, 1, 143104, 132, S8_7G, (8, 7, 0, 7, 1)),
    placements_inferred=True,
)

# GH200 144GB HBM3e: the small rows observed (mig-parted #139); the rest scaled from 2g.
GH200_144GB_SPEC = _spec8(
    _p("1g.18gb", GI_1_SLICE, 19, 1, 1, 7, 17920, 16, S8_1G, (1, 1, 0, 1, 0), guess="eng"),
    _p("1g.18gb+me", GI_1_SLICE_REV1, 20, 1, 1, 1, 17920, 16, S8_1G, (1, 1, 0, 1, 1), guess="mib sm eng"),
    _p("1g.36gb", GI_1_SLICE_REV2, 15, 1, 2, 4, 36096, 26, S8_1G_DOUBLE, (1, 1, 0, 1, 0), guess="eng"),
    _p("2g.36gb", GI_2_SLICE, 14, 2, 2, 3, 36096, 32, S8_2G, (2, 2, 0, 2, 0), guess="eng"),
    _p("3g.72gb", GI_3_SLICE, 9, 3, 4, 2, 72192, 60, S8_3G, (3, 3, 0, 3, 0), guess="id mib sm eng"),
    _p("4g.72gb", GI_4_SLICE, 5, 4, 4, 1, 72192, 64, S8_4G, (4, 4, 0, 4, 0), guess="id mib sm eng"),
    _p("7g.144gb", GI_7_SLICE, 0, 7, 8, 1, 144384, 132, S8_7G, (8, 7, 0, 7, 1), guess="id mib sm eng"),
    placements_inferred=True,
)

# B200: table documented (MIG guide), small rows' lgip observed (Jan-2025 driver).
B200_SPEC = _spec8(
    _p("1g.23gb", GI_1_SLICE, 19, 1, 1, 7, 22528, 18, S8_1G, (2, 1, 0, 1, 0)),
    _p("1g.23gb+me", GI_1_SLICE_REV1, 20, 1, 1, 1, 22528, 18, S8_1G, (2, 1, 0, 1, 1)),
    _p("1g.45gb", GI_1_SLICE_REV2, 15, 1, 2, 4, 45312, 30, S8_1G_DOUBLE, (2, 1, 0, 1, 0)),
    _p("2g.45gb", GI_2_SLICE, 14, 2, 2, 3, 45312, 36, S8_2G, (3, 1, 0, 1, 0)),
    _p("3g.90gb", GI_3_SLICE, 9, 3, 4, 2, 90624, 66, S8_3G, (6, 1, 0, 1, 0), D, "id mib sm"),
    _p("4g.90gb", GI_4_SLICE, 5, 4, 4, 1, 90624, 72, S8_4G, (8, 1, 0, 1, 0), D, "id mib sm"),
    _p("7g.180gb", GI_7_SLICE, 0, 7, 8, 1, 181248, 148, S8_7G, (16, 1, 0, 1, 1), D, "id mib sm"),
    placements_inferred=True,
)

# GB200: names/caps from mig-parted's config, small rows' lgip observed. Some boards name the
# profiles differently (1g.24gb, 7g.189gb; mig-parted #227): config aliases absorb that.
GB200_SPEC = _spec8(
    _p("1g.23gb", GI_1_SLICE, 19, 1, 1, 7, 22528, 18, S8_1G, (2, 1, 0, 1, 0), guess="eng"),
    _p("1g.23gb+me", GI_1_SLICE_REV1, 20, 1, 1, 1, 22528, 18, S8_1G, (2, 1, 0, 1, 1), guess="mib sm eng"),
    _p("1g.47gb", GI_1_SLICE_REV2, 15, 1, 2, 4, 46592, 32, S8_1G_DOUBLE, (2, 1, 0, 1, 0), guess="eng"),
    _p("2g.47gb", GI_2_SLICE, 14, 2, 2, 3, 46592, 38, S8_2G, (4, 1, 0, 1, 0), guess="eng"),
    _p("3g.93gb", GI_3_SLICE, 9, 3, 4, 2, 93184, 72, S8_3G, (6, 1, 0, 1, 0), guess="mib sm eng"),
    _p("4g.93gb", GI_4_SLICE, 5, 4, 4, 1, 93184, 76, S8_4G, (8, 1, 0, 1, 0), guess="mib sm eng"),
    _p("7g.186gb", GI_7_SLICE, 0, 7, 8, 1, 186368, 148, S8_7G, (16, 1, 0, 1, 1), guess="mib sm eng"),
    placements_inferred=True,
)

# RTX PRO 6000 Blackwell (all editions): table documented, 1g ids and MiB observed. The 2g/4g
# ids were never published: plain 2g/4g take A30's ids (the 1g ids match A30's), the variants
# take unused placeholder ids. Memory of 2g/4g = 2×/4× the 1g row. SMs: 46 per slice.
RTX_PRO_6000_SPEC = _spec4(
    _p("1g.24gb", GI_1_SLICE, 14, 1, 1, 4, 24192, 46, S4_1G, (1, 1, 1, 1, 0), D),
    _p("1g.24gb+me", GI_1_SLICE_REV1, 21, 1, 1, 1, 24192, 46, S4_1G, (1, 1, 1, 1, 1), D),
    _p("1g.24gb+gfx", GI_1_SLICE_GFX, 47, 1, 1, 4, 24192, 46, S4_1G, (1, 1, 1, 1, 0), D),
    _p("1g.24gb+me.all", GI_1_SLICE_ALL_ME, 65, 1, 1, 1, 24192, 46, S4_1G, (1, 4, 4, 4, 1), D),
    _p("1g.24gb-me", GI_1_SLICE_NO_ME, 67, 1, 1, 4, 24192, 46, S4_1G, (1, 0, 0, 0, 0), D),
    _p("2g.48gb", GI_2_SLICE, 5, 2, 2, 2, 48384, 92, S4_2G, (2, 2, 2, 2, 0), D, "id mib sm"),
    _p("2g.48gb+gfx", GI_2_SLICE_GFX, 48, 2, 2, 2, 48384, 92, S4_2G, (2, 2, 2, 2, 0), D, "id mib sm"),
    _p("2g.48gb+me.all", GI_2_SLICE_ALL_ME, 66, 2, 2, 1, 48384, 92, S4_2G, (2, 4, 4, 4, 1), D, "id mib sm"),
    _p("2g.48gb-me", GI_2_SLICE_NO_ME, 68, 2, 2, 2, 48384, 92, S4_2G, (2, 0, 0, 0, 0), D, "id mib sm"),
    _p("4g.96gb", GI_4_SLICE, 0, 4, 4, 1, 96768, 188, S4_4G, (4, 4, 4, 4, 1), D, "id mib sm"),
    _p("4g.96gb+gfx", GI_4_SLICE_GFX, 49, 4, 4, 1, 96768, 188, S4_4G, (4, 4, 4, 4, 1), D, "id mib sm"),
    placements_inferred=True,
)


# ----------------------------------------------------------------------------------------------
# Models.


_STRENGTH = (I, O, D)  # weakest first: min() over a model's rows gives its weakest tag


def _model(
    key: str,
    nvml_name: str,
    memory_mib: int,
    arch: Architecture,
    cc: tuple[int, int],
    pci_device: int,
    mig: MigSpec | None = None,
    aliases: Iterable[str] = (),
    /,
    **prov: Provenance,
) -> GpuModel:
    """A catalog entry. `pci_device` is the 16-bit device id; `prov` overrides the default tags
    (name and PCI id DOCUMENTED from NVIDIA's id list, memory INFERRED, arch/CC DOCUMENTED)."""
    tags: dict[str, Provenance] = {
        "nvml_name": D,
        "pci_device_id": D,
        "memory_mib": I,
        "architecture": D,
        "compute_capability": D,
    }
    if mig is not None:
        placements_weak = any(p.provenance_of("placements") is I for p in mig.profiles)
        tags["profiles"] = min((p.provenance for p in mig.profiles), key=_STRENGTH.index)
        tags["placements"] = I if placements_weak else O
    tags.update(prov)
    return GpuModel(
        key=key,
        nvml_name=nvml_name,
        memory_mib=memory_mib,
        architecture=arch,
        compute_capability=cc,
        pci_device_id=(pci_device << 16) | 0x10DE,
        mig=mig,
        aliases=tuple(aliases),
        provenance=tags,
    )


AMP, HOP, BW = Architecture.AMPERE, Architecture.HOPPER, Architecture.BLACKWELL

# fmt: off
# Columns: key, NVML name, total MiB (MIG off), architecture, compute capability, PCI device id,
# MIG spec, config aliases, then per-fact provenance overrides.
MIG_MODELS: tuple[GpuModel, ...] = (
    _model("A30", "NVIDIA A30", 24576, AMP, (8, 0), 0x20B7, A30_SPEC, ("A30-24GB",), nvml_name=O),
    _model("A100-SXM4-40GB", "NVIDIA A100-SXM4-40GB", 40537, AMP, (8, 0), 0x20B0, A100_40GB_SPEC,
           ("A100-40GB-SXM4", "A100-SXM-40GB"), nvml_name=O, memory_mib=O),
    _model("A100-PCIE-40GB", "NVIDIA A100-PCIE-40GB", 40537, AMP, (8, 0), 0x20F1, A100_40GB_SPEC,
           ("A100-40GB-PCIe",)),
    _model("A100-SXM4-80GB", "NVIDIA A100-SXM4-80GB", 81920, AMP, (8, 0), 0x20B2, A100_80GB_SPEC,
           ("A100-80GB-SXM4", "A100-SXM-80GB"), nvml_name=O),
    _model("A100-PCIE-80GB", "NVIDIA A100 80GB PCIe", 81920, AMP, (8, 0), 0x20B5, A100_80GB_SPEC,
           ("A100-80GB-PCIe",), nvml_name=O),
    # A800: export variants of the A100 (same chip); MIG tables assumed identical.
    _model("A800-SXM4-40GB", "NVIDIA A800-SXM4-40GB", 40537, AMP, (8, 0), 0x20BD, A100_40GB_SPEC,
           (), profiles=I, placements=I),
    _model("A800-SXM4-80GB", "NVIDIA A800-SXM4-80GB", 81920, AMP, (8, 0), 0x20F3, A100_80GB_SPEC,
           (), profiles=I, placements=I, memory_mib=O),
    _model("A800-PCIE-80GB", "NVIDIA A800 80GB PCIe", 81920, AMP, (8, 0), 0x20F5, A100_80GB_SPEC,
           ("A800-80GB-PCIe",), profiles=I, placements=I),
    _model("H100-SXM5-80GB", "NVIDIA H100 80GB HBM3", 81559, HOP, (9, 0), 0x2330, H100_80GB_SPEC,
           ("H100-SXM5", "H100-SXM", "H100-80GB-SXM5"), nvml_name=O, memory_mib=O),
    _model("H100-PCIE-80GB", "NVIDIA H100 PCIe", 81559, HOP, (9, 0), 0x2331, H100_80GB_SPEC,
           ("H100-80GB-PCIe",), nvml_name=O),
    # The 94GB SXM5/PCIe boards share the NVL's profile set; HAMi's chart calls them H100-*-94GB.
    _model("H100-NVL", "NVIDIA H100 NVL", 95830, HOP, (9, 0), 0x2321, H100_94GB_SPEC,
           ("H100-NVL-94GB", "H100-94GB", "H100-SXM5-94GB", "H100-PCIE-94GB"), nvml_name=O, memory_mib=O),
    # H800: export variant of the H100 80GB; MIG tables assumed identical.
    _model("H800-SXM5-80GB", "NVIDIA H800", 81559, HOP, (9, 0), 0x2324, H100_80GB_SPEC,
           ("H800-SXM5", "H800-SXM"), profiles=I, placements=I),
    _model("H800-PCIE-80GB", "NVIDIA H800 PCIe", 81559, HOP, (9, 0), 0x2322, H100_80GB_SPEC,
           ("H800-80GB-PCIe",), profiles=I, placements=I),
    _model("H20", "NVIDIA H20", 97871, HOP, (9, 0), 0x2329, H100_96GB_SPEC, ("H20-96GB",)),
    # One chip, two board names (480GB / 120GB = the Grace memory), same PCI id, H100 96GB set.
    _model("GH200-96GB", "NVIDIA GH200 480GB", 97871, HOP, (9, 0), 0x2342, H100_96GB_SPEC,
           ("NVIDIA GH200 120GB", "GH200-480GB", "GH200-120GB", "H100-96GB"), nvml_name=O),
    _model("GH200-144GB", "NVIDIA GH200 144G HBM3e", 146831, HOP, (9, 0), 0x2348, GH200_144GB_SPEC,
           ("GH200-144G", "GH200-144G-HBM3e"), nvml_name=O, memory_mib=O),
    _model("H200-SXM", "NVIDIA H200", 143771, HOP, (9, 0), 0x2335, H200_SPEC,
           ("H200-SXM5", "H200-SXM5-141GB", "H200-SXM-141GB"), nvml_name=O),
    _model("H200-NVL", "NVIDIA H200 NVL", 143771, HOP, (9, 0), 0x233B, H200_SPEC,
           ("H200-NVL-141GB",), nvml_name=O, memory_mib=O),
    # B200 also ships as PCI device 0x2909 with the same name.
    _model("B200", "NVIDIA B200", 183359, BW, (10, 0), 0x2901, B200_SPEC, (), nvml_name=O),
    _model("GB200", "NVIDIA GB200", 189471, BW, (10, 0), 0x2941, GB200_SPEC, (), nvml_name=O),
    _model("RTX-PRO-6000-SERVER", "NVIDIA RTX PRO 6000 Blackwell Server Edition", 97887, BW, (12, 0),
           0x2BB5, RTX_PRO_6000_SPEC, ("RTX PRO 6000 Blackwell Server",)),
    _model("RTX-PRO-6000-WS", "NVIDIA RTX PRO 6000 Blackwell Workstation Edition", 97887, BW, (12, 0),
           0x2BB1, RTX_PRO_6000_SPEC, ("RTX-PRO-6000-Workstation",)),
    _model("RTX-PRO-6000-MAXQ", "NVIDIA RTX PRO 6000 Blackwell Max-Q Workstation Edition", 97887, BW,
           (12, 0), 0x2BB4, RTX_PRO_6000_SPEC, ("RTX-PRO-6000-Max-Q",)),
)

# Software-shared (hami-core) only. Memory as NVML reports it with MIG off, from public
# nvidia-smi output (INFERRED unless noted); V100 PCI ids are not in NVIDIA's open-module list.
AMPERE_CC86 = (8, 6)
ADA, TURING, VOLTA = Architecture.ADA, Architecture.TURING, Architecture.VOLTA
NON_MIG_MODELS: tuple[GpuModel, ...] = (
    _model("A10", "NVIDIA A10", 23028, AMP, AMPERE_CC86, 0x2236),
    _model("A10G", "NVIDIA A10G", 23028, AMP, AMPERE_CC86, 0x2237),
    _model("A40", "NVIDIA A40", 46068, AMP, AMPERE_CC86, 0x2235),
    _model("T4", "Tesla T4", 15360, TURING, (7, 5), 0x1EB8, None, (), memory_mib=O, pci_device_id=I),
    _model("L4", "NVIDIA L4", 23034, ADA, (8, 9), 0x27B8),
    _model("L40", "NVIDIA L40", 46068, ADA, (8, 9), 0x26B5),
    _model("L40S", "NVIDIA L40S", 46068, ADA, (8, 9), 0x26B9),
    _model("RTX-4090", "NVIDIA GeForce RTX 4090", 24564, ADA, (8, 9), 0x2684, None, ("RTX 4090",)),
    _model("V100-SXM2-16GB", "Tesla V100-SXM2-16GB", 16384, VOLTA, (7, 0), 0x1DB1, pci_device_id=I),
    _model("V100-SXM2-32GB", "Tesla V100-SXM2-32GB", 32768, VOLTA, (7, 0), 0x1DB5, pci_device_id=I),
    _model("V100-PCIE-16GB", "Tesla V100-PCIE-16GB", 16384, VOLTA, (7, 0), 0x1DB4, pci_device_id=I),
    _model("V100-PCIE-32GB", "Tesla V100-PCIE-32GB", 32768, VOLTA, (7, 0), 0x1DB6, pci_device_id=I),
)
# fmt: on

MODELS: tuple[GpuModel, ...] = MIG_MODELS + NON_MIG_MODELS
"""Every model of the built-in catalog, MIG-capable ones first, in a stable order."""

BY_KEY: dict[str, GpuModel] = {m.key: m for m in MODELS}
"""Models by canonical key."""
