"""How closely an exported artifact (reloaded) and its ONNX file give `predict`'s logits on the
300 embedded test digits, at batch 1, 5 and 300 (docs/export.md):

    PYTHONPATH=. python benchmarks/export_equality.py WORKDIR ARTIFACT ONNX_FILE
"""
import sys
import numpy as np
from sharesnet_jax import predict, serving, onnx_export
from sharesnet_jax.data import digits
workdir, artifact, onnx_path = sys.argv[1:4]
images, _ = digits.load_digit_splits()["test"]
reference = predict.load(workdir)
served = serving.load(artifact)
batch = np.stack([reference.preprocess(i) for i in images])
onnx = open(onnx_path, "rb").read()
for rows in (1, 5, 300):
    expected = reference.logits(images[:rows])
    print(f"batch {rows}: jax.export {np.abs(served.logits(batch[:rows]) - expected).max():.2g}, "
          f"ONNX {np.abs(onnx_export.run_onnx(onnx, batch[:rows]) - expected).max():.2g}")
