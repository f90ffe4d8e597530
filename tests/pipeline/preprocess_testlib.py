"""Helpers shared by the preprocessing tests."""
import numpy as np
from PIL import Image


def write_image_files(folder):
    """Valid files of every supported kind, and broken ones."""
    rng = np.random.default_rng(0)
    gray = rng.integers(0, 256, size=(20, 30), dtype=np.uint8)
    Image.fromarray(gray).save(folder / "gray8.png")
    Image.fromarray((gray.astype(np.uint16) * 257)).save(folder / "gray16.png")
    rgba = rng.integers(0, 256, size=(20, 30, 4), dtype=np.uint8)
    Image.fromarray(rgba, "RGBA").save(folder / "rgba.png")
    Image.fromarray(rgba[..., :3], "RGB").save(folder / "rgb.bmp")
    Image.fromarray(rgba[..., :3], "RGB").save(folder / "rgb.jpg", quality=95)
    Image.fromarray(gray).convert("P").save(folder / "palette.gif")
    (folder / "empty.png").write_bytes(b"")
    (folder / "notes.png").write_text("not an image")
    data = (folder / "gray8.png").read_bytes()
    (folder / "truncated.png").write_bytes(data[:len(data) // 2])
    return gray
