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
