"""Width padding: narrow models train padded up, so jobs of different widths share a pack.

Narrow MLPs are all overhead and no arithmetic. They train padded to the next of
these widths; the padded units stay exactly zero (see ddsweep.models.mlp). The
padded width depends only on the job's own width and the kind of device, so a
job's numbers never depend on its pack-mates. A GPU is idle at these sizes: it
pads far more. (No torch here: the coordinator uses this to form packs.)
"""

PAD_WIDTHS = {"cpu": (32, 64, 128), "cuda": (512,)}


def padded_width(width: int, device: str = "cpu") -> int:
    """The width a job of this width trains at: the next pad width, or itself above them."""
    for w in PAD_WIDTHS["cuda" if str(device).startswith("cuda") else "cpu"]:
        if width <= w:
            return w
    return width


# Conv models (mcnn, preact_resnet18) pad a narrow member with channels whose weights and
# BatchNorm scale start at 0, so they stay exactly 0 (see ddsweep.models.conv), so that
# neighbouring widths share a pack. On a GPU a pack of 8 mcnns trains 7x (k <= 8) to 1.9x
# (k = 64) the samples/s of one (H100, bf16), far more than the at most (k+7)^2/k^2
# arithmetic that rounding up to a multiple of 8 adds. Not on a CPU, where a grouped
# convolution is slower per sample than a dense one (ddsweep.workers.packing).
CONV_PAD_WIDTHS = {"cpu": (), "cuda": tuple(range(8, 65, 8))}


def conv_padded_width(width: int, device: str = "cpu") -> int:
    """The width a conv job of this width trains at on this kind of device."""
    for w in CONV_PAD_WIDTHS["cuda" if str(device).startswith("cuda") else "cpu"]:
        if width <= w:
            return w
    return width
