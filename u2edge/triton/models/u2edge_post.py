"""u2edge_post (Triton's Python backend): NETWORK_OUTPUT and SIZE (h, w) -> MASK, float32 HxW in [0, 1].

Copied into a repository by ``u2edge triton repo``; u2edge.triton.steps does the work.
"""

import triton_python_backend_utils as pb_utils

from u2edge.errors import U2EdgeError
from u2edge.triton import steps
from u2edge.triton.repo import MASK, NETWORK_OUTPUT, SIZE


class TritonPythonModel:
    def execute(self, requests):
        responses = []
        for request in requests:
            output = pb_utils.get_input_tensor_by_name(request, NETWORK_OUTPUT).as_numpy()
            size = pb_utils.get_input_tensor_by_name(request, SIZE).as_numpy()
            try:
                mask = steps.frame_mask(output, size)
            except U2EdgeError as exc:
                responses.append(pb_utils.InferenceResponse(error=pb_utils.TritonError(str(exc))))
                continue
            responses.append(pb_utils.InferenceResponse([pb_utils.Tensor(MASK, mask)]))
        return responses
