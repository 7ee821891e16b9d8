"""Run a TF.js graph or layers model through TensorFlow.js itself (Node.js, CPU backend): the reference runtime
our TF.js ports are compared with. The runtime is fetched by ``facerestore models download --packages``
(:mod:`facerestore.zoo.runtimes`); without it, or without ``node``, :func:`require_runtime` skips the test."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import pytest

# Loads the model from its files into memory (no fetch), runs it on one float32 NHWC input and writes the output's
# float32 values. argv: model.json, input.bin, shape (JSON), input name, output name, out.bin. A graph model runs
# through tfjs-converter (``execute``, the named output); a layers model through tfjs-layers (``predict``), with the
# two custom layers of UpscalerJS's ESRGAN models declared from their Keras config: MultiplyBeta (``x * beta``)
# and PixelShuffle<r>x (TensorFlow's depth_to_space, NHWC). Everything else is TensorFlow.js's own layers.
_SCRIPT = r"""
const fs = require('fs');
const path = require('path');
const tf = require('@tensorflow/tfjs-core');
require('@tensorflow/tfjs-backend-cpu');
const converter = require('@tensorflow/tfjs-converter');
const tfl = require('@tensorflow/tfjs-layers');
class MultiplyBeta extends tfl.layers.Layer {
  constructor(config) { super(config); this.beta = config.beta; }
  call(inputs) { return tf.mul(Array.isArray(inputs) ? inputs[0] : inputs, this.beta); }
  getConfig() { return Object.assign({beta: this.beta}, super.getConfig()); }
  static get className() { return 'MultiplyBeta'; }
}
tf.serialization.registerClass(MultiplyBeta);
for (const r of [2, 3, 4, 8]) {
  const cls = class extends tfl.layers.Layer {
    computeOutputShape(s) { return [s[0], s[1] && s[1] * r, s[2] && s[2] * r, s[3] / (r * r)]; }
    call(inputs) { return tf.depthToSpace(Array.isArray(inputs) ? inputs[0] : inputs, r, 'NHWC'); }
    static get className() { return `PixelShuffle${r}x`; }
  };
  tf.serialization.registerClass(cls);
}
const [modelJson, inFile, shapeJson, inName, outName, outFile] = process.argv.slice(2);
const manifest = JSON.parse(fs.readFileSync(modelJson));
const dir = path.dirname(modelJson);
// the zoo's flat folder keeps each model's shards under its file's prefix ("x2-model.json": "x2-group1-...")
const prefix = path.basename(modelJson).replace(/model\.json$/, '');
const shard = p => fs.existsSync(path.join(dir, p)) ? path.join(dir, p) : path.join(dir, prefix + p);
const shards = manifest.weightsManifest.flatMap(g => g.paths.map(p => fs.readFileSync(shard(p))));
const data = Buffer.concat(shards);
const handler = {load: async () => ({
  modelTopology: manifest.modelTopology, format: manifest.format, generatedBy: manifest.generatedBy,
  convertedBy: manifest.convertedBy, weightSpecs: manifest.weightsManifest.flatMap(g => g.weights),
  weightData: data.buffer.slice(data.byteOffset, data.byteOffset + data.length)})};
(async () => {
  await tf.setBackend('cpu');
  const raw = fs.readFileSync(inFile);
  const x = tf.tensor(new Float32Array(raw.buffer, raw.byteOffset, raw.length / 4), JSON.parse(shapeJson));
  let y;
  if (manifest.format === 'layers-model') {
    y = (await tfl.loadLayersModel(handler)).predict(x);
  } else {
    y = (await converter.loadGraphModel(handler)).execute({[inName]: x}, outName);
  }
  fs.writeFileSync(outFile, Buffer.from((await y.data()).buffer));
  console.log(JSON.stringify({version: tf.version_core, shape: y.shape}));
})().catch(e => { console.error(String(e)); process.exit(1); });
"""


def require_runtime() -> Path:
    """The runtime's node_modules folder; skips the test when ``node`` or the fetched runtime is missing."""
    from facerestore.zoo.runtimes import tfjs_runtime_cached, tfjs_runtime_dir

    if shutil.which("node") is None:
        pytest.skip("the TF.js reference runtime needs Node.js (`node` is not on PATH)")
    modules = tfjs_runtime_dir()
    if not tfjs_runtime_cached():
        pytest.skip("the TensorFlow.js reference runtime is not in the cache: `facerestore models download --packages`")
    return modules


def run_model(model_json: Path, x: np.ndarray, input_name: str = "", output_name: str = ""
              ) -> tuple[np.ndarray, dict]:
    """TensorFlow.js's output for the NHWC float32 input ``x`` (a graph model's ``output_name`` fed at
    ``input_name``; a layers model's one output), and what it reported (its version, the output's shape)."""
    modules = require_runtime()
    x = np.ascontiguousarray(x, dtype="<f4")
    with tempfile.TemporaryDirectory() as tmp:
        script, inp, out = Path(tmp) / "run.js", Path(tmp) / "in.bin", Path(tmp) / "out.bin"
        script.write_text(_SCRIPT)
        x.tofile(inp)
        env = {**os.environ, "NODE_PATH": str(modules)}
        proc = subprocess.run(["node", str(script), str(model_json), str(inp), json.dumps(list(x.shape)), input_name,
                               output_name, str(out)], capture_output=True, text=True, timeout=300, env=env)
        assert proc.returncode == 0, proc.stderr[-2000:]
        info = json.loads(proc.stdout.strip().splitlines()[-1])
        return np.fromfile(out, "<f4").reshape(info["shape"]), info
