"""u2edge_network (Triton's Python backend, ``u2edge triton repo --python-network``): the network on
u2edge's own CPU backend (OpenVINO or ONNX Runtime), with the model and precision chosen when the
repository was written, as ``u2edge image`` runs them.

Copied into a repository by ``u2edge triton repo``; u2edge.triton.steps does the work.
"""

import json
from pathlib import Path

import triton_python_backend_utils as pb_utils

from u2edge.triton import steps


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        folder = Path(args["model_repository"]) / str(args["model_version"])
        self.engine = steps.open_network(folder, steps.parameters(config))
        self.input, self.output = config["input"][0]["name"], config["output"][0]["name"]

    def execute(self, requests):
        batches = [pb_utils.get_input_tensor_by_name(r, self.input).as_numpy() for r in requests]
        return [pb_utils.InferenceResponse([pb_utils.Tensor(self.output, out)])
                for out in steps.run_network(self.engine, batches)]

    def finalize(self):
        self.engine.close()
