"""u2edge_pre (Triton's Python backend): FRAME, one HxWx3 uint8 BGR frame -> NETWORK_INPUT, SIZE (h, w).

Copied into a repository by ``u2edge triton repo``; u2edge.triton.steps does the work.
"""

import json

import triton_python_backend_utils as pb_utils

from u2edge.errors import U2EdgeError
from u2edge.triton import steps
from u2edge.triton.repo import FRAME, NETWORK_INPUT, SIZE


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        self.spec = steps.preprocessing(config)
        self.shape = steps.dims(config, "output", NETWORK_INPUT)

    def execute(self, requests):
        responses = []
        for request in requests:
            frame = pb_utils.get_input_tensor_by_name(request, FRAME).as_numpy()
            try:
                tensor, size = steps.network_input(frame, self.spec, self.shape)
            except U2EdgeError as exc:  # this request's frame; the others go on
                responses.append(pb_utils.InferenceResponse(error=pb_utils.TritonError(str(exc))))
                continue
            responses.append(pb_utils.InferenceResponse([pb_utils.Tensor(NETWORK_INPUT, tensor),
                                                         pb_utils.Tensor(SIZE, size)]))
        return responses
