"""LineGuard's edge runtime: a line's exported bundle (``lineguard export``) scored on the machine beside
the line with NumPy, Pillow and ONNX Runtime or OpenVINO; no torch, Ray or network.

    import lineguard_edge
    model = lineguard_edge.load("press-3.bundle")
    answer = model.predict(open("part.png", "rb").read())

The service builds on this package too: its errors, image decoding, decisions, heatmaps and reading
parser are the ones here, so a part gets the same answer on the camera PC as from the service.
"""

from lineguard_edge.model import EdgeModel, load

__all__ = ["EdgeModel", "load"]
